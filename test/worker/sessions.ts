// Whole sessions through the Worker's real entry, for the promise tests
// (test/worker/promises.test.ts): a client that adds the same headers and edge data
// (`request.cf`) to every request, keeps the session cookie as a browser would and
// records every answer; a seller session (sign-in three ways, profile, keys, webhooks,
// payouts, KYC, earnings, export, sign-out) on the cookie alone; a buyer session (credit,
// top-up by card, the 402, paid calls streamed and not, a refund, balance, budget, a
// dispute) with its own key; an optional buyer account's session; the operator's calls.
import { env } from "cloudflare:workers";
import { Challenge } from "mppx";
import { expect } from "vitest";
import { creditClient, generateBuyerKey, type BuyerKey } from "../../buyer/keys.ts";
import { ACCOUNT_HEADERS, accountMessage, accountRequestHeaders } from "../../core/credit-method.ts";
import { ACCOUNT_TOPUP_PATH, ATTACH_PATH, BUYER_ACCOUNT_PATH, HISTORY_PATH, newAttachProof } from "../../schema/buyer-account.ts";
import { sign } from "../../core/did.ts";
import { sha256Hex, toBase64Url } from "../../core/encoding.ts";
import type { Env } from "../../core/env.ts";
import { encryptCredential, parseVaultPrivateKeys, publicKeysOf } from "../../core/vault.ts";
import { personaSignature } from "../../worker/seller/kyc.ts";
import { SESSION_COOKIE } from "../../worker/seller/auth.ts";
import type { KeyConfigInput } from "../../schema/wire.ts";
import { OPS, PROXY, baseConfig, keyIdFor, worker } from "./helpers.ts";
import { responseText } from "./sinks.ts";

export const e = env as unknown as Env & { PERSONA_WEBHOOK_SECRET: string; STRIPE_API_BASE: string; WEBHOOK_RECEIVER_URL: string };
export const ORIGIN = "https://cn2.test";
export const CHAT = "/openai/v1/chat/completions";

export interface Answer {
  method: string;
  path: string;
  status: number;
  setCookies: string[];
  /** Status, headers and body as text (for searching). */
  text: string;
}

export interface Client {
  /** One request through the Worker's fetch; the body is read whole (a cut stream reads as far as it got). */
  send(path: string, init?: RequestInit): Promise<Response>;
  /** Every answer so far, in order. */
  answers: Answer[];
  /** The session cookie's value as the client holds it now (null: none). */
  session(): string | null;
}

/**
 * A client of the real Worker entry. `headers` and `cf` go on every request; a
 * `__Host-cn2_session` cookie an answer sets is kept and sent back (with our Origin and the
 * CSRF header on writes, as the dashboard does), and cleared when an answer expires it.
 */
export function client(opts: { headers?: Record<string, string>; cf?: Record<string, unknown> } = {}): Client {
  const answers: Answer[] = [];
  let session: string | null = null;
  return {
    answers,
    session: () => session,
    async send(path, init = {}) {
      const method = (init.method ?? "GET").toUpperCase();
      const headers = new Headers(init.headers);
      for (const [k, v] of Object.entries(opts.headers ?? {})) headers.set(k, v);
      if (session !== null && !headers.has("authorization")) {
        headers.set("cookie", `${SESSION_COOKIE}=${session}`);
        if (method !== "GET" && method !== "HEAD") {
          headers.set("origin", ORIGIN);
          headers.set("cn2-csrf", "1");
        }
      }
      const res = await worker().fetch(`${ORIGIN}${path}`, { ...init, method, headers, redirect: "manual", ...(opts.cf ? { cf: opts.cf } : {}) } as RequestInit);
      const setCookies = res.headers.getSetCookie();
      for (const line of setCookies) {
        const [pair = ""] = line.split(";");
        const eq = pair.indexOf("=");
        if (pair.slice(0, eq).trim() !== SESSION_COOKIE) continue;
        session = /;\s*max-age=0\b/i.test(line) || pair.slice(eq + 1) === "" ? null : pair.slice(eq + 1);
      }
      const text = await responseText(res.clone());
      answers.push({ method, path, status: res.status, setCookies, text });
      const body = text.slice(text.indexOf("\n\n") + 2);
      return new Response(res.status === 204 || res.status === 304 || (res.status >= 300 && res.status < 400 && body === "") ? null : body, { status: res.status, headers: res.headers });
    },
  };
}

