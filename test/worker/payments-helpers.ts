// Shared steps for the suites that pay through the Worker's real entry: ask the proxy (402),
// answer the challenge with a credit credential, send again; fund buyers through the dev
// faucet route; read wallets, receipts and storage behind the API. Keys are listed by the
// file's seller through the seller API (test/worker/helpers.ts addKey).
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { Challenge } from "mppx";
import { expect } from "vitest";
import { creditClient, type BuyerKey } from "../../buyer/keys.ts";
import type { Env } from "../../core/env.ts";
import { parseReceipt, walletStub, type Cn2Receipt } from "../../worker/payments/index.ts";
import { call } from "./helpers.ts";

export const e = env as unknown as Env;
export const CHAT = "/openai/v1/chat/completions";
export const ROUTE = `POST ${CHAT}`;

export const chatJson = (opts: { stream?: boolean } = {}) => JSON.stringify({ model: "gpt-4o-mini", stream: opts.stream ?? false, messages: [{ role: "user", content: "Hello" }] });

export interface Attempt {
  path?: string;
  headers?: Record<string, string>;
  body?: string;
}

/** One request through the Worker's entry, unpaid unless `authorization` is given. */
export function ask(a: Attempt = {}, authorization?: string): Promise<Response> {
  return call(a.path ?? CHAT, {
    method: "POST",
    headers: { "content-type": "application/json", ...a.headers, ...(authorization ? { authorization } : {}) },
    body: a.body ?? chatJson(),
  });
}

/** The credit credential for a 402's challenge, signed by `key`. */
export async function credentialFrom(res: Response, key: BuyerKey) {
  expect(res.status, "a 402 to pay").toBe(402);
  const [challenge] = Challenge.fromResponseList(res);
  await res.body?.cancel();
  return { challenge: challenge!, credential: await creditClient(key).createCredential({ challenge: challenge! as never }) };
}

/** A fresh challenge from the proxy (an unpaid ask) and a credential for it. */
export const credentialFor = async (key: BuyerKey, a: Attempt = {}) => credentialFrom(await ask(a), key);

/** Ask, pay the 402 with `key`, send again: what a paying client does. */
export async function paid(key: BuyerKey, a: Attempt = {}) {
  const { challenge, credential } = await credentialFor(key, a);
  return { challenge, credential, res: await ask(a, credential) };
}

/** Credit a buyer through the dev faucet route (DEV_FAUCET=1 in the test bindings). */
export async function fund(buyerId: string, amountMicros: number) {
  const res = await call("/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId, amountMicros }) });
  if (res.status !== 200) throw new Error(`faucet: ${res.status} ${await res.text()}`);
}

export const wallet = (buyerId: string) => walletStub(e, buyerId);
export const balanceOf = async (buyerId: string) => (await wallet(buyerId).summary()).balanceMicros;

export function receiptOf(res: Response): Cn2Receipt {
  const value = res.headers.get("payment-receipt");
  expect(value, "Payment-Receipt header").not.toBeNull();
  return parseReceipt(value!)!;
}

export async function problem(res: Response) {
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  return (await res.json()) as { type: string; status: number; code: string; detail: string; requestId: string; error: { code: string; message: string } };
}

/** Read a body to its end; a cut shows as `cut`, with the bytes that arrived before it. */
export async function drain(res: Response): Promise<{ bytes: number; cut: boolean }> {
  if (!res.body) return { bytes: 0, cut: false };
  const reader = res.body.getReader();
  let bytes = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { bytes, cut: false };
      bytes += value.byteLength;
    }
  } catch {
    return { bytes, cut: true };
  }
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
