// The paid path (issue 3): what paying per request costs a buyer on top of the unpaid
// ops-token path. Each request is the whole MPP exchange as `createPayingFetch` does it:
// the 402 challenge, a signed credit credential, verification and the wallet's atomic
// claim + debit, then the answer. Closed loop: `concurrency` workers, each with one
// request in flight, for a bounded time. One buyer, so one BuyerWallet object serves it.
import { createPayingFetch, generateBuyerKey, requestFaucet, type BuyerKey } from "../buyer/index.ts";
import { percentile } from "./load.ts";

export interface PaidStats {
  concurrency: number;
  ok: number;
  failures: number;
  p50: number;
  p99: number;
  rps: number;
  samples: string[];
}

/** A fresh buyer key with credit from the dev faucet (the bench's Worker has DEV_FAUCET=1). */
export async function fundedBuyer(baseUrl: string, amountMicros: number): Promise<BuyerKey> {
  const key = await generateBuyerKey();
  await requestFaucet({ baseUrl, buyerId: key.buyerId, amountMicros });
  return key;
}

export async function loadPaid(opts: { baseUrl: string; path: string; body: string; verify: (body: string) => boolean; key: BuyerKey; concurrency: number; seconds: number }): Promise<PaidStats> {
  const pay = createPayingFetch({ baseUrl: opts.baseUrl, privateKey: opts.key });
  const latencies: number[] = [];
  const samples: string[] = [];
  let failures = 0;
  const started = performance.now();
  const end = started + opts.seconds * 1000;
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        try {
          const res = await pay(`${opts.baseUrl}${opts.path}`, { method: "POST", headers: { "content-type": "application/json" }, body: opts.body });
          const text = await res.text();
          if (res.ok && opts.verify(text) && res.headers.has("payment-receipt")) latencies.push(performance.now() - t0);
          else {
            failures++;
            if (samples.length < 3) samples.push(`${res.status} ${text.slice(0, 160)}`);
          }
        } catch (err) {
          failures++;
          if (samples.length < 3) samples.push(String(err).slice(0, 160));
        }
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const sorted = Float64Array.from(latencies).sort();
  return { concurrency: opts.concurrency, ok: latencies.length, failures, p50: percentile(sorted, 50), p99: percentile(sorted, 99), rps: latencies.length / seconds, samples };
}