const jsonInit = (method: string, body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method, headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body),
});

async function expectStatus(res: Response, status: number | number[], what: string) {
  const allowed = Array.isArray(status) ? status : [status];
  if (!allowed.includes(res.status)) expect.fail(`${what}: ${res.status} ${await res.clone().text()}`);
}

// ---- sellers ----------------------------------------------------------------------------

export interface SellerRun {
  sellerId: string;
  token: string;
  keyId: string;
  credential: string;
}

let counter = 0;
export const unique = (label: string) => `${label}${Date.now().toString(36)}${(counter++).toString(36)}${Math.random().toString(36).slice(2, 6)}`;

/** A sealed key upload, as the dashboard makes it. */
export async function sealedKey(sellerId: string, over: Partial<KeyConfigInput> = {}, credential?: string) {
  const keyId = await keyIdFor({ id: sellerId });
  const secret = credential ?? `sk-demo-${keyId}`;
  const [current] = publicKeysOf(parseVaultPrivateKeys(e.VAULT_PRIVATE_KEYS));
  const envelope = await encryptCredential(secret, current!, { sellerId, keyId });
  return { keyId, credential: secret, body: { keyId, sellerId, envelope, config: baseConfig(over) } };
}

/**
 * A seller's session on the cookie alone: signs in (dev sign-in, the sign-in link, and the
 * token traded at /auth/session as the dashboard does with Supabase), edits the profile,
 * lists a key and edits it, registers a webhook at `webhookUrl`, sets payout preferences and
 * schedule, starts KYC (and Persona's signed webhook approves it), reads earnings, exports.
 * The key stays listed and the session open: `finishSellerSession` ends it.
 */
export async function sellerSession(c: Client, opts: { email: string; webhookUrl: string; key?: Partial<KeyConfigInput>; credential?: string }): Promise<SellerRun> {
  await expectStatus(await c.send("/auth/config"), 200, "auth config");
  const signIn = await c.send("/auth/dev/sign-in", jsonInit("POST", { email: opts.email }, { "cn2-csrf": "1", origin: ORIGIN }));
  await expectStatus(signIn, 200, "dev sign-in");
  const { token, seller } = (await signIn.json()) as { token: string; seller: { id: string } };
  sessionSellers.push(token);
  expect(c.session()).toBe(token);
  await expectStatus(await c.send(`/auth/dev/sign-in?email=${encodeURIComponent(opts.email)}`), 303, "sign-in link");
  await expectStatus(await c.send("/auth/session", jsonInit("POST", { accessToken: token }, { "cn2-csrf": "1", origin: ORIGIN })), 200, "session");
  await expectStatus(await c.send("/api/me"), 200, "me");
  await expectStatus(await c.send("/api/me", jsonInit("PATCH", { displayName: "Promise Tester" })), 200, "patch me");
  await expectStatus(await c.send("/api/stats-opt-out", jsonInit("POST", { optOut: false })), 200, "stats opt-out");

  await expectStatus(await c.send("/api/vault/public-key"), 200, "vault public key");
  const key = await sealedKey(seller.id, opts.key, opts.credential);
  await expectStatus(await c.send("/api/keys", jsonInit("POST", key.body)), 201, "create key");
  await expectStatus(await c.send("/api/keys"), 200, "list keys");
  await expectStatus(await c.send(`/api/keys/${key.keyId}`), 200, "get key");
  await expectStatus(await c.send(`/api/keys/${key.keyId}`, jsonInit("PATCH", { requestsPerMinute: 500 })), 200, "patch key");
  await expectStatus(await c.send(`/api/keys/${key.keyId}/pause`, { method: "POST" }), 200, "pause");
  await expectStatus(await c.send(`/api/keys/${key.keyId}/resume`, { method: "POST" }), 200, "resume");

  const hook = await c.send("/api/webhooks", jsonInit("POST", { url: opts.webhookUrl }));
  await expectStatus(hook, 201, "create webhook");
  const { webhook } = (await hook.json()) as { webhook: { id: string } };
  await expectStatus(await c.send("/api/webhooks"), 200, "list webhooks");
  await expectStatus(await c.send(`/api/webhooks/${webhook.id}/rotate`, { method: "POST" }), 200, "rotate webhook secret");
  await expectStatus(await c.send(`/api/webhooks/${webhook.id}/deliveries`), 200, "deliveries");

  await expectStatus(await c.send("/api/payout", jsonInit("PUT", { method: "usdc_tempo", evmAddress: "0x52908400098527886E0F7030069857D2E4169EE7" })), 200, "payout preference");
  await expectStatus(await c.send("/api/payout"), 200, "read payout");
  await expectStatus(await c.send("/api/payout/schedule", jsonInit("PUT", { schedule: "manual" })), 200, "payout schedule");
  await expectStatus(await c.send("/api/kyc/start", { method: "POST" }), 201, "start KYC");
  await expectStatus(await personaApproves(c, seller.id), 200, "Persona webhook");
  // Nothing earned yet: a clear refusal, and the answer is part of the session all the same.
  await expectStatus(await c.send("/api/payouts", jsonInit("POST", {})), [400, 409, 422], "early payout");
  await expectStatus(await c.send("/api/earnings"), 200, "earnings");
  return { sellerId: seller.id, token, keyId: key.keyId, credential: key.credential };
}

