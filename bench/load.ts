// One load run with autocannon's programmatic API: N keep-alive connections, one request
// in flight per connection, for a bounded duration. autocannon's own latency histogram
// has whole-millisecond resolution, too coarse for sub-millisecond proxy overheads, so
// every response's float duration (from its 'response' event, hrtime based) is kept
// and the percentiles are computed here. Every body is checked, every failure counted.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  mismatches: number;
  non2xx: number;
  statusCodeStats: Record<string, { count: number }>;
}
interface AutocannonInstance {
  on(event: "response", fn: (client: unknown, status: number, bytes: number, ms: number) => void): void;
  on(event: "reqError", fn: (err: Error) => void): void;
  on(event: "done", fn: (r: AutocannonResult) => void): void;
  stop(): void;
}
type Autocannon = (opts: Record<string, unknown>, cb: (err: Error | null, r: AutocannonResult) => void) => AutocannonInstance;
const autocannon = require("autocannon") as Autocannon;

export interface Target {
  url: string;
  headers: Record<string, string>;
  body: string;
  /** Whether a response body is the right answer. */
  verify: (body: string) => boolean;
}

export interface RunStats {
  concurrency: number;
  seconds: number;
  /** Responses with a 2xx status and a verified body. */
  ok: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  rps: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  mismatches: number;
  statuses: Record<string, number>;
  /** A few failing bodies / error messages, for the report. */
  samples: string[];
}

export function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function load(target: Target, concurrency: number, seconds: number): Promise<RunStats> {
  const latencies: number[] = [];
  const samples: string[] = [];
  const sample = (s: string) => {
    if (samples.length < 5) samples.push(s.slice(0, 300));
  };
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: target.url,
        method: "POST",
        headers: target.headers,
        body: target.body,
        connections: concurrency,
        pipelining: 1,
        duration: seconds,
        timeout: 10,
        // Counted as mismatches; non-2xx bodies fail here too.
        verifyBody: (body: string) => {
          const good = target.verify(body);
          if (!good) sample(`body: ${body}`);
          return good;
        },
      },
      (err, r) => {
        if (err) return reject(err);
        const sorted = Float64Array.from(latencies).sort();
        const sum = latencies.reduce((a, b) => a + b, 0);
        const statuses: Record<string, number> = {};
        for (const [code, { count }] of Object.entries(r.statusCodeStats)) statuses[code] = count;
        // Mismatched 2xx answers are not "ok"; a non-2xx answer is both non2xx and a mismatch.
        const badTwoXx = Math.max(0, r.mismatches - r.non2xx);
        const ok = Math.max(0, latencies.length - badTwoXx);
        resolve({
          concurrency,
          seconds: r.duration,
          ok,
          p50: percentile(sorted, 50),
          p90: percentile(sorted, 90),
          p99: percentile(sorted, 99),
          mean: latencies.length ? sum / latencies.length : NaN,
          rps: ok / r.duration,
          non2xx: r.non2xx,
          errors: r.errors,
          timeouts: r.timeouts,
          mismatches: r.mismatches,
          statuses,
          samples,
        });
      },
    );
    instance.on("response", (_client, status, _bytes, ms) => {
      if (status >= 200 && status < 300) latencies.push(ms);
    });
    instance.on("reqError", (err) => sample(`error: ${err.message}`));
  });
}

export const failures = (s: RunStats) => s.non2xx + s.errors + s.mismatches;
