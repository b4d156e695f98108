// Sign-in routes (S1). The session is one essential cookie (`__Host-cn2_session`, HttpOnly,
// Secure, SameSite) holding the seller's JWT; the CLI sends the same JWT as a bearer token.
//
//   POST /auth/session       production: exchange a Supabase access token for the cookie
//   POST /auth/dev/sign-in   dev only: sign in as an email (creates the account), cookie + token
//
// Both POSTs take `account`: "seller" (the default) opens the seller account, "buyer" the
// optional buyer account (B4, worker/buyer-account/) and no seller row. One sign-in (the
// auth user) can hold both; each account is its own row, made on first use.
//   GET  /auth/dev/sign-in?email=   dev only: the link `npm start` prints; signs in, redirects to /
//   POST /auth/sign-out      clears the cookie
//
// With neither Supabase nor a dev key configured, sign-in answers 503 auth_not_configured.
import type { IRequest } from "itty-router";
import * as v from "valibot";
import { asService, DB_ERRORS, sqlState, upsertBuyerAccount, type BuyerAccountRow } from "../../schema/tables.ts";
import { authMode, clearedSessionCookie, CSRF_HEADER, devUserId, issueDevToken, SESSION_SECONDS, sessionCookie, verifySellerSession, type SellerIdentity } from "./auth.ts";
import { withDb, type Db } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { ApiError, json, parseOr400, readJson } from "../../core/http.ts";
import { ensureSeller } from "./profile.ts";

const EmailSchema = v.pipe(v.string(), v.trim(), v.toLowerCase(), v.maxLength(320), v.email("must be an email address"));
/** Which account a sign-in opens: the seller's (default) or the optional buyer account (B4). */
const AccountKind = v.optional(v.picklist(["seller", "buyer"], 'account must be "seller" or "buyer"'), "seller");
const DevSignInSchema = v.strictObject({ email: EmailSchema, account: AccountKind });
const SessionSchema = v.strictObject({ accessToken: v.pipe(v.string(), v.minLength(1), v.maxLength(8192)), account: AccountKind });

/**
 * Sign-in POSTs set a cookie, so they need our CSRF header (a cross-site form cannot send
 * it) and, when the browser names an origin, our own: nobody can sign a victim into an
 * account of the attacker's choosing.
 */
function requireSignInCsrf(request: Request) {
  const origin = request.headers.get("origin");
  if (request.headers.get(CSRF_HEADER) !== "1" || (origin !== null && origin !== new URL(request.url).origin)) {
    throw new ApiError("csrf_failed", `sign-in requests must be same-origin and send ${CSRF_HEADER}: 1`);
  }
}

function requireDevSignIn(env: Env) {
  const mode = authMode(env);
  if (mode.dev) return;
  if (mode.canVerify) throw new ApiError("not_found", "dev sign-in is disabled here; sign in with Supabase and POST /auth/session");
  throw new ApiError("auth_not_configured", "seller sign-in is not configured: set SUPABASE_URL (production) or run `npm start` (dev sign-in)");
}

const publicSeller = (s: { id: string; email: string | null }) => ({ id: s.id, email: s.email });
const publicBuyer = (b: BuyerAccountRow) => ({ id: b.id, email: b.email });

/** The buyer account of a verified sign-in (B4), created on first use; no seller row. */
export async function ensureBuyerAccount(sql: Db, identity: SellerIdentity): Promise<BuyerAccountRow> {
  if (!identity.email) throw new ApiError("unauthorized", "this sign-in carries no email address; a buyer account needs one");
  try {
    return await asService(sql, (tx) => upsertBuyerAccount(tx, identity.id, identity.email!));
  } catch (error) {
    if (sqlState(error) === DB_ERRORS.foreign_key_violation) throw new ApiError("unauthorized", "no such account (it may have been deleted); sign in again");
    if (sqlState(error) === DB_ERRORS.unique_violation) throw new ApiError("conflict", "another buyer account already uses this email");
    throw error;
  }
}

/** Dev: the auth user (our local auth.users) and the buyer account, then a session. */
async function devBuyerSignIn(env: Env, ctx: ExecutionContext, email: string) {
  const id = await devUserId(email);
  const token = await issueDevToken(env, email);
  const session = await verifySellerSession(token, env);
  const buyer = await withDb(env, ctx, async (sql) => {
    await asService(sql, (tx) => tx`insert into auth.users (id, email) values (${id}, ${email}) on conflict (id) do nothing`);
    return ensureBuyerAccount(sql, session.identity);
  });
  return { token, expiresAt: session.expiresAt, buyer };
}

/** Dev: create the auth user (our local auth.users) and the seller, then issue a session. */
async function devSignIn(env: Env, ctx: ExecutionContext, email: string) {
  const id = await devUserId(email);
  const token = await issueDevToken(env, email);
  const session = await verifySellerSession(token, env);
  const seller = await withDb(env, ctx, async (sql) => {
    await asService(sql, (tx) => tx`insert into auth.users (id, email) values (${id}, ${email}) on conflict (id) do nothing`);
    return ensureSeller(sql, session.identity);
  });
  if (seller.deleted_at) throw new ApiError("account_closed", "this seller account is closed");
  return { token, expiresAt: session.expiresAt, seller };
}

export async function devSignInPost(request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> {
  requireDevSignIn(env);
  requireSignInCsrf(request);
  const { email, account } = parseOr400(DevSignInSchema, await readJson(request), "sign-in");
  if (account === "buyer") {
    const { token, expiresAt, buyer } = await devBuyerSignIn(env, ctx, email);
    return json({ token, expiresAt, buyer: publicBuyer(buyer) }, 200, { "set-cookie": sessionCookie(token, SESSION_SECONDS) });
  }
  const { token, expiresAt, seller } = await devSignIn(env, ctx, email);
  return json({ token, expiresAt, seller: publicSeller(seller) }, 200, { "set-cookie": sessionCookie(token, SESSION_SECONDS) });
}

export async function devSignInLink(request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> {
  requireDevSignIn(env);
  const email = parseOr400(EmailSchema, new URL(request.url).searchParams.get("email") ?? "", "email");
  const { token } = await devSignIn(env, ctx, email);
  return new Response(null, { status: 303, headers: { location: "/", "set-cookie": sessionCookie(token, SESSION_SECONDS), "cache-control": "no-store" } });
}

/** Production: the dashboard signs in with supabase-js, then trades the access token for our cookie. */
export async function createSession(request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> {
  if (!authMode(env).canVerify) throw new ApiError("auth_not_configured", "seller sign-in is not configured: set SUPABASE_URL");
  requireSignInCsrf(request);
  const { accessToken, account } = parseOr400(SessionSchema, await readJson(request), "session");
  const session = await verifySellerSession(accessToken, env);
  const maxAge = Math.max(0, session.expiresAt - Math.floor(Date.now() / 1000));
  if (account === "buyer") {
    const buyer = await withDb(env, ctx, (sql) => ensureBuyerAccount(sql, session.identity));
    return json({ buyer: publicBuyer(buyer), expiresAt: session.expiresAt }, 200, { "set-cookie": sessionCookie(accessToken, maxAge) });
  }
  const seller = await withDb(env, ctx, (sql) => ensureSeller(sql, session.identity));
  if (seller.deleted_at) throw new ApiError("account_closed", "this seller account is closed");
  return json({ seller: publicSeller(seller), expiresAt: session.expiresAt }, 200, { "set-cookie": sessionCookie(accessToken, maxAge) });
}

export function signOut(): Response {
  return json({ signedOut: true }, 200, { "set-cookie": clearedSessionCookie() });
}
