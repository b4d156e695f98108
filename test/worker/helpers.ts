// Shared steps for the workerd suites: sign sellers in (dev sign-in), make keys through the
// real seller API (the envelope is encrypted here, as a seller's device would), call the
// proxy, drive the demo upstream. Durable Object and KV storage are per test file, the
// Postgres database is shared by the run: every file signs in sellers with fresh emails.
import { env, exports } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { H, type KeyConfigInput, type KeyInspection, type KeyView } from "../../schema/wire.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { encryptCredential, parseVaultPrivateKeys, publicKeysOf } from "../../core/vault.ts";
import { newKeyId } from "../../core/key-id.ts";

export const OPS = "test-ops-token";
/** Unpaid proxy calls (PROXY_TOKEN, `cn2-proxy-token`): not the ops token. */
export const PROXY = "test-proxy-token";
const testEnv = env as unknown as { DEMO_UPSTREAM_URL: string; VAULT_PRIVATE_KEYS: string };
export const DEMO = testEnv.DEMO_UPSTREAM_URL;

export const worker = () => (exports as unknown as { default: Fetcher }).default;

export function call(path: string, init: RequestInit = {}): Promise<Response> {
  return worker().fetch(`https://cn2.test${path}`, init);
}

export interface TestSeller {
  id: string;
  email: string;
  token: string;
}

/** Every seller this file signed in, so removeAllKeys can clean up after all of them. */
const signedIn = new Map<string, TestSeller>();
let sellerCounter = 0;

/** A seller through the dev sign-in (creates the account); a fresh email unless one is given. */
export async function signIn(label = "seller", email?: string): Promise<TestSeller> {
  const address = email ?? `${label}-${Date.now().toString(36)}${(sellerCounter++).toString(36)}${Math.random().toString(36).slice(2, 6)}@example.test`;
  const res = await call("/auth/dev/sign-in", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1" }, body: JSON.stringify({ email: address }) });
  if (res.status !== 200) throw new Error(`sign-in failed: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { token: string; seller: { id: string; email: string } };
  const seller = { id: body.seller.id, email: body.seller.email, token: body.token };
  signedIn.set(seller.id, seller);
  return seller;
}

let defaultSeller: Promise<TestSeller> | null = null;
/** The file's default seller, signed in once. */
export const testSeller = () => (defaultSeller ??= signIn("default"));

/** Call the seller API as `seller` with its bearer token (as the CLI does). */
export function as(seller: TestSeller, path: string, init: RequestInit & { json?: unknown } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${seller.token}`);
  if (init.json !== undefined) headers.set("content-type", "application/json");
  return call(path, { ...init, headers, body: init.json !== undefined ? JSON.stringify(init.json) : init.body });
}

/** `/ops/*` with the ops token; anything else as the file's default seller. */
export async function api(path: string, init: RequestInit & { json?: unknown } = {}): Promise<Response> {
  if (!path.startsWith("/ops/")) return as(await testSeller(), path, init);
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${OPS}`);
  if (init.json !== undefined) headers.set("content-type", "application/json");
  return call(path, { ...init, headers, body: init.json !== undefined ? JSON.stringify(init.json) : init.body });
}

/** A key id derived for `seller` (core/key-id.ts), as the CLI and the dashboard make them. */
export const keyIdFor = (seller: { id: string }) => newKeyId(seller.id);
/** A well-formed key id of nobody's (for rows written straight into Postgres). */
export const randomKeyId = () => `k_${Array.from(crypto.getRandomValues(new Uint8Array(26)), (b) => "abcdefghijklmnopqrstuvwxyz234567"[b % 32]).join("")}`;

export const baseConfig = (over: Partial<KeyConfigInput> = {}): KeyConfigInput => ({
  provider: "openai", priceMicros: 1000, requestsPerMinute: 1000, maxConcurrent: 50, region: "us", tier: "standard", ...over,
});

/** Upload a key as `seller` (default: the file's seller), sealed to that seller and key id. */
export async function addKey(opts: { config?: Partial<KeyConfigInput>; credential?: string; seller?: TestSeller; keyId?: string } = {}) {
  const seller = opts.seller ?? (await testSeller());
  const sellerId = seller.id;
  const keyId = opts.keyId ?? (await keyIdFor(seller));
  const credential = opts.credential ?? `sk-demo-${keyId}`;
  const [current] = publicKeysOf(parseVaultPrivateKeys(testEnv.VAULT_PRIVATE_KEYS));
  const envelope = await encryptCredential(credential, current!, { sellerId, keyId });
  const res = await as(seller, "/api/keys", { method: "POST", json: { keyId, sellerId, envelope, config: baseConfig(opts.config) } });
  if (res.status !== 201) throw new Error(`addKey failed: ${res.status} ${await res.text()}`);
  const { key } = (await res.json()) as { key: KeyView };
  return { keyId, credential, sellerId, seller, key };
}

export async function inspect(keyId: string): Promise<KeyInspection> {
  const res = await api(`/ops/keys/${keyId}`);
  if (!res.ok) throw new Error(`inspect failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { key: KeyInspection }).key;
}