/** The sellers of every session so far, by token, so a test can start from an empty marketplace. */
const sessionSellers: string[] = [];

/** Remove every key the sessions' sellers still list (through the seller API, as they would). */
export async function removeSessionKeys() {
  for (const token of sessionSellers) {
    const authorization = `Bearer ${token}`;
    const res = await worker().fetch(`${ORIGIN}/api/keys`, { headers: { authorization } });
    if (res.status === 401 || res.status === 410) continue; // the account was closed
    const { keys } = (await res.json()) as { keys: { keyId: string }[] };
    for (const k of keys) {
      const del = await worker().fetch(`${ORIGIN}/api/keys/${k.keyId}`, { method: "DELETE", headers: { authorization } });
      if (!del.ok) throw new Error(`removeSessionKeys: ${del.status} ${await del.text()}`);
    }
  }
}

/** Persona tells cn2 the seller's inquiry was approved (signed as Persona signs). */
export async function personaApproves(c: Client, sellerId: string) {
  const body = JSON.stringify({
    data: {
      type: "event", id: `evt_${crypto.randomUUID().replaceAll("-", "")}`,
      attributes: { name: "inquiry.approved", payload: { data: { type: "inquiry", id: "inq_promise", attributes: { status: "approved", "reference-id": sellerId } } } },
    },
  });
  const t = Math.floor(Date.now() / 1000);
  return c.send("/webhooks/persona", { method: "POST", headers: { "content-type": "application/json", "persona-signature": `t=${t},v1=${await personaSignature(e.PERSONA_WEBHOOK_SECRET, t, body)}` }, body });
}

/** The rest of a seller's session: earnings, both exports, the key removed, signed out. */
export async function finishSellerSession(c: Client, run: SellerRun) {
  await expectStatus(await c.send("/api/earnings"), 200, "earnings");
  await expectStatus(await c.send("/api/export?format=json"), 200, "export json");
  await expectStatus(await c.send("/api/export?format=csv&data=keys"), 200, "export csv");
  await expectStatus(await c.send(`/api/keys/${run.keyId}`, { method: "DELETE" }), 200, "delete key");
  await expectStatus(await c.send("/auth/sign-out", { method: "POST" }), 200, "sign-out");
  expect(c.session()).toBeNull();
  await expectStatus(await c.send("/api/me"), [401, 410], "after sign-out");
}

// ---- buyers -----------------------------------------------------------------------------

