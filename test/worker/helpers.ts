// Shared steps for the workerd suites: make keys through the real API (the envelope is
// encrypted here, as a seller's device would), call the proxy, drive the demo upstream.
import { env, exports } from "cloudflare:workers";
import type { KeyConfigInput, KeyInspection, KeyView } from "../../schema/wire.ts";
import { encryptCredential, parseVaultPrivateKeys, publicKeysOf } from "../../worker/vault.ts";

export const OPS = "test-ops-token";
const testEnv = env as unknown as { DEMO_UPSTREAM_URL: string; VAULT_PRIVATE_KEYS: string };
export const DEMO = testEnv.DEMO_UPSTREAM_URL;

export const worker = () => (exports as unknown as { default: Fetcher }).default;

export function call(path: string, init: RequestInit = {}): Promise<Response> {
  return worker().fetch(`https://cn2.test${path}`, init);
}

export function api(path: string, init: RequestInit & { json?: unknown } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${OPS}`);
  if (init.json !== undefined) headers.set("content-type", "application/json");
  return call(path, { ...init, headers, body: init.json !== undefined ? JSON.stringify(init.json) : init.body });
}

let counter = 0;
export const newKeyId = () => `k_${(Date.now().toString(36) + (counter++).toString(36).padStart(4, "0") + Math.random().toString(36).slice(2, 8)).slice(0, 24)}`;

export const baseConfig = (over: Partial<KeyConfigInput> = {}): KeyConfigInput => ({
  provider: "openai", priceMicros: 1000, requestsPerMinute: 1000, maxConcurrent: 50, region: "us", tier: "standard", ...over,
});

export async function addKey(opts: { config?: Partial<KeyConfigInput>; credential?: string; sellerId?: string; keyId?: string } = {}) {
  const keyId = opts.keyId ?? newKeyId();
  const sellerId = opts.sellerId ?? "seller_test";
  const credential = opts.credential ?? `sk-demo-${keyId}`;
  const [current] = publicKeysOf(parseVaultPrivateKeys(testEnv.VAULT_PRIVATE_KEYS));
  const envelope = await encryptCredential(credential, current!, { sellerId, keyId });
  const res = await api("/api/keys", { method: "POST", json: { keyId, sellerId, envelope, config: baseConfig(opts.config) } });
  if (res.status !== 201) throw new Error(`addKey failed: ${res.status} ${await res.text()}`);
  const { key } = (await res.json()) as { key: KeyView };
  return { keyId, credential, sellerId, key };
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
    headers: { "content-type": "application/json", "cn2-ops-token": OPS, ...opts.headers },
    body: chatBody(opts.stream),
    signal: opts.signal,
  });
}

export async function demo(path: string, body?: unknown, method = body === undefined ? "GET" : "POST") {
  const res = await fetch(`${DEMO}${path}`, { method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) throw new Error(`demo ${path}: ${res.status}`);
  return res.json() as Promise<any>;
}

export const demoLog = async () => (await demo("/__demo/log")).requests as { credential: string; path: string; status: number; streamed: boolean; finished: boolean; aborted: boolean }[];
export const resetDemo = () => demo("/__demo/behaviour", undefined, "DELETE");

/** Remove every key so a suite starts from an empty marketplace. */
export async function removeAllKeys() {
  const { keys } = (await (await api("/api/keys")).json()) as { keys: KeyView[] };
  for (const k of keys) await api(`/api/keys/${k.keyId}`, { method: "DELETE" });
}
