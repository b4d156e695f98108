// M6: production fails closed. The Worker's real entry (worker/index.ts) is given the
// production configuration (the test bindings without CN2_DEV and every development
// setting), then that configuration plus any single development setting. Production
// serves without them; with one, every request is refused with 503 `misconfigured` that
// names the setting and never its value; and each development path (faucet, dev sign-in,
// dev-key sessions, loopback webhooks, base-URL overrides) refuses on its own too, so the
// two guards do not lean on each other.
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../worker/index.ts";
import type { Env } from "../../core/env.ts";
import { DEV_SETTINGS, devSetting, misconfiguration, type DevSetting } from "../../core/environment.ts";
import { upstreamOverrides } from "../../core/settings.ts";
import { authMode, issueDevToken, verifySellerToken } from "../../worker/seller/auth.ts";
import { checkWebhookUrl, urlPolicy } from "../../worker/webhooks/url.ts";
import { tinybirdBase } from "../../worker/analytics/tinybird.ts";
import { PROXY, OPS, addKey, removeAllKeys } from "./helpers.ts";

const dev = env as unknown as Env;
const NAMES = Object.keys(DEV_SETTINGS) as DevSetting[];

/** The test configuration as production would have it: no CN2_DEV, no development setting. */
function production(extra: Partial<Record<DevSetting | "PROXY_TOKEN", string>> = {}): Env {
  const prod: Record<string, unknown> = { ...dev };
  delete prod.CN2_DEV;
  for (const name of NAMES) delete prod[name];
  delete prod.PROXY_TOKEN;
  return { ...prod, ...extra } as Env;
}

async function send(e: Env, path: string, init: RequestInit = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await worker.fetch!(new Request(`https://cn2.test${path}`, init) as Request<unknown, IncomingRequestCfProperties>, e, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

const CHAT = { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] }) };

/** The value each setting would have in development (what `npm start` or the tests set). */
const DEV_VALUES: Record<DevSetting, string> = {
  DEV_FAUCET: "1",
  AUTH_DEV_SIGNING_KEY: dev.AUTH_DEV_SIGNING_KEY!,
  AUTH_JWKS: dev.AUTH_JWKS!,
  DEV_WEBHOOKS_ALLOW_HTTP: "1",
  UPSTREAM_BASE_URLS: dev.UPSTREAM_BASE_URLS!,
  STRIPE_API_BASE: dev.STRIPE_API_BASE!,
  PERSONA_API_BASE: dev.PERSONA_API_BASE!,
  TINYBIRD_API_BASE: dev.TINYBIRD_API_BASE!,
};

