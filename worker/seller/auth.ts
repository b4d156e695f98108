// Seller sign-in (S1). Production: Supabase Auth issues the JWT and we verify it against
// the project's JWKS. Local: a dev sign-in issues a JWT of the same shape with a local
// key, verified the same way. The session is one essential cookie holding that JWT;
// cookie-authenticated writes need a same-origin request with our CSRF header.
import { createLocalJWKSet, createRemoteJWKSet, importJWK, jwtVerify, SignJWT, type JWK, type JWTPayload, type JWTVerifyGetKey } from "jose";
import * as v from "valibot";
import { publicJwk } from "../../core/dev-signing-key.ts";
import { ApiError } from "../../core/http.ts";
import { devSetting } from "../../core/environment.ts";

export interface AuthEnv {
  /** Supabase project URL; its JWKS is at /auth/v1/.well-known/jwks.json. */
  SUPABASE_URL?: string;
  /** Development only (core/environment.ts): a public JWKS as JSON, trusted instead of Supabase's. */
  AUTH_JWKS?: string;
  /** Expected `iss`; defaults to SUPABASE_URL + /auth/v1. */
  AUTH_ISSUER?: string;
  /** Development only: private ES256 JWK (JSON) for the local dev sign-in. */
  AUTH_DEV_SIGNING_KEY?: string;
  /** "1" opts into development (core/environment.ts); without it the two above are never read. */
  CN2_DEV?: string;
}

export interface SellerIdentity {
  /** The auth user id (Supabase `sub`, a UUID): the seller id everywhere. */
  id: string;
  email: string | null;
  /** GitHub account id when the seller signed in with GitHub (PR1). */
  githubId: string | null;
}

export const SESSION_COOKIE = "__Host-cn2_session";
export const CSRF_HEADER = "cn2-csrf";
const AUDIENCE = "authenticated";
const ALGORITHMS = ["ES256", "RS256"];
export const SESSION_SECONDS = 60 * 60;

const Claims = v.object({
  sub: v.pipe(v.string(), v.uuid()),
  role: v.literal("authenticated"),
  email: v.optional(v.pipe(v.string(), v.email())),
  app_metadata: v.optional(v.looseObject({ provider: v.optional(v.string()) })),
  user_metadata: v.optional(v.looseObject({ provider_id: v.optional(v.string()) })),
});

/** wrangler.toml vars are "" when unset: treat blank as absent. */
const setting = (value: string | undefined) => (value && value.trim() ? value.trim() : undefined);

export const issuerOf = (env: AuthEnv) => {
  const supabase = setting(env.SUPABASE_URL);
  return setting(env.AUTH_ISSUER) ?? (supabase ? `${supabase.replace(/\/+$/, "")}/auth/v1` : "cn2-dev");
};

/**
 * How sellers sign in here: Supabase Auth (production), the local dev sign-in, or nothing,
 * in which case every sign-in flow answers 503 auth_not_configured rather than guessing.
 */
export function authMode(env: AuthEnv): { supabase: boolean; dev: boolean; canVerify: boolean } {
  const supabase = setting(env.SUPABASE_URL) !== undefined;
  const dev = devSignInEnabled(env);
  return { supabase, dev, canVerify: supabase || dev || devSetting(env, "AUTH_JWKS") !== undefined };
}

/** The dev sign-in exists only in development, with a dev signing key. */
export const devSignInEnabled = (env: AuthEnv) => devSetting(env, "AUTH_DEV_SIGNING_KEY") !== undefined;

const keySets = new Map<string, JWTVerifyGetKey>();
function keySet(env: AuthEnv): JWTVerifyGetKey {
  // Production trusts Supabase's keys only: the development keys are not even read there.
  const jwks = setting(devSetting(env, "AUTH_JWKS"));
  const supabase = setting(env.SUPABASE_URL);
  const devKey = setting(devSetting(env, "AUTH_DEV_SIGNING_KEY"));
  const source = jwks ?? supabase ?? devKey ?? "";
  let set = keySets.get(source);
  if (!set) {
    if (jwks) set = createLocalJWKSet(JSON.parse(jwks));
    else if (supabase) set = createRemoteJWKSet(new URL(`${issuerOf(env)}/.well-known/jwks.json`));
    // The dev key's public half, when AUTH_JWKS was not written alongside it.
    else if (devKey) set = createLocalJWKSet({ keys: [publicJwk(JSON.parse(devKey) as JsonWebKey & { kid?: string })] });
    else throw new ApiError("auth_not_configured", "seller sign-in is not configured: set SUPABASE_URL (production) or run `npm start` (dev sign-in)");
    keySets.set(source, set);
  }
  return set;
}

