// S1: only a JWT signed by our auth issuer, for our audience, unexpired and asymmetric,
// is a seller session; cookie writes also need same-origin + the CSRF header.
import { exportJWK, generateKeyPair, SignJWT, type JWK } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { CSRF_HEADER, issueDevToken, requireSeller, SESSION_COOKIE, sessionCookie, verifySellerToken, type AuthEnv } from "../../worker/seller/auth.ts";
import { ApiError } from "../../core/http.ts";

const ISSUER = "https://project.supabase.test/auth/v1";
let env: AuthEnv;
let signingJwk: JWK;
let otherJwk: JWK;

async function keyPair(kid: string) {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  return { priv: { ...(await exportJWK(privateKey)), kid, alg: "ES256" }, pub: { ...(await exportJWK(publicKey)), kid, alg: "ES256" } };
}

const sub = "5b0c1a43-9d41-4b7e-8a1e-1f6f7f0c2b11";
async function token(opts: { jwk?: JWK; iss?: string; aud?: string; exp?: number; sub?: string; role?: string; alg?: string } = {}) {
  const { importJWK } = await import("jose");
  const key = await importJWK(opts.jwk ?? signingJwk, "ES256");
  return new SignJWT({ role: opts.role ?? "authenticated", email: "a@example.com" })
    .setProtectedHeader({ alg: "ES256", kid: (opts.jwk ?? signingJwk).kid })
    .setSubject(opts.sub ?? sub)
    .setIssuer(opts.iss ?? ISSUER)
    .setAudience(opts.aud ?? "authenticated")
    .setExpirationTime(opts.exp ?? Math.floor(Date.now() / 1000) + 600)
    .sign(key);
}

const b64url = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, "").replaceAll("+", "-").replaceAll("/", "_");

async function refused(p: Promise<unknown>, code = "unauthorized") {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(ApiError);
  expect((err as ApiError).code).toBe(code);
}

beforeAll(async () => {
  const main = await keyPair("main");
  const other = await keyPair("other");
  signingJwk = main.priv;
  otherJwk = other.priv;
  env = { CN2_DEV: "1", AUTH_JWKS: JSON.stringify({ keys: [main.pub] }), AUTH_ISSUER: ISSUER, AUTH_DEV_SIGNING_KEY: JSON.stringify(main.priv) };
});

describe("seller tokens", () => {
  it("accepts a valid token", async () => {
    expect(await verifySellerToken(await token(), env)).toEqual({ id: sub, email: "a@example.com", githubId: null });
  });
  it("refuses expired, wrongly signed, other issuer, other audience, non-seller role, non-uuid subject", async () => {
    await refused(verifySellerToken(await token({ exp: Math.floor(Date.now() / 1000) - 10 }), env));
    await refused(verifySellerToken(await token({ jwk: { ...otherJwk, kid: "main" } }), env));
    await refused(verifySellerToken(await token({ jwk: otherJwk }), env));
    await refused(verifySellerToken(await token({ iss: "https://evil.test/auth/v1" }), env));
    await refused(verifySellerToken(await token({ aud: "anon" }), env));
    await refused(verifySellerToken(await token({ role: "service_role" }), env));
    await refused(verifySellerToken(await token({ sub: "not-a-uuid" }), env));
  });
  it("refuses alg none and a symmetric token", async () => {
    const claims = { sub, role: "authenticated", iss: ISSUER, aud: "authenticated", exp: Math.floor(Date.now() / 1000) + 600 };
    await refused(verifySellerToken(`${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims)}.`, env));
    const hs = await new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode("a-shared-secret-of-enough-length!!"));
    await refused(verifySellerToken(hs, env));
    await refused(verifySellerToken("garbage", env));
  });
  it("the dev sign-in issues the same shape, stable per email", async () => {
    const a = await verifySellerToken(await issueDevToken(env, "dev@example.com"), env);
    const b = await verifySellerToken(await issueDevToken(env, "DEV@example.com"), env);
    expect(a.id).toBe(b.id);
    expect(a.email).toBe("dev@example.com");
    await refused(issueDevToken({ ...env, AUTH_DEV_SIGNING_KEY: undefined }, "x@example.com"), "not_found");
  });
});

describe("session cookie and CSRF", () => {
  const url = "https://cn2.test/api/keys";
  it("PR26: the session cookie is HttpOnly, Secure, SameSite and host-only", () => {
    const c = sessionCookie("t");
    expect(c.startsWith(`${SESSION_COOKIE}=t;`)).toBe(true);
    for (const attr of ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"]) expect(c).toContain(attr);
    expect(c).not.toContain("Domain=");
  });
  it("reads the cookie on reads; writes need same origin and the CSRF header", async () => {
    const cookie = `${SESSION_COOKIE}=${await token()}`;
    expect((await requireSeller(new Request(url, { headers: { cookie } }), env)).id).toBe(sub);
    await refused(requireSeller(new Request(url, { method: "POST", headers: { cookie, origin: "https://cn2.test" } }), env), "csrf_failed");
    await refused(requireSeller(new Request(url, { method: "POST", headers: { cookie, origin: "https://evil.test", [CSRF_HEADER]: "1" } }), env), "csrf_failed");
    expect((await requireSeller(new Request(url, { method: "POST", headers: { cookie, origin: "https://cn2.test", [CSRF_HEADER]: "1" } }), env)).id).toBe(sub);
    // A bearer token (the CLI) is not a cookie: no CSRF exposure.
    expect((await requireSeller(new Request(url, { method: "POST", headers: { authorization: `Bearer ${await token()}` } }), env)).id).toBe(sub);
    await refused(requireSeller(new Request(url), env));
  });
});
