// S1, S3-S5, S7 through the HTTP API: sign-in and the session cookie, and isolation between
// sellers. Seller A can neither read nor change seller B's keys, earnings, payout
// preference or KYC status: another seller's key is a plain 404, never a 403 that would
// confirm it exists. (Row-level security itself is proven in SQL by test/db/rls.test.ts.)
import { env } from "cloudflare:workers";
import { createExecutionContext } from "cloudflare:test";
import { beforeAll, describe, expect, it } from "vitest";
import type { KeyView } from "../../schema/wire.ts";
import { issueDevToken, SESSION_COOKIE } from "../../worker/seller/auth.ts";
import * as authApi from "../../worker/seller/sign-in.ts";
import type { Env } from "../../core/env.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { addKey, as, call, inspect, keyRequest, ownerDb, signIn, type TestSeller } from "./helpers.ts";

const e = env as unknown as Env;

async function errorOf(res: Response) {
  return { status: res.status, code: ((await res.json()) as { error: { code: string } }).error.code };
}

describe("sign-in and the session (S1)", () => {
  it("PR1, PR26: dev sign-in creates the account (email only), sets the one essential cookie and returns the token; /api/me reads it", async () => {
    const email = `Me-${Date.now().toString(36)}@Example.test`;
    const res = await call("/auth/dev/sign-in", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1" }, body: JSON.stringify({ email }) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { token: string; seller: { id: string; email: string } };
    expect(body.seller.email).toBe(email.toLowerCase());
    // Every Set-Cookie line, not the comma-joined header: one cookie, the session's.
    const cookies = res.headers.getSetCookie();
    expect(cookies).toHaveLength(1);
    const cookie = cookies[0]!;
    expect(cookie).toMatch(new RegExp(`^${SESSION_COOKIE}=${body.token};`));
    for (const attr of ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"]) expect(cookie).toContain(attr);
    // The cookie alone is a session for reads.
    const me = await call("/api/me", { headers: { cookie: `${SESSION_COOKIE}=${body.token}` } });
    expect(me.status).toBe(200);
    expect(((await me.json()) as { seller: unknown }).seller).toMatchObject({ id: body.seller.id, email: email.toLowerCase(), displayName: null, githubId: null, statsOptOut: false, kyc: { status: "not_started" } });
    // PR1: the account row holds the email and nothing personal beyond it.
    const [row] = await ownerDb((sql) => sql`select email, display_name, github_id from public.sellers where id = ${body.seller.id}`);
    expect(row).toEqual({ email: email.toLowerCase(), display_name: null, github_id: null });
  });

  it("the sign-in link (printed by npm start) signs in and redirects to /", async () => {
    const res = await call(`/auth/dev/sign-in?email=${encodeURIComponent(`link-${Date.now().toString(36)}@example.test`)}`, { redirect: "manual" });
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/");
    expect(res.headers.getSetCookie()).toEqual([expect.stringMatching(new RegExp(`^${SESSION_COOKIE}=ey`))]);
  });

  it("sign-in POSTs need the CSRF header and our origin", async () => {
    const body = JSON.stringify({ email: `csrf-${Date.now().toString(36)}@example.test` });
    expect(await errorOf(await call("/auth/dev/sign-in", { method: "POST", headers: { "content-type": "application/json" }, body }))).toEqual({ status: 403, code: "csrf_failed" });
    expect(await errorOf(await call("/auth/dev/sign-in", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1", origin: "https://evil.test" }, body }))).toEqual({ status: 403, code: "csrf_failed" });
    expect(await errorOf(await call("/auth/session", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ accessToken: "x" }) }))).toEqual({ status: 403, code: "csrf_failed" });
  });

  it("POST /auth/session trades a verified token for the cookie; a bad one is refused", async () => {
    const seller = await signIn("session");
    const ok = await call("/auth/session", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1", origin: "https://cn2.test" }, body: JSON.stringify({ accessToken: seller.token }) });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("set-cookie")).toContain(`${SESSION_COOKIE}=${seller.token};`);
    const bad = await call("/auth/session", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1" }, body: JSON.stringify({ accessToken: `${seller.token}x` }) });
    expect(await errorOf(bad)).toEqual({ status: 401, code: "unauthorized" });
  });

  it("an expired session cookie is 401; a cookie write without the CSRF header is 403", async () => {
    const seller = await signIn("cookie");
    const expired = await issueDevToken(e, seller.email, -60);
    expect(await errorOf(await call("/api/keys", { headers: { cookie: `${SESSION_COOKIE}=${expired}` } }))).toEqual({ status: 401, code: "unauthorized" });
    const cookie = `${SESSION_COOKIE}=${seller.token}`;
    expect((await call("/api/keys", { headers: { cookie } })).status).toBe(200);
    const write = { method: "PUT", headers: { cookie, "content-type": "application/json" }, body: JSON.stringify({ method: "stripe_connect", stripeAccountId: "acct_1CookieTest0001" }) };
    expect(await errorOf(await call("/api/payout", write))).toEqual({ status: 403, code: "csrf_failed" });
    expect(await errorOf(await call("/api/payout", { ...write, headers: { ...write.headers, "cn2-csrf": "1", origin: "https://evil.test" } }))).toEqual({ status: 403, code: "csrf_failed" });
    const good = await call("/api/payout", { ...write, headers: { ...write.headers, "cn2-csrf": "1", origin: "https://cn2.test" } });
    expect(good.status).toBe(200);
  });

  it("sign-out clears the cookie", async () => {
    const res = await call("/auth/sign-out", { method: "POST" });
    expect(res.headers.get("set-cookie")).toMatch(new RegExp(`^${SESSION_COOKIE}=;.*Max-Age=0`));
  });

  it("without Supabase or a dev key, sign-in refuses with a clear 503", async () => {
    const bare = { ...e, SUPABASE_URL: "", AUTH_JWKS: "", AUTH_DEV_SIGNING_KEY: "" } as Env;
    const post = new Request("https://cn2.test/auth/dev/sign-in", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1" }, body: JSON.stringify({ email: "x@example.test" }) });
    await expect(authApi.devSignInPost(post as never, bare, createExecutionContext())).rejects.toMatchObject({ code: "auth_not_configured", status: 503 });
    const session = new Request("https://cn2.test/auth/session", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1" }, body: JSON.stringify({ accessToken: "x" }) });
    await expect(authApi.createSession(session as never, bare, createExecutionContext())).rejects.toMatchObject({ code: "auth_not_configured", status: 503 });
    // A deployment never offers the dev sign-in, whatever its secrets say.
    await expect(authApi.devSignInPost(post.clone() as never, { ...e, CN2_DEV: undefined } as Env, createExecutionContext())).rejects.toMatchObject({ code: "not_found" });
  });
});

describe("seller A cannot reach seller B's data through the API", () => {
  let a: TestSeller;
  let b: TestSeller;
  let bKey: string;

  beforeAll(async () => {
    a = await signIn("alice");
    b = await signIn("bob");
    bKey = (await addKey({ seller: b, config: { priceMicros: 1000 } })).keyId;
  });

  it("keys: B's key is invisible to A and A's edits, pauses and removal of it are 404", async () => {
    await addKey({ seller: a });
    const aList = (await (await as(a, "/api/keys")).json()) as { keys: KeyView[] };
    expect(aList.keys.map((k) => k.keyId)).not.toContain(bKey);
    expect(aList.keys.every((k) => k.sellerId === a.id)).toBe(true);
    expect(await errorOf(await as(a, `/api/keys/${bKey}`))).toEqual({ status: 404, code: "key_not_found" });
    expect(await errorOf(await as(a, `/api/keys/${bKey}`, { method: "PATCH", json: { priceMicros: 1 } }))).toEqual({ status: 404, code: "key_not_found" });
    expect(await errorOf(await as(a, `/api/keys/${bKey}/pause`, { method: "POST" }))).toEqual({ status: 404, code: "key_not_found" });
    expect(await errorOf(await as(a, `/api/keys/${bKey}`, { method: "DELETE" }))).toEqual({ status: 404, code: "key_not_found" });
    // Same answer as for a key that does not exist at all.
    expect(await errorOf(await as(a, "/api/keys/k_nosuchkey00000"))).toEqual({ status: 404, code: "key_not_found" });
    // Nothing changed for B: config, status, object, pool.
    const bView = ((await (await as(b, `/api/keys/${bKey}`)).json()) as { key: KeyView }).key;
    expect(bView.config).toMatchObject({ priceMicros: 1000, status: "active" });
    expect((await inspect(bKey)).config).toMatchObject({ priceMicros: 1000, status: "active" });
  });

  it("keys: A cannot create a key under B's id or take over B's key id (refused as not A's id, never as existing)", async () => {
    const res = await as(a, "/api/keys", { method: "POST", json: { keyId: bKey, envelope: { v: 1, kid: "x", epk: { kty: "EC", crv: "P-256", x: "a", y: "b" }, salt: "A".repeat(22), iv: "A".repeat(16), ct: "AA" }, config: { provider: "openai", priceMicros: 1, requestsPerMinute: 1, maxConcurrent: 1, region: "us" } } });
    expect(await errorOf(res)).toEqual({ status: 400, code: "invalid_key_id" });
    expect((await inspect(bKey)).sellerId).toBe(b.id);
  });

  it("pause and resume act on the seller's own key, in Postgres, the object and the pool", async () => {
    const paused = await as(b, `/api/keys/${bKey}/pause`, { method: "POST" });
    expect(((await paused.json()) as { key: KeyView }).key.config.status).toBe("paused");
    expect((await inspect(bKey)).config.status).toBe("paused");
    const [row] = await ownerDb((sql) => sql`select status from public.keys where key_id = ${bKey}`);
    expect(row!.status).toBe("paused");
    const resumed = await as(b, `/api/keys/${bKey}/resume`, { method: "POST" });
    expect(((await resumed.json()) as { key: KeyView }).key.config.status).toBe("active");
    expect((await inspect(bKey)).config.status).toBe("active");
  });

  it("earnings: A's balance and history never include B's", async () => {
    await keyStub(e, bKey, "default").fetch(keyRequest({ paidMicros: 1000 }));
    const flushed = await keyStub(e, bKey, "default").flushEarnings();
    expect(flushed).toMatchObject({ ok: true, value: { flushed: true } });
    const bEarn = (await (await as(b, "/api/earnings")).json()) as { balance: { earnedMicros: number }; history: { keyId: string }[] };
    expect(bEarn.balance.earnedMicros).toBe(900);
    expect(bEarn.history.map((h) => h.keyId)).toEqual([bKey]);
    const aEarn = (await (await as(a, "/api/earnings")).json()) as { balance: { earnedMicros: number; availableMicros: number }; history: unknown[] };
    expect(aEarn).toMatchObject({ balance: { earnedMicros: 0, availableMicros: 0 }, history: [] });
    const aExport = JSON.stringify(await (await as(a, "/api/export")).json());
    expect(aExport).not.toContain(bKey);
  });

  it("payout preferences: each seller reads and writes only its own", async () => {
    expect((await as(b, "/api/payout", { method: "PUT", json: { method: "stripe_connect", stripeAccountId: "acct_1BobAccount0001" } })).status).toBe(200);
    expect(((await (await as(a, "/api/payout")).json()) as { preference: unknown }).preference).toBeNull();
    expect((await as(a, "/api/payout", { method: "PUT", json: { method: "usdc_tempo", evmAddress: "0x52908400098527886e0f7030069857d2e4169ee7" } })).status).toBe(200);
    expect(((await (await as(b, "/api/payout")).json()) as { preference: unknown }).preference).toMatchObject({ method: "stripe_connect", stripeAccountId: "acct_1BobAccount0001" });
    expect(((await (await as(a, "/api/payout")).json()) as { preference: unknown }).preference).toMatchObject({ method: "usdc_tempo", evmAddress: "0x52908400098527886E0F7030069857D2E4169EE7" });
  });

  it("KYC: A's verification never changes B's status, and neither can start the other's", async () => {
    const started = await as(a, "/api/kyc/start", { method: "POST" });
    expect(started.status).toBe(201);
    expect(((await (await as(a, "/api/me")).json()) as { seller: { kyc: { status: string } } }).seller.kyc.status).toBe("pending");
    expect(((await (await as(b, "/api/me")).json()) as { seller: { kyc: { status: string } } }).seller.kyc.status).toBe("not_started");
    expect(((await (await as(b, "/api/payout")).json()) as { kyc: string; payoutsLocked: boolean })).toMatchObject({ kyc: "not_started", payoutsLocked: true });
  });
});

describe("payout preferences are validated (S4, PR6)", () => {
  it("PR6: Stripe account ids and EVM addresses are checked; the address is stored checksummed", async () => {
    const s = await signIn("payout");
    const put = (json: unknown) => as(s, "/api/payout", { method: "PUT", json });
    for (const bad of [
      { method: "stripe_connect", stripeAccountId: "acct_short" },
      { method: "stripe_connect", stripeAccountId: "ba_1234567890abcdef" },
      { method: "stripe_connect", stripeAccountId: "acct_1234567890", iban: "DE89370400440532013000" },
      { method: "usdc_tempo", evmAddress: "0x52908400098527886E0F7030069857D2E4169Ee7" }, // checksum broken
      { method: "usdc_tempo", evmAddress: "0x0000000000000000000000000000000000000000" },
      { method: "usdc_tempo", evmAddress: "52908400098527886e0f7030069857d2e4169ee7" },
      { method: "paypal", email: "x@example.test" },
    ]) {
      expect(await errorOf(await put(bad)), JSON.stringify(bad)).toEqual({ status: 400, code: "invalid_request" });
    }
    expect(((await (await as(s, "/api/payout")).json()) as { preference: unknown }).preference).toBeNull();
    const ok = await put({ method: "usdc_tempo", evmAddress: "0x52908400098527886E0F7030069857D2E4169EE7" });
    expect(((await ok.json()) as { preference: { evmAddress: string } }).preference.evmAddress).toBe("0x52908400098527886E0F7030069857D2E4169EE7");
    // Correction (S9): the same call replaces it.
    const changed = await put({ method: "stripe_connect", stripeAccountId: "acct_1Corrected00001" });
    expect(((await changed.json()) as { preference: unknown }).preference).toMatchObject({ method: "stripe_connect", stripeAccountId: "acct_1Corrected00001", evmAddress: null });
  });
});