describe("production fails closed (M6)", () => {
  it("the production configuration serves, and its development paths are off", async () => {
    const prod = production();
    expect(misconfiguration(prod)).toBeNull();
    expect((await send(prod, "/healthz")).status).toBe(200);
    // The faucet does not exist.
    const faucet = await send(prod, "/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(faucet.status).toBe(404);
    // No dev sign-in.
    const signIn = await send(prod, "/auth/dev/sign-in", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1" }, body: JSON.stringify({ email: "a@example.test" }) });
    expect(signIn.status).not.toBe(200);
    // A proxy call is paid: no token makes it free.
    await removeAllKeys();
    await addKey();
    expect((await send(prod, "/openai/v1/chat/completions", CHAT)).status).toBe(402);
    await removeAllKeys();
  });

  for (const name of NAMES) {
    it(`production + ${name} refuses every request and says why, without the value`, async () => {
      const e = production({ [name]: DEV_VALUES[name] });
      for (const [path, init] of [["/healthz", {}], ["/openai/v1/chat/completions", CHAT], ["/api/credit/faucet", { method: "POST", body: "{}" }], ["/auth/dev/sign-in?email=a%40example.test", {}]] as const) {
        const res = await send(e, path, init);
        expect(res.status).toBe(503);
        const text = await res.text();
        const body = JSON.parse(text) as { error: { code: string; message: string } };
        expect(body.error.code).toBe("misconfigured");
        expect(body.error.message).toContain(name);
        expect(body.error.message).toContain(DEV_SETTINGS[name]);
        // Names only: a secret (the dev signing key, the JWKS) never comes back.
        if (DEV_VALUES[name].length > 1) expect(text).not.toContain(DEV_VALUES[name]);
      }
    });
  }

  it("each development path refuses on its own outside development", async () => {
    const all = production(DEV_VALUES);
    for (const name of NAMES) expect(devSetting(all, name)).toBeUndefined();
    // Base-URL overrides: the providers' own hosts.
    expect(upstreamOverrides(all)).toEqual({});
    expect(Object.keys(upstreamOverrides(dev)).length).toBeGreaterThan(0);
    // The analytics sink: Tinybird's production host, never the loopback fake.
    expect(tinybirdBase(all)).toBe("https://api.tinybird.co");
    expect(tinybirdBase(dev)).toBe(dev.TINYBIRD_API_BASE);
    // Loopback webhooks.
    expect(urlPolicy(all)).toEqual({ allowHttp: false, allowLoopback: false });
    expect(checkWebhookUrl("http://127.0.0.1:9/hook", urlPolicy(all)).ok).toBe(false);
    expect(checkWebhookUrl("http://127.0.0.1:9/hook", urlPolicy(dev)).ok).toBe(true);
    // Dev sign-in and sessions made by the dev key.
    expect(authMode(all).dev).toBe(false);
    await expect(issueDevToken(all, "a@example.test")).rejects.toMatchObject({ code: "not_found" });
    const devToken = await issueDevToken(dev, "a@example.test");
    expect((await verifySellerToken(devToken, dev)).email).toBe("a@example.test");
    // Production trusts Supabase's keys only (the tests' fake Supabase here), never the dev key's.
    await expect(verifySellerToken(devToken, all)).rejects.toMatchObject({ code: "unauthorized" });
    const noSupabase = { ...all, SUPABASE_URL: "" } as Env;
    await expect(verifySellerToken(devToken, noSupabase)).rejects.toMatchObject({ code: "auth_not_configured" });
  });

  it("a dev-key session cookie opens nothing in production", async () => {
    const devToken = await issueDevToken(dev, "cookie@example.test");
    const res = await send(production(), "/api/me", { headers: { cookie: `__Host-cn2_session=${devToken}` } });
    expect([401, 503]).toContain(res.status);
    expect(((await res.json()) as { error: { code: string } }).error.code).toMatch(/unauthorized|auth_not_configured/);
  });
});

describe("the ops token is not a proxy token", () => {
  it("unpaid proxy calls need PROXY_TOKEN; the ops token pays like anyone, and production may have no proxy token at all", async () => {
    await removeAllKeys();
    await addKey();
    const withHeader = (headers: Record<string, string>) => ({ ...CHAT, headers: { ...CHAT.headers, ...headers } });
    expect((await send(dev, "/openai/v1/chat/completions", withHeader({ "cn2-proxy-token": PROXY }))).status).toBe(200);
    expect((await send(dev, "/openai/v1/chat/completions", withHeader({ authorization: `Bearer ${OPS}` }))).status).toBe(402);
    expect((await send(dev, "/openai/v1/chat/completions", withHeader({ "cn2-ops-token": OPS }))).status).toBe(402);
    expect((await send(dev, "/openai/v1/chat/completions", withHeader({ "cn2-proxy-token": OPS }))).status).toBe(401);
    // Production without PROXY_TOKEN: no unpaid proxy at all.
    const res = await send(production(), "/openai/v1/chat/completions", withHeader({ "cn2-proxy-token": PROXY }));
    expect(res.status).toBe(401);
    // The ops token still opens ops routes.
    expect((await send(dev, "/ops/pools/openai/us/standard", { headers: { authorization: `Bearer ${OPS}` } })).status).toBe(200);
    await removeAllKeys();
  });
});
