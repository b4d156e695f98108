// Buyer-facing credit endpoints that need no account: the buyer proves it holds its key
// by signing the request (ACCOUNT_HEADERS; see method.ts). The DID in the header is
// hashed at once into the buyer id (B2) and goes no further. Top-ups need no signature:
// they name the buyer id (a hash), so the principal never even travels.
import { devSetting } from "../../core/environment.ts";
import * as v from "valibot";
import type { Env } from "../../core/env.ts";
import { ApiError, json, parseOr400, readJson } from "../../core/http.ts";
import { BUYER_ID, DidError, parseDid, verifySignature, importVerifyKey } from "../../core/did.ts";
import { fromBase64Url, sha256Hex } from "../../core/encoding.ts";
import { ACCOUNT_HEADERS, ACCOUNT_TOLERANCE_SECONDS, accountMessage } from "../../core/credit-method.ts";
import { walletStub } from "../../objects/buyer-wallet/stub.ts";
import { readSpend } from "../../objects/buyer-wallet/spend.ts";

export const BuyerIdSchema = v.pipe(v.string(), v.regex(BUYER_ID, "buyerId must be 64 lowercase hex characters (SHA-256 of your did:key)"));
const MicrosSchema = v.pipe(v.number(), v.safeInteger("must be a whole number of micro-dollars"), v.minValue(1));

/** Largest faucet grant per call: $100. */
export const FAUCET_MAX_MICROS = 100_000_000;

const FaucetSchema = v.strictObject({ buyerId: BuyerIdSchema, amountMicros: v.pipe(MicrosSchema, v.maxValue(FAUCET_MAX_MICROS, `at most ${FAUCET_MAX_MICROS} micro-dollars per call`)) });
const BudgetSchema = v.strictObject({ dailyCapMicros: v.nullable(v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(1_000_000_000_000))) });

/** POST /api/credit/faucet — free credit in development only (CN2_DEV=1 and DEV_FAUCET=1). */
export async function faucetHandler(request: Request, env: Env): Promise<Response> {
  if (devSetting(env, "DEV_FAUCET") !== "1") throw new ApiError("not_found", "no route for POST /api/credit/faucet");
  const input = parseOr400(FaucetSchema, await readJson(request), "faucet request");
  const result = await walletStub(env, input.buyerId).topUp({ buyerId: input.buyerId, eventId: `faucet:${crypto.randomUUID()}`, amountMicros: input.amountMicros, source: "faucet" });
  if (!result.ok) throw new ApiError("invalid_request", result.message);
  return json({ buyerId: input.buyerId, creditedMicros: input.amountMicros, balanceMicros: result.value.balanceMicros });
}

/** GET /api/credit/balance (signed): balance, daily cap, today's spend, recent history, tracked spend per day. */
export async function balanceHandler(request: Request, env: Env): Promise<Response> {
  const buyerId = await verifyAccountRequest(request, "");
  const summary = await walletStub(env, buyerId).summary(50);
  return json({ ...summary, buyerId, spend: await readSpend(env, buyerId) });
}

/** PUT /api/credit/budget (signed) { dailyCapMicros: number | null }. */
export async function budgetHandler(request: Request, env: Env): Promise<Response> {
  const { buyerId, body } = await readSignedJson(request, 4096);
  const input = parseOr400(BudgetSchema, body, "budget");
  const result = await walletStub(env, buyerId).setDailyCap(buyerId, input.dailyCapMicros);
  if (!result.ok) throw new ApiError("invalid_request", result.message);
  return json({ buyerId, dailyCapMicros: result.value.dailyCapMicros });
}

/** A buyer-signed JSON body: the signature covers the raw text, so read it once, bounded. */
export async function readSignedJson(request: Request, maxBytes: number): Promise<{ buyerId: string; body: unknown }> {
  const length = Number(request.headers.get("content-length") ?? "0");
  if (length > maxBytes) throw new ApiError("body_too_large", `body over ${maxBytes} bytes`);
  const text = await request.text();
  if (text.length > maxBytes) throw new ApiError("body_too_large", `body over ${maxBytes} bytes`);
  const buyerId = await verifyAccountRequest(request, text);
  try {
    return { buyerId, body: JSON.parse(text) };
  } catch {
    throw new ApiError("invalid_json", "body is not valid JSON");
  }
}

/** Why a buyer signature was refused, or the buyer id it proves. */
export type AccountSignature =
  | { ok: true; buyerId: string }
  | { ok: false; reason: "missing" | "stale" | "bad_did" | "bad_signature"; message: string };

/**
 * Check a request signed with a buyer key (ACCOUNT_HEADERS): the signature covers the
 * method, path and query, the time (within ACCOUNT_TOLERANCE_SECONDS of ours) and the
 * body's SHA-256. The DID is hashed at once (B2): only the buyer id comes back.
 */
export async function checkAccountSignature(request: Request, body: string): Promise<AccountSignature> {
  const did = request.headers.get(ACCOUNT_HEADERS.did);
  const time = request.headers.get(ACCOUNT_HEADERS.time);
  const signature = request.headers.get(ACCOUNT_HEADERS.signature);
  if (!did || !time || !signature) return { ok: false, reason: "missing", message: `sign this request with your buyer key (${Object.values(ACCOUNT_HEADERS).join(", ")})` };
  if (!/^\d{1,12}$/.test(time) || Math.abs(Number(time) - Date.now() / 1000) > ACCOUNT_TOLERANCE_SECONDS) {
    return { ok: false, reason: "stale", message: `${ACCOUNT_HEADERS.time} must be the current unix time in seconds (±${ACCOUNT_TOLERANCE_SECONDS}s)` };
  }
  let parsed: ReturnType<typeof parseDid>;
  try {
    parsed = parseDid(did);
  } catch (err) {
    return { ok: false, reason: "bad_did", message: err instanceof DidError ? `${ACCOUNT_HEADERS.did}: ${err.message}` : "bad buyer did" };
  }
  const url = new URL(request.url);
  const message = accountMessage({ method: request.method, pathAndQuery: url.pathname + url.search, time, bodySha256: await sha256Hex(body) });
  let ok = false;
  try {
    ok = await verifySignature(parsed.alg, await importVerifyKey(parsed), fromBase64Url(signature), message);
  } catch {
    ok = false;
  }
  if (!ok) return { ok: false, reason: "bad_signature", message: "the buyer signature does not verify" };
  return { ok: true, buyerId: await sha256Hex(parsed.did) };
}

/** A buyer-signed request's buyer id, or 401 unauthorized. */
export async function verifyAccountRequest(request: Request, body: string): Promise<string> {
  const checked = await checkAccountSignature(request, body);
  if (!checked.ok) throw new ApiError("unauthorized", checked.message);
  return checked.buyerId;
}
