// A paying client process of the bench (issue 14): buyers as they meet cn2, each with its
// own key and `createPayingFetch`, run here, outside the load generator's and the parent's
// event loop, so the buyers' signing and HTTP client cost this process's CPU, not the
// measurement's. Closed loop: one loop per entry of `loops`, each with one request in
// flight, for `seconds`, paying as its buyers in turn (one buyer per request). With `proxyToken` the same loops use the same
// HTTP client unpaid (the proxy token instead of a payment): the like-for-like baseline.
//
//   node bench/paid-client.ts '<json Job>'   ->  one JSON line (ClientResult) on stdout
// Only its types are imported elsewhere (bench/paid.ts spawns it).
import { createPayingFetch, loadBuyerKey } from "../buyer/index.ts";
import { countingFetch, newSent, type Sent } from "./wire.ts";

export interface Job {
  baseUrl: string;
  path: string;
  body: string;
  /** A substring every good answer contains. */
  reply: string;
  /** One entry per loop: the serialized buyer keys (serializeBuyerKey) it pays as, in turn. A buyer's paying fetch is shared by its loops. Ignored when unpaid. */
  loops: string[][];
  /** Seconds of warm-up (not counted), then of measurement. */
  warmup: number;
  seconds: number;
  /** Set: serve unpaid with this proxy token. */
  proxyToken?: string;
}

export interface ClientResult {
  ok: number;
  failures: number;
  /** Milliseconds, one per good answer of the measured part. */
  latencies: number[];
  seconds: number;
  /** Good answers, warm-up included. */
  served: number;
  samples: string[];
  /** CPU time (user + system, microseconds) this process used in the measured part, and the requests it made then. */
  cpuUs: number;
  measured: number;
  /** HTTP requests sent in the measured part, by how they paid: a pass proof, a signed credential, nothing (a 402 came back). */
  sent: Sent;
}

async function run(job: Job): Promise<ClientResult> {
  let measuring = false;
  const sent = newSent();
  // What the paying fetch puts on the wire (counted in the measured part).
  const wire = countingFetch(sent, () => measuring);
  const fetches = new Map<string, typeof globalThis.fetch>();
  for (const buyer of new Set(job.loops.flat())) {
    fetches.set(buyer, job.proxyToken ? globalThis.fetch : createPayingFetch({ baseUrl: job.baseUrl, privateKey: await loadBuyerKey(buyer), fetch: wire }));
  }
  const headers: Record<string, string> = { "content-type": "application/json", ...(job.proxyToken ? { "cn2-proxy-token": job.proxyToken } : {}) };
  const url = `${job.baseUrl}${job.path}`;
  const latencies: number[] = [];
  const samples: string[] = [];
  let failures = 0;
  let served = 0;
  const loop = async (i: number, until: number) => {
    const mine = job.loops[i]!.map((buyer) => fetches.get(buyer)!);
    for (let n = 0; performance.now() < until; n++) {
      const pay = mine[n % mine.length]!;
      const t0 = performance.now();
      try {
        const res = await pay(url, { method: "POST", headers, body: job.body });
        const text = await res.text();
        const good = res.ok && text.includes(job.reply) && (job.proxyToken !== undefined || res.headers.has("payment-receipt"));
        if (good) served++;
        if (!measuring) continue;
        if (good) latencies.push(performance.now() - t0);
        else {
          failures++;
          if (samples.length < 3) samples.push(`${res.status} ${text.slice(0, 160)}`);
        }
      } catch (err) {
        if (!measuring) continue;
        failures++;
        if (samples.length < 3) samples.push(String(err).slice(0, 160));
      }
    }
  };
  const loops = (seconds: number) => {
    const until = performance.now() + seconds * 1000;
    return Promise.all(job.loops.map((_, i) => loop(i, until)));
  };
  if (job.warmup > 0) await loops(job.warmup);
  measuring = true;
  const started = performance.now();
  const cpu = process.cpuUsage();
  await loops(job.seconds);
  const used = process.cpuUsage(cpu);
  return { ok: latencies.length, failures, latencies, seconds: (performance.now() - started) / 1000, served, samples, cpuUs: used.user + used.system, measured: latencies.length + failures, sent };
}

const result = await run(JSON.parse(process.argv[2] ?? "") as Job);
process.stdout.write(JSON.stringify({ ...result, latencies: result.latencies.map((l) => Math.round(l * 1000) / 1000) }) + "\n");