export const chatBody = (stream = false) => JSON.stringify({ model: "gpt-4o-mini", stream, messages: [{ role: "user", content: "Hello" }] });

export function chat(opts: { stream?: boolean; headers?: Record<string, string>; provider?: string; signal?: AbortSignal } = {}) {
  return call(`/${opts.provider ?? "openai"}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", "cn2-proxy-token": PROXY, ...opts.headers },
    body: chatBody(opts.stream),
    signal: opts.signal,
  });
}

/**
 * P2: give a key the track record premium asks for: PREMIUM_MIN_CALLS successful calls,
 * made through its key object as the router makes them (other keys would take a share
 * of calls sent through the proxy).
 */
export async function earnTrackRecord(keyId: string, calls = Number((env as unknown as { PREMIUM_MIN_CALLS: string }).PREMIUM_MIN_CALLS)) {
  const stub = keyStub(env as never, keyId, "default");
  for (let i = 0; i < calls; i++) {
    const res = await stub.fetch("https://key/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json", [H.requestId]: `req_track${i}`, [H.paid]: "0" },
      body: chatBody(),
    });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`earnTrackRecord: ${res.status}`);
  }
}

/** Pool members by key id, as the pool index holds them (GET /ops/pools). */
export async function poolMembers(region: string, tier: string, provider = "openai"): Promise<string[]> {
  const res = await api(`/ops/pools/${provider}/${region}/${tier}`);
  return ((await res.json()) as { pool: { members: { keyId: string }[] } }).pool.members.map((m) => m.keyId);
}

/** A key moves between pools in the background after the call that decided it: wait for it. */
export async function untilInPool(region: string, tier: string, keyId: string) {
  for (let i = 0; i < 100; i++) {
    if ((await poolMembers(region, tier)).includes(keyId)) return;
    await new Promise((done) => setTimeout(done, 20));
  }
  throw new Error(`${keyId} never reached the ${region}/${tier} pool`);
}

/** A key that asked for premium, given the record that earns it, once it serves there. */
export async function earnPremium(keyId: string, region = "us") {
  await earnTrackRecord(keyId);
  await untilInPool(region, "premium", keyId);
}

export async function demo(path: string, body?: unknown, method = body === undefined ? "GET" : "POST") {
  const res = await fetch(`${DEMO}${path}`, { method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) throw new Error(`demo ${path}: ${res.status}`);
  return res.json() as Promise<any>;
}

export const demoLog = async () => (await demo("/__demo/log")).requests as { credential: string; path: string; status: number; streamed: boolean; finished: boolean; aborted: boolean; held?: boolean; headerNames: string[] }[];
export const resetDemo = () => demo("/__demo/behaviour", undefined, "DELETE");

/** Remove every key of every seller this file signed in, so a suite starts from an empty marketplace. */
export async function removeAllKeys() {
  if (signedIn.size === 0) await testSeller();
  for (const seller of signedIn.values()) {
    const res = await as(seller, "/api/keys");
    if (res.status === 401 || res.status === 410) continue; // account closed by the test
    const { keys } = (await res.json()) as { keys: KeyView[] };
    for (const k of keys) {
      const del = await as(seller, `/api/keys/${k.keyId}`, { method: "DELETE" });
      if (!del.ok) throw new Error(`removeAllKeys: ${del.status} ${await del.text()}`);
    }
  }
}

/** The test database as its owner (bypasses row-level security): to look behind the API. */
export async function ownerDb<T>(fn: (sql: import("../../core/postgres.ts").Db) => Promise<T>): Promise<T> {
  const { withDb } = await import("../../core/postgres.ts");
  return withDb(env as unknown as { HYPERDRIVE: Hyperdrive }, null, fn);
}

/** A request as the router hands it to a key object: request id, and what the buyer paid. */
export function keyRequest(opts: { paidMicros?: number; requestId?: string } = {}) {
  const requestId = opts.requestId ?? `req_${crypto.randomUUID().replaceAll("-", "")}`;
  return new Request("https://key.internal/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json", "cn2-request-id": requestId, "cn2-paid-micros": String(opts.paidMicros ?? 0) },
    body: chatBody(),
  });
}

/**
 * Wait until a key object has written its batched per-request bookkeeping (it commits at
 * most every PERSIST_MS, objects/seller-key/write-buffer.ts), without forcing the write.
 */
export async function persisted(stub: DurableObjectStub, timeoutMs = 5_000): Promise<void> {
  const started = Date.now();
  const pending = () =>
    runInDurableObject(stub, (instance) => {
      const flag = (instance as unknown as { buffer: { pending: unknown } }).buffer.pending;
      // A renamed field must fail here, not read as "nothing pending".
      if (typeof flag !== "boolean") throw new Error("SellerKey's write buffer has no pending flag");
      return flag;
    });
  while (await pending()) {
    if (Date.now() - started > timeoutMs) throw new Error(`key object did not persist within ${timeoutMs} ms`);
    await new Promise((done) => setTimeout(done, 20));
  }
}