/** A verified seller session: who, and until when (seconds since the epoch). */
export interface SellerSession {
  identity: SellerIdentity;
  expiresAt: number;
}

/** Verify a seller's JWT: signature (asymmetric only, so `alg: none` and HS tokens fail), issuer, audience, expiry. */
export async function verifySellerSession(token: string, env: AuthEnv): Promise<SellerSession> {
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, keySet(env), { issuer: issuerOf(env), audience: AUDIENCE, algorithms: ALGORITHMS, requiredClaims: ["exp", "sub"] }));
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError("unauthorized", "session is invalid or expired; sign in again");
  }
  const claims = v.safeParse(Claims, payload);
  if (!claims.success) throw new ApiError("unauthorized", "token is not a seller session");
  const { sub, email, app_metadata, user_metadata } = claims.output;
  const identity = { id: sub, email: email ?? null, githubId: app_metadata?.provider === "github" ? (user_metadata?.provider_id ?? null) : null };
  return { identity, expiresAt: payload.exp! };
}

export async function verifySellerToken(token: string, env: AuthEnv): Promise<SellerIdentity> {
  return (await verifySellerSession(token, env)).identity;
}

function cookieValue(request: Request, name: string): string | null {
  for (const part of (request.headers.get("cookie") ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

/**
 * The signed-in seller, from `Authorization: Bearer` (CLI) or the session cookie
 * (dashboard). A cookie-authenticated write must come from our own origin and carry the
 * CSRF header, which a cross-site form or script cannot add without our CORS consent.
 */
export async function requireSeller(request: Request, env: AuthEnv): Promise<SellerIdentity> {
  const auth = request.headers.get("authorization");
  if (auth?.startsWith("Bearer ")) return verifySellerToken(auth.slice(7), env);
  const cookie = cookieValue(request, SESSION_COOKIE);
  if (!cookie) throw new ApiError("unauthorized", "sign in first");
  if (request.method !== "GET" && request.method !== "HEAD") {
    const origin = request.headers.get("origin");
    if (origin !== new URL(request.url).origin || request.headers.get(CSRF_HEADER) !== "1") {
      throw new ApiError("csrf_failed", `cookie-authenticated writes must be same-origin and send ${CSRF_HEADER}: 1`);
    }
  }
  return verifySellerToken(cookie, env);
}

export function sessionCookie(token: string, maxAge = SESSION_SECONDS): string {
  return `${SESSION_COOKIE}=${token}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=${maxAge}`;
}

export const clearedSessionCookie = () => `${SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0`;

/** A stable UUID for a dev email, so the same address is the same seller across restarts. */
export async function devUserId(email: string): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`cn2-dev-user:${email.toLowerCase()}`)));
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const hex = [...h.slice(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** Local sign-in: a JWT shaped like Supabase's, only where a dev signing key is configured. */
export async function issueDevToken(env: AuthEnv, email: string, ttlSeconds = SESSION_SECONDS): Promise<string> {
  const devKey = setting(devSetting(env, "AUTH_DEV_SIGNING_KEY"));
  if (!devKey) throw new ApiError("not_found", "dev sign-in is disabled (development only)");
  const jwk = JSON.parse(devKey) as JsonWebKey & { kid?: string };
  const key = await importJWK(jwk, "ES256");
  return new SignJWT({ email, role: AUDIENCE, app_metadata: { provider: "email" }, user_metadata: {} })
    .setProtectedHeader({ alg: "ES256", kid: jwk.kid, typ: "JWT" })
    .setSubject(await devUserId(email))
    .setIssuer(issuerOf(env))
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
    .sign(key);
}
