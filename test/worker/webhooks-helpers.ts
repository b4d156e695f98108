// Steps shared by the webhook suites: sign a seller in, call the webhook API as them,
// drive the loopback receiver (test/webhook-receiver.ts), query the database as its owner.
import { env } from "cloudflare:workers";
import { expect } from "vitest";
import { connectDb, type Db } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import type { ReceivedDelivery } from "../webhook-receiver.ts";
import type { DeliveryView, EndpointView } from "../../worker/webhooks/storage.ts";
import { call } from "./helpers.ts";

export const testEnv = env as unknown as Env & { WEBHOOK_RECEIVER_URL: string };
export const RECEIVER = testEnv.WEBHOOK_RECEIVER_URL;

export interface TestSeller {
  id: string;
  email: string;
  token: string;
}

let n = 0;
/** A fresh seller through the dev sign-in (creates the account). */
export async function signIn(label = "seller"): Promise<TestSeller> {
  const email = `wh-${label}-${Date.now().toString(36)}${(n++).toString(36)}@example.test`;
  const res = await call("/auth/dev/sign-in", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1" }, body: JSON.stringify({ email }) });
  if (res.status !== 200) throw new Error(`sign-in failed: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { token: string; seller: { id: string } };
  return { id: body.seller.id, email, token: body.token };
}

/** Call the API as `seller` (bearer token, as the CLI does). */
export function as(seller: TestSeller, path: string, init: RequestInit & { json?: unknown } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${seller.token}`);
  if (init.json !== undefined) headers.set("content-type", "application/json");
  return call(path, { ...init, headers, body: init.json !== undefined ? JSON.stringify(init.json) : init.body });
}

export async function createHook(seller: TestSeller, url: string, events?: string[]): Promise<{ webhook: EndpointView; secret: string }> {
  const res = await as(seller, "/api/webhooks", { method: "POST", json: events ? { url, events } : { url } });
  if (res.status !== 201) throw new Error(`create webhook failed: ${res.status} ${await res.text()}`);
  return res.json() as Promise<{ webhook: EndpointView; secret: string }>;
}

export async function deliveriesOf(seller: TestSeller, endpointId: string): Promise<DeliveryView[]> {
  const res = await as(seller, `/api/webhooks/${endpointId}/deliveries`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { deliveries: DeliveryView[] }).deliveries;
}

let hookCounter = 0;
/** A receiver path of its own, configured: `${RECEIVER}/hooks/<name>`. */
export async function receiverHook(config: { secret?: string; failTimes?: number; failStatus?: number; delayMs?: number; redirectTo?: string } = {}) {
  const name = `h${Date.now().toString(36)}${(hookCounter++).toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  await configureHook(name, config);
  return { name, url: `${RECEIVER}/hooks/${name}` };
}

export async function configureHook(name: string, config: object) {
  const res = await fetch(`${RECEIVER}/__receiver/hooks/${name}`, { method: "PUT", body: JSON.stringify(config) });
  expect(res.status).toBe(200);
}

export async function received(name: string): Promise<ReceivedDelivery[]> {
  const res = await fetch(`${RECEIVER}/__receiver/hooks/${name}`);
  return ((await res.json()) as { deliveries: ReceivedDelivery[] }).deliveries;
}

/** Poll until `check` returns a value (not undefined/false), or fail after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The database as its owner (the test's own client; ended by the caller). */
export function ownerDb(): Db {
  return connectDb(testEnv, 1);
}
