// One load run with autocannon's programmatic API: N keep-alive connections, one request
// in flight per connection, for a bounded duration. autocannon's own latency histogram
// has whole-millisecond resolution, too coarse for sub-millisecond proxy overheads, so
// every response's float duration (from its 'response' event, hrtime based) is kept
// and the percentiles are computed here. Every body is checked, every failure counted.
import { appendFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/**
 * CN2_BENCH_SLOW_LOG=FILE: every answer slower than CN2_BENCH_SLOW_MS (100) appends
 * "<epoch ms> <latency ms> <concurrency>" to FILE, to line tail latency up with a
 * `perf record -k CLOCK_REALTIME` of workerd (docs/bench.md, "Where the p99 goes").
 */
const slowLog = process.env.CN2_BENCH_SLOW_LOG ? { file: process.env.CN2_BENCH_SLOW_LOG, overMs: Number(process.env.CN2_BENCH_SLOW_MS ?? 100) } : null;

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
  /** POST unless said otherwise. */
  method?: "GET" | "POST";
  /** Answers locally (no upstream call): no "added" figure against the direct upstream. */
  local?: boolean;
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
  /** Every 2xx latency, sorted (ms). */
  latencies: Float64Array;
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
        method: target.method ?? "POST",
        headers: target.headers,
        ...(target.method === "GET" ? {} : { body: target.body }),
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
        const statuses: Record<string, number> = {};
        for (const [code, { count }] of Object.entries(r.statusCodeStats)) statuses[code] = count;
        // Mismatched 2xx answers are not "ok"; a non-2xx answer is both non2xx and a mismatch.
        const badTwoXx = Math.max(0, r.mismatches - r.non2xx);
        resolve(
          finish({
            concurrency,
            seconds: r.duration,
            ok: Math.max(0, latencies.length - badTwoXx),
            non2xx: r.non2xx,
            errors: r.errors,
            timeouts: r.timeouts,
            mismatches: r.mismatches,
            statuses,
            samples,
            latencies: Float64Array.from(latencies).sort(),
          }),
        );
      },
    );
    instance.on("response", (_client, status, _bytes, ms) => {
      if (status >= 200 && status < 300) latencies.push(ms);
      if (slowLog && ms > slowLog.overMs) appendFileSync(slowLog.file, `${Date.now()} ${ms.toFixed(1)} ${concurrency}\n`);
    });
    instance.on("reqError", (err) => sample(`error: ${err.message}`));
  });
}

type Counts = Omit<RunStats, "p50" | "p90" | "p99" | "mean" | "rps">;

function finish(c: Counts): RunStats {
  let sum = 0;
  for (const x of c.latencies) sum += x;
  return {
    ...c,
    p50: percentile(c.latencies, 50),
    p90: percentile(c.latencies, 90),
    p99: percentile(c.latencies, 99),
    mean: c.latencies.length ? sum / c.latencies.length : NaN,
    rps: c.ok / c.seconds,
  };
}

/** Several rounds of the same system and concurrency as one result (latencies pooled). */
export function merge(runs: RunStats[]): RunStats {
  const statuses: Record<string, number> = {};
  for (const r of runs) for (const [code, n] of Object.entries(r.statuses)) statuses[code] = (statuses[code] ?? 0) + n;
  const all = new Float64Array(runs.reduce((n, r) => n + r.latencies.length, 0));
  let at = 0;
  for (const r of runs) {
    all.set(r.latencies, at);
    at += r.latencies.length;
  }
  const sum = (f: (r: RunStats) => number) => runs.reduce((n, r) => n + f(r), 0);
  return finish({
    concurrency: runs[0]!.concurrency,
    seconds: sum((r) => r.seconds),
    ok: sum((r) => r.ok),
    non2xx: sum((r) => r.non2xx),
    errors: sum((r) => r.errors),
    timeouts: sum((r) => r.timeouts),
    mismatches: sum((r) => r.mismatches),
    statuses,
    samples: runs.flatMap((r) => r.samples).slice(0, 5),
    latencies: all.sort(),
  });
}

/** Failed requests: non-2xx answers, transport errors, 2xx answers with a wrong body. */
export const failures = (s: RunStats) => s.non2xx + s.errors + Math.max(0, s.mismatches - s.non2xx);