/** A buyer-signed account call (balance, budget, disputes), as the buyer client signs it. */
export async function signed(c: Client, buyer: BuyerKey, method: string, path: string, body?: unknown) {
  const text = body === undefined ? "" : JSON.stringify(body);
  const time = String(Math.floor(Date.now() / 1000));
  const message = accountMessage({ method, pathAndQuery: path, time, bodySha256: await sha256Hex(text) });
  return c.send(path, {
    method,
    headers: {
      ...(text ? { "content-type": "application/json" } : {}),
      [ACCOUNT_HEADERS.did]: buyer.did, [ACCOUNT_HEADERS.time]: time,
      [ACCOUNT_HEADERS.signature]: toBase64Url(await sign(buyer.alg, buyer.privateKey, message)),
    },
    ...(text ? { body: text } : {}),
  });
}

/** Ask unpaid (402), pay the challenge with `buyer`'s credit, send again: what a paying client does. */
export async function paidCall(c: Client, buyer: BuyerKey, init: { path?: string; body: string; headers?: Record<string, string> }) {
  const request = (authorization?: string) => ({
    method: "POST", headers: { "content-type": "application/json", ...init.headers, ...(authorization ? { authorization } : {}) }, body: init.body,
  });
  const first = await c.send(init.path ?? CHAT, request());
  await expectStatus(first, 402, "unpaid call");
  const [challenge] = Challenge.fromResponseList(first);
  const authorization = await creditClient(buyer).createCredential({ challenge: challenge! as never });
  const res = await c.send(init.path ?? CHAT, request(authorization));
  return { res, challenge: challenge!, quote: Number((challenge!.request as { amount: string }).amount), receipt: res.headers.get("payment-receipt"), requestId: res.headers.get("cn2-request-id")! };
}

export const chatBody = (opts: { content?: string; stream?: boolean; user?: string } = {}) =>
  JSON.stringify({ model: "gpt-4o-mini", stream: opts.stream ?? false, ...(opts.user ? { user: opts.user } : {}), messages: [{ role: "user", content: opts.content ?? "Hello" }] });

export interface BuyerRun {
  buyer: BuyerKey;
  servedRequestIds: string[];
  disputeId: string;
}

/**
 * A buyer's session: faucet credit, a card top-up through (fake) Stripe and its signed
 * webhook, balance, budget, an unpaid call (402), paid calls served and streamed, one the
 * upstream fails (refunded: `failOnce` makes the key's upstream answer 500 once), and a
 * dispute opened, listed and read from the served call's receipt.
 */
export async function buyerSession(c: Client, opts: { failOnce: () => Promise<void>; headers?: Record<string, string> }): Promise<BuyerRun> {
  const buyer = await generateBuyerKey();
  await expectStatus(await c.send("/api/credit/faucet", jsonInit("POST", { buyerId: buyer.buyerId, amountMicros: 1_000_000 })), 200, "faucet");
  const topUp = await c.send("/api/credit/topup", jsonInit("POST", { buyerId: buyer.buyerId, amountMicros: 1_000_000 }));
  await expectStatus(topUp, 201, "card top-up");
  const { sessionId } = (await topUp.json()) as { sessionId: string };
  const completed = (await (await fetch(`${e.STRIPE_API_BASE}/__fake/sessions/${sessionId}/complete`, { method: "POST" })).json()) as { payload: string; signature: string };
  await expectStatus(await c.send("/webhooks/stripe", { method: "POST", headers: { "content-type": "application/json", "stripe-signature": completed.signature }, body: completed.payload }), 200, "Stripe webhook");
  await expectStatus(await signed(c, buyer, "GET", "/api/credit/balance"), 200, "balance");
  await expectStatus(await signed(c, buyer, "PUT", "/api/credit/budget", { dailyCapMicros: 1_500_000 }), 200, "budget");

  const served = await paidCall(c, buyer, { body: chatBody(), headers: opts.headers });
  await expectStatus(served.res, 200, "paid call");
  const streamed = await paidCall(c, buyer, { body: chatBody({ stream: true }), headers: opts.headers });
  await expectStatus(streamed.res, 200, "paid streamed call");
  await opts.failOnce();
  const refunded = await paidCall(c, buyer, { body: chatBody(), headers: opts.headers });
  expect(refunded.receipt).toMatch(/.+/);
  expect(refunded.res.status).toBeGreaterThanOrEqual(500);

  const opened = await signed(c, buyer, "POST", "/api/disputes", { receipt: served.receipt, reason: "other" });
  await expectStatus(opened, 201, "open dispute");
  const { dispute } = (await opened.json()) as { dispute: { id: string } };
  await expectStatus(await signed(c, buyer, "GET", "/api/disputes"), 200, "list disputes");
  await expectStatus(await signed(c, buyer, "GET", `/api/disputes/${dispute.id}`), 200, "read dispute");
  return { buyer, servedRequestIds: [served.requestId, streamed.requestId], disputeId: dispute.id };
}

