// The paid path as buyers meet it (issue 14): paying clients in child processes
// (bench/paid-client.ts), so their signing and HTTP client run outside this process's event
// loop. Each request is the whole MPP exchange as `createPayingFetch` does it: the
// challenge handed out with the previous answer (or the 402 round trip for the first), a
// signed credit credential, verification, the wallet's atomic claim + debit, the answer.
// The same clients run unpaid (the proxy token instead of a payment) for a like-for-like
// baseline: the same HTTP client, processes and loops, only the payment differs.
import { join } from "node:path";
import { generateBuyerKey, requestFaucet, serializeBuyerKey } from "../buyer/index.ts";
import { percentile } from "./load.ts";
import { descendantCpuMs, spawnNode } from "./processes.ts";
import type { ClientResult, Job } from "./paid-client.ts";
import type { Sent } from "./wire.ts";

export interface PaidStats {
  concurrency: number;
  buyers: number;
  ok: number;
  failures: number;
  p50: number;
  p99: number;
  rps: number;
  /** Good answers including the warm-up's (for the bench's books check). */
  served: number;
  samples: string[];
  /** The measured latencies, sorted (to merge rounds). */
  latencies: Float64Array;
  seconds: number;
  /** CPU time per request (microseconds) of the client processes (measured part) and of workerd (whole run, warm-up included, per good answer); null where not measured. */
  clientCpuUs: number | null;
  workerdCpuUs: number | null;
  /** The sums behind them, to merge rounds. */
  cpu: { clientUs: number; clientRequests: number; workerdUs: number; workerdServed: number };
  /** HTTP requests the paying clients sent in the measured part, by how they paid (passes: docs/payments.md). */
  sent: Sent;
}

type Part = { latencies: ArrayLike<number>; failures: number; served: number; samples: string[]; cpu: PaidStats["cpu"]; sent: PaidStats["sent"] };

/** One set of figures from parts measured over `seconds` (client processes side by side, or rounds one after another). */
function combine(parts: Part[], seconds: number, who: { concurrency: number; buyers: number }, workerd?: { us: number; served: number }): PaidStats {
  const latencies = Float64Array.from(parts.flatMap((r) => Array.from(r.latencies))).sort();
  const cpu = { clientUs: 0, clientRequests: 0, workerdUs: workerd?.us ?? 0, workerdServed: workerd?.served ?? 0 };
  for (const r of parts) {
    cpu.clientUs += r.cpu.clientUs;
    cpu.clientRequests += r.cpu.clientRequests;
    cpu.workerdUs += r.cpu.workerdUs;
    cpu.workerdServed += r.cpu.workerdServed;
  }
  return {
    ...who,
    ok: latencies.length,
    failures: parts.reduce((n, r) => n + r.failures, 0),
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    rps: latencies.length / seconds,
    served: parts.reduce((n, r) => n + r.served, 0),
    samples: parts.flatMap((r) => r.samples).slice(0, 3),
    latencies,
    seconds,
    clientCpuUs: cpu.clientRequests > 0 ? cpu.clientUs / cpu.clientRequests : null,
    workerdCpuUs: cpu.workerdServed > 0 ? cpu.workerdUs / cpu.workerdServed : null,
    cpu,
    sent: {
      pass: parts.reduce((n, r) => n + r.sent.pass, 0),
      signed: parts.reduce((n, r) => n + r.sent.signed, 0),
      unpaid: parts.reduce((n, r) => n + r.sent.unpaid, 0),
    },
  };
}

/** Rounds of one kind of run as one. */
export function mergePaid(runs: PaidStats[]): PaidStats {
  return combine(runs, runs.reduce((n, r) => n + r.seconds, 0), runs[0]!);
}

/** `count` fresh buyer keys (Ed25519), serialized, each with credit from the dev faucet (the bench's Worker has DEV_FAUCET=1). */
export async function fundedBuyers(baseUrl: string, count: number, amountMicros: number): Promise<string[]> {
  return Promise.all(
    Array.from({ length: count }, async () => {
      const key = await generateBuyerKey();
      await requestFaucet({ baseUrl, buyerId: key.buyerId, amountMicros });
      return serializeBuyerKey(key);
    }),
  );
}

export interface ClientLoad {
  baseUrl: string;
  path: string;
  body: string;
  reply: string;
  concurrency: number;
  /** Serialized funded buyers: buyer j is paid for by loop j % concurrency (a loop with several takes turns). Empty with proxyToken. */
  buyers: string[];
  proxyToken?: string;
  warmup: number;
  seconds: number;
  /** Client processes the loops are spread over (default: 2, or 1 at c=1). */
  processes?: number;
}

/** One closed-loop run of paying (or, with proxyToken, unpaid) clients in child processes. */
export async function loadClients(opts: ClientLoad): Promise<PaidStats> {
  const processes = Math.max(1, Math.min(opts.processes ?? 2, opts.concurrency));
  const loops: string[][] = Array.from({ length: opts.concurrency }, () => []);
  if (opts.proxyToken) loops.forEach((l) => l.push(""));
  else opts.buyers.forEach((buyer, j) => loops[j % opts.concurrency]!.push(buyer));
  // Fewer buyers than loops: loops share buyers (buyer i % buyers).
  loops.forEach((l, i) => l.length === 0 && l.push(opts.buyers[i % opts.buyers.length]!));
  const workerdBefore = descendantCpuMs("workerd");
  const results = await Promise.all(
    Array.from({ length: processes }, (_, p) => {
      const job: Job = {
        baseUrl: opts.baseUrl, path: opts.path, body: opts.body, reply: opts.reply,
        loops: loops.filter((_, i) => i % processes === p), warmup: opts.warmup, seconds: opts.seconds,
        ...(opts.proxyToken ? { proxyToken: opts.proxyToken } : {}),
      };
      return runClient(job, (opts.warmup + opts.seconds) * 1000 + 60_000);
    }),
  );
  const workerdAfter = descendantCpuMs("workerd");
  const served = results.reduce((n, r) => n + r.served, 0);
  // Nothing else loads workerd meanwhile: the rows run one at a time.
  const workerd = workerdBefore !== null && workerdAfter !== null && workerdAfter > workerdBefore ? { us: (workerdAfter - workerdBefore) * 1000, served } : undefined;
  const parts = results.map((r) => ({ ...r, cpu: { clientUs: r.cpuUs, clientRequests: r.measured, workerdUs: 0, workerdServed: 0 } }));
  return combine(parts, Math.max(...results.map((r) => r.seconds)), { concurrency: opts.concurrency, buyers: opts.proxyToken ? 0 : opts.buyers.length }, workerd);
}

function runClient(job: Job, timeoutMs: number): Promise<ClientResult> {
  const child = spawnNode("paying client", [join(import.meta.dirname, "paid-client.ts"), JSON.stringify(job)]);
  let out = "";
  child.proc.stdout?.on("data", (b: Buffer) => (out += b.toString("utf8")));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.proc.kill("SIGKILL"), timeoutMs);
    child.proc.once("exit", (code) => {
      clearTimeout(timer);
      const line = out.trim().split("\n").at(-1) ?? "";
      if (code !== 0 || !line.startsWith("{")) return reject(new Error(`paying client failed (exit ${code}):\n${child.tail()}`));
      resolve(JSON.parse(line) as ClientResult);
    });
  });
}
