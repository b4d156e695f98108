// Shared steps for the payments suites: a tiny paid endpoint assembled from the building
// blocks exactly as the proxy uses them (challengeResponse -> charge -> receiptHeader), so
// payments are tested without the proxy; wallets, storage dumps and credentials.
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { Challenge } from "mppx";
import { creditClient, type BuyerKey } from "../../buyer/keys.ts";
import type { Env } from "../../core/env.ts";
import * as payments from "../../worker/payments/index.ts";
import { faucetHandler } from "../../worker/payments/credit.ts";

export const e = env as unknown as Env;
export const ROUTE = "POST /openai/v1/chat/completions";
export const URL_ = "https://cn2.test/openai/v1/chat/completions";

let n = 0;
export const newRequestId = () => `req_test${(n++).toString(36)}${crypto.randomUUID().slice(0, 8)}`;

export interface Served {
  requestId: string;
  payment?: payments.Payment;
}

/** A paid endpoint: 402 without a credential, else charge, then 200 with a receipt. */
export function paidEndpoint(opts: { price?: number; served?: Served[]; fail?: boolean } = {}) {
  return async (request: Request): Promise<Response> => {
    const requestId = newRequestId();
    const route = `${request.method} ${new URL(request.url).pathname}`;
    if (!payments.hasPaymentCredential(request)) return payments.challengeResponse(request, e, { amountMicros: opts.price ?? 1000, route }, requestId);
    const paid = await payments.charge(request, e, route, requestId);
    if (!paid.ok) return paid.response;
    opts.served?.push({ requestId, payment: paid.payment });
    let refunded = false;
    if (opts.fail) {
      await payments.refund(e, paid.payment, "no_key_could_serve");
      refunded = true;
    }
    const res = new Response(JSON.stringify({ ok: !opts.fail }), { status: opts.fail ? 503 : 200, headers: { "content-type": "application/json" } });
    res.headers.set(payments.RECEIPT_HEADER, await payments.receiptHeader(paid.payment, { requestId, refunded }));
    return res;
  };
}

export const asFetch = (handler: (r: Request) => Promise<Response>): typeof fetch => (input, init) => handler(new Request(input as RequestInfo, init));

/**
 * A buyer's side of paid requests against `handler`: ask, answer the 402 with a credit
 * credential, retry once. (createPayingFetch does this through mppx's client; the Node
 * suite drives it with the official OpenAI SDK. Here the lighter path keeps mppx's client
 * and viem out of the workerd module graph.)
 */
export function payingFetch(key: BuyerKey, handler: (r: Request) => Promise<Response>) {
  return async (url: string, init: RequestInit): Promise<Response> => {
    const first = await handler(new Request(url, init));
    if (first.status !== 402 || !first.headers.has("www-authenticate")) return first;
    const [challenge] = Challenge.fromResponseList(first);
    const credential = await creditClient(key).createCredential({ challenge: challenge as never });
    const headers = new Headers(init.headers);
    headers.set("authorization", credential);
    return handler(new Request(url, { ...init, headers }));
  };
}

export const chatInit = (headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] }),
});

/** Credit a buyer through the dev faucet's handler. */
export async function fund(buyerId: string, amountMicros: number) {
  const res = await faucetHandler(new Request("https://cn2.test/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId, amountMicros }) }), e);
  if (res.status !== 200) throw new Error(`faucet: ${res.status} ${await res.text()}`);
}

export const wallet = (buyerId: string) => payments.walletStub(e, buyerId);
export const balanceOf = async (buyerId: string) => (await wallet(buyerId).summary()).balanceMicros;

/** A fresh challenge for `route` (by asking the endpoint without paying) and a credential for it. */
export async function credentialFor(key: BuyerKey, opts: { price?: number; path?: string } = {}) {
  const res = await paidEndpoint({ price: opts.price })(new Request(opts.path ? `https://cn2.test${opts.path}` : URL_, chatInit()));
  const [challenge] = Challenge.fromResponseList(res);
  const credential = await creditClient(key).createCredential({ challenge: challenge! as never });
  return { challenge: challenge!, credential };
}

export async function problem(res: Response) {
  return (await res.json()) as { type: string; status: number; code: string; detail: string; requestId: string; error: { code: string; message: string } };
}

export async function dumpObject(stub: DurableObjectStub): Promise<string> {
  return runInDurableObject(stub, async (_instance, state) => {
    const tables = state.storage.sql.exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'sqlite_%'").toArray();
    const rows = tables.map((t) => ({ [t.name]: state.storage.sql.exec(`SELECT * FROM "${t.name}"`).toArray() }));
    const kv = [...(await state.storage.list()).entries()];
    return JSON.stringify({ rows, kv });
  });
}

export async function dumpKv(ns: KVNamespace): Promise<string> {
  const out: unknown[] = [];
  for (const k of (await ns.list()).keys) out.push(k, await ns.get(k.name));
  return JSON.stringify(out);
}