// ---- optional buyer accounts ------------------------------------------------------------

/**
 * An optional buyer account's session on the cookie alone (B4): a buyer sign-in, the
 * account read, `buyer`'s id attached with a proof signed by its key, the spend history, a
 * card top-up from the account, and (`deleteAccount`) the account deleted, or a sign-out.
 */
export async function buyerAccountSession(c: Client, buyer: BuyerKey, opts: { email: string; deleteAccount?: boolean }) {
  const signIn = await c.send("/auth/dev/sign-in", jsonInit("POST", { email: opts.email, account: "buyer" }, { "cn2-csrf": "1", origin: ORIGIN }));
  await expectStatus(signIn, 200, "buyer sign-in");
  const { buyer: account } = (await signIn.json()) as { buyer: { id: string } };
  await expectStatus(await c.send(BUYER_ACCOUNT_PATH), 200, "read the buyer account");
  const body = JSON.stringify(newAttachProof(account.id));
  const proof = await accountRequestHeaders(buyer, { method: "POST", pathAndQuery: ATTACH_PATH, body });
  await expectStatus(await c.send(ATTACH_PATH, { method: "POST", headers: { "content-type": "application/json", ...proof }, body }), 201, "attach the buyer id");
  await expectStatus(await c.send(`${HISTORY_PATH}?days=7`), 200, "spend history");
  await expectStatus(await c.send(ACCOUNT_TOPUP_PATH, jsonInit("POST", { buyerId: buyer.buyerId, amountMicros: 1_000_000 })), 201, "account top-up");
  if (opts.deleteAccount) await expectStatus(await c.send(BUYER_ACCOUNT_PATH, { method: "DELETE" }), 200, "delete the buyer account");
  else await expectStatus(await c.send("/auth/sign-out", { method: "POST" }), 200, "buyer sign-out");
  expect(c.session()).toBeNull();
  return { accountId: account.id };
}

// ---- operators --------------------------------------------------------------------------

export const opsInit = (init: RequestInit = {}): RequestInit => ({ ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${OPS}` } });

/** The operator's calls: inspect the key and its pool, list and resolve the dispute (refund), an unpaid call with the proxy token. */
export async function operatorSession(c: Client, opts: { keyId: string; region: string; disputeId: string }) {
  await expectStatus(await c.send(`/ops/keys/${opts.keyId}`, opsInit()), 200, "inspect key");
  await expectStatus(await c.send(`/ops/pools/openai/${opts.region}/standard`, opsInit()), 200, "inspect pool");
  await expectStatus(await c.send("/ops/disputes?status=all", opsInit()), 200, "list disputes");
  await expectStatus(await c.send(`/ops/disputes/${opts.disputeId}`, opsInit()), 200, "read dispute");
  await expectStatus(await c.send(`/ops/disputes/${opts.disputeId}/resolve`, opsInit(jsonInit("POST", { decision: "refund" }))), 200, "resolve dispute");
  await expectStatus(await c.send("/ops/payouts", opsInit()), 200, "list payouts");
  await expectStatus(await c.send(CHAT, { method: "POST", headers: { "content-type": "application/json", "cn2-proxy-token": PROXY }, body: chatBody() }), 200, "unpaid call");
}
