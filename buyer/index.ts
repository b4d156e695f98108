// `cn2/buyer`: pay for cn2 requests with prepaid credit, no account. A buyer is a
// keypair (Ed25519 by default, or P-256), made and kept by the buyer; its did:key is the
// payer principal, which cn2 hashes into a buyer id on arrival (B2).
//
//   const key = await generateBuyerKey();            // once; keep serializeBuyerKey(key) secret
//   const fetch = createPayingFetch({ baseUrl, privateKey: serializeBuyerKey(key) });
//   const openai = new OpenAI({ baseURL: `${baseUrl}/openai/v1`, apiKey: "unused", fetch });
//
// The paying fetch answers a 402 `WWW-Authenticate: Payment` challenge with a `credit`
// credential (a signature over the challenge) through mppx's client, and retries once.
// Runs anywhere WebCrypto and fetch exist: Node 22, browsers, Workers.
import { Mppx } from "mppx/client";
import { creditClient, loadBuyerKey, type BuyerKey, type PrivateKeyInput } from "./keys.ts";

export * from "./keys.ts";

export interface PayingFetchOptions {
  /** cn2's origin, e.g. http://127.0.0.1:8787. Only its 402s are paid. */
  baseUrl: string;
  privateKey: PrivateKeyInput | Promise<BuyerKey>;
  /** The fetch to wrap (defaults to globalThis.fetch at call time). */
  fetch?: typeof globalThis.fetch;
  /** Payment attempts per request after the first 402 (default 2: one retry on an expired or replayed proof). */
  maxPaymentRetries?: number;
}

/** A fetch that pays cn2's 402 challenges with prepaid credit. Drop-in for SDKs' `fetch` option. */
export function createPayingFetch(options: PayingFetchOptions): typeof globalThis.fetch {
  const origin = new URL(options.baseUrl).origin;
  const base: typeof globalThis.fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const key = options.privateKey instanceof Promise ? options.privateKey : loadBuyerKey(options.privateKey);
  key.catch(() => {}); // surfaced on first use
  const paying = Mppx.create({
    methods: [creditClient(key)],
    fetch: base,
    polyfill: false,
    maxPaymentRetries: options.maxPaymentRetries ?? 2,
  }).fetch as typeof globalThis.fetch;
  return (input, init) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    return new URL(url, origin).origin === origin ? paying(input, init) : base(input, init);
  };
}

