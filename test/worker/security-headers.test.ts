// PR22: every kind of answer carries the transport and browser hardening headers (HSTS,
// nosniff, no referrer, never framed, a CSP that loads nothing), through the Worker's
// real entry; and production refuses plain HTTP instead of serving it.
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import worker from "../../worker/index.ts";
import type { Env } from "../../core/env.ts";
import { DEV_SETTINGS } from "../../core/environment.ts";
import { SECURITY_HEADERS } from "../../core/http.ts";
import { addKey, call, chat, OPS, removeAllKeys, testSeller } from "./helpers.ts";

function expectSecured(res: Response, what: string) {
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) expect(res.headers.get(name), `${what}: ${name}`).toBe(value);
  expect(res.headers.get("strict-transport-security")).toMatch(/max-age=\d{8,}/);
}

async function direct(e: Env, url: string): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await worker.fetch!(new Request(url) as Request<unknown, IncomingRequestCfProperties>, e, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

describe("PR22: security headers on every kind of route", () => {
  beforeAll(async () => {
    await removeAllKeys();
  });
  afterAll(async () => {
    await removeAllKeys();
  });

  it("PR22: health, public API, statistics, seller API, errors, sign-in redirect, ops, webhooks", async () => {
    const seller = await testSeller();
    const cases: [string, Promise<Response>][] = [
      ["healthz", call("/healthz")],
      ["vault public key", call("/api/vault/public-key")],
      ["public statistics", call("/api/stats")],
      ["seller API 200", call("/api/me", { headers: { authorization: `Bearer ${seller.token}` } })],
      ["seller API 401", call("/api/me")],
      ["unknown /api route", call("/api/nope")],
      ["dev sign-in redirect", call("/auth/dev/sign-in?email=pr22%40example.test", { redirect: "manual" })],
      ["ops 401", call("/ops/pools/openai/us/standard")],
      ["ops 200", call("/ops/pools/openai/us/standard", { headers: { authorization: `Bearer ${OPS}` } })],
      ["stripe webhook bad signature", call("/webhooks/stripe", { method: "POST", body: "{}" })],
      ["unknown provider", call("/nosuch/v1/x", { method: "POST" })],
      ["proxy, no key", chat()],
    ];
    for (const [what, pending] of cases) {
      const res = await pending;
      await res.arrayBuffer();
      expectSecured(res, what);
    }
  });

  it("PR22: proxied answers (402, served, streamed) carry them too", async () => {
    await addKey();
    const paywall = await call("/openai/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(paywall.status).toBe(402);
    expectSecured(paywall, "402");
    await paywall.arrayBuffer();
    const served = await chat();
    expect(served.status).toBe(200);
    expectSecured(served, "served");
    await served.arrayBuffer();
    const streamed = await chat({ stream: true });
    expect(streamed.headers.get("content-type")).toMatch(/event-stream/);
    expectSecured(streamed, "streamed");
    expect((await streamed.text()).length).toBeGreaterThan(0);
  });

  it("PR22: production refuses plain HTTP (development serves it, as wrangler dev must)", async () => {
    const prod: Record<string, unknown> = { ...(env as unknown as Env) };
    delete prod.CN2_DEV;
    for (const name of Object.keys(DEV_SETTINGS)) delete prod[name];
    const plain = await direct(prod as unknown as Env, "http://cn2.test/healthz");
    expect(plain.status).toBe(403);
    expect(((await plain.json()) as { error: { code: string } }).error.code).toBe("https_required");
    expectSecured(plain, "plain http");
    expect((await direct(prod as unknown as Env, "https://cn2.test/healthz")).status).toBe(200);
    expect((await direct(env as unknown as Env, "http://127.0.0.1/healthz")).status).toBe(200);
  });
});
