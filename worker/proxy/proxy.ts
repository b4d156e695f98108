// The buyer-facing proxy (P1, P2, B3, B6): validate, pick keys, hand the request to a key
// object, fail over while no byte has reached the buyer, stream the answer back; a paid
// answer goes out only once its first bytes are in hand (startedAnswer).
import * as v from "valibot";
import { isProviderId, PROVIDERS, type Provider } from "../../schema/providers.ts";
import { H, RETRYABLE, TierSchema, type ErrorCode } from "../../schema/wire.ts";
import type { Env } from "../../core/env.ts";
import { ApiError, errorResponse, splitUrl } from "../../core/http.ts";
import { keyRequestHeaders } from "../../core/forward.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { cachedPools, localLoad, readPools, routeCandidates, trackLoad } from "./pools.ts";
import type { Payment } from "../payments/index.ts";
import { buyerRegions, isEuCountry, type Candidate } from "./routing.ts";
import { startedAnswer } from "./started.ts";

/** At most this many keys are tried for one request. */
const MAX_ATTEMPTS = 3;
/** Total size of request headers we accept (names + values). */
const MAX_HEADER_BYTES = 32 * 1024;
/** Request bodies are held in memory so a failover can resend them. */
export const MAX_BODY_BYTES = 10 * 1024 * 1024;

/** Payments (mppx) load on the first paid request: the operator path never needs them. */
const payments = () => import("../payments/index.ts");

const MaxPrice = v.pipe(v.string(), v.regex(/^\d{1,15}$/));

export interface ProxyTarget {
  provider: keyof typeof PROVIDERS;
  /** The provider's own path, e.g. /v1/chat/completions. */
  path: string;
}

export function parseTarget(pathname: string): ProxyTarget {
  const match = /^\/([^/]+)(\/.*)?$/.exec(pathname);
  const provider = match?.[1] ?? "";
  if (!isProviderId(provider)) throw new ApiError("unknown_provider", `unknown provider "${provider.slice(0, 40)}"; known: openai, anthropic, google, groq`);
  return { provider, path: match?.[2] ?? "/" };
}

/**
 * `operator`: the request carries the ops token; it is served unpaid and earns nothing
 * (health checks, benchmarks). Everyone else pays per request over MPP.
 */
export async function proxy(request: Request, env: Env, requestId: string, operator: boolean): Promise<Response> {
  const { pathname, search } = splitUrl(request.url);
  const { provider, path } = parseTarget(pathname);

  let headerBytes = 0;
  for (const [name, value] of request.headers) headerBytes += name.length + value.length;
  if (headerBytes > MAX_HEADER_BYTES) throw new ApiError("headers_too_large", `request headers exceed ${MAX_HEADER_BYTES} bytes`);

  const tierHeader = request.headers.get(H.tier);
  const tier = tierHeader === null ? "standard" : v.is(TierSchema, tierHeader) ? tierHeader : null;
  if (tier === null) throw new ApiError("invalid_tier", `${H.tier} must be standard, premium or economy`);
  const maxHeader = request.headers.get(H.maxPrice);
  if (maxHeader !== null && !v.is(MaxPrice, maxHeader)) throw new ApiError("invalid_max_price", `${H.maxPrice} must be a whole number of micro-dollars`);
  const maxPrice = maxHeader === null ? null : Number(maxHeader);

  // The edge country is used for this decision only and never stored (PR10).
  const country = (request.cf?.country as string | undefined) ?? request.headers.get("cf-ipcountry");
  const regions = buyerRegions(country);
  const snapshots = cachedPools(env, provider, regions, tier) ?? (await readPools(env, provider, regions, tier));
  const candidates = routeCandidates(snapshots, { method: request.method, path, regions, now: Date.now() }, `${provider}:${tier}`);
  const capped = candidates.within(maxPrice);
  if (capped.length === 0) {
    if (maxPrice !== null && candidates.within(null).length > 0) throw new ApiError("price_cap_too_low", `no ${provider} key is priced at or below ${maxPrice} micro-dollars for this route`);
    if (isEuCountry(country)) throw new ApiError("no_eu_key_available", `no EU-hosted ${provider} key is available in the ${tier} tier; EU buyers are served by EU keys only`);
    throw new ApiError("no_key_available", `no ${provider} key is available in the ${tier} tier`);
  }

  const body = await bufferBody(request);
  // B1: the quote is the cheapest key this buyer could be served by; the credential is
  // scoped to this method and route, so it cannot pay for anything else.
  const route = `${request.method} /${provider}${path}`;
  if (operator) return serve(env, request, { provider, path, search, body, requestId, route, quote: 0, maxPrice, candidates }, null);
  const { challengeResponse, charge, chargePass, hasPaymentCredential, passProof, paymentDone } = await payments();
  const quote = capped[0]!.price;
  const signed = hasPaymentCredential(request);
  const pass = signed ? null : passProof(request);
  if (!signed && pass === null) return challengeResponse(request, env, { amountMicros: quote, route }, requestId);
  const charged = pass !== null ? await chargePass(env, pass, { amountMicros: quote, route }, requestId) : await charge(request, env, route, requestId);
  if (!charged.ok) return charged.response;
  try {
    return await serve(env, request, { provider, path, search, body, requestId, route, quote, maxPrice, candidates }, charged.payment);
  } finally {
    // A tab draw is settled whatever happened here (a refund has already settled it).
    paymentDone(env, charged.payment);
  }
}

interface Serving {
  provider: keyof typeof PROVIDERS;
  path: string;
  search: string;
  body: ArrayBuffer | null;
  requestId: string;
  route: string;
  quote: number;
  maxPrice: number | null;
  candidates: ReturnType<typeof routeCandidates>;
}

/** Try the keys in order for a request (paid, or the operator's when `payment` is null), then settle the payment. */
async function serve(env: Env, request: Request, s: Serving, payment: Payment | null): Promise<Response> {
  const { provider, path, search, body, requestId, route, quote, maxPrice, candidates } = s;
  let limit = maxPrice;
  if (payment !== null) {
    const { challengeResponse } = await payments();
    const paid = payment.amountMicros;
    limit = maxPrice === null ? paid : Math.min(paid, maxPrice);
    if (candidates.within(limit).length === 0) {
      await safeRefund(env, payment, "prices_rose", requestId);
      return challengeResponse(request, env, { amountMicros: quote, route }, requestId, { code: "payment_required", detail: `prices rose since the challenge; your ${paid} micro-dollars were refunded; pay the new quote` });
    }
  }

  const order: Candidate[] = candidates.order(limit, localLoad, Math.random, MAX_ATTEMPTS);
  const tab = payment === null ? "" : (await payments()).tabHeader(payment);
  const refusals: Response[] = [];
  let answer: Response | null = null;
  let chargeStands = false;
  for (const key of order) {
    const res = await tryKey(env, PROVIDERS[provider], key, request, search, path, body, requestId, payment?.amountMicros ?? 0, tab);
    // A served answer carries no refusal code (SellerKey drops any cn2- header an upstream sends).
    const code = res.headers.get(H.refusal) as ErrorCode | null;
    if (code === null) {
      if (payment === null || res.status >= 400 || res.body === null) {
        answer = res;
        break;
      }
      // B6: a paid answer is charged once it has started. Its first bytes are read here,
      // before anything is sent: one that broke off before them never reached the buyer,
      // so the key's earning is reversed and it counts as this key's failure.
      const started = await startedAnswer(res);
      if (started !== null) {
        answer = started;
        break;
      }
      if (!(await undeliver(env, key, requestId))) {
        // Nothing to reverse (the earning already went to the ledger, or the key could not
        // be reached): the charge stands, so the books do; the receipt is the dispute trail.
        answer = errorResponse("upstream_error", "the answer broke off before its first byte and its charge could not be reversed; dispute it with this receipt", { requestId });
        chargeStands = true;
        break;
      }
      refusals.push(errorResponse("upstream_error", "the answer broke off before its first byte", { requestId, headers: { [H.refusal]: "upstream_error" } }));
      if (request.signal.aborted) break;
      continue;
    }
    if (!RETRYABLE.has(code)) {
      answer = res;
      break;
    }
    refusals.push(res);
    if (request.signal.aborted) break;
  }
  answer ??= combineRefusals(refusals, requestId);
  return payment ? settle(env, request, payment, answer, requestId, { amountMicros: quote, route }, chargeStands) : answer;
}

/**
 * Reverse the key's earning for a request whose answer never started (SellerKey.undelivered);
 * true when it was reversed, so the buyer may be refunded with the books still exact.
 */
async function undeliver(env: Env, key: Candidate, requestId: string): Promise<boolean> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const result = await keyStub(env, key.keyId, key.home).undelivered(requestId);
      return result.ok && result.value.voided;
    } catch {
      // The object restarting under us: its storage holds the earning; ask once more.
    }
  }
  console.error(JSON.stringify({ evt: "undelivered_reversal_failed", requestId, keyId: key.keyId }));
  return false;
}

/**
 * B6: the buyer pays only for a successful answer. Anything else (no key could serve, an
 * upstream error the buyer's request caused, an answer that broke off before its first
 * byte) is refunded at once, and the receipt says so; `chargeStands` only when the key's
 * earning for it could not be reversed (the books stay exact; the buyer may dispute).
 */
async function settle(env: Env, request: Request, payment: Payment, answer: Response, requestId: string, quote: { amountMicros: number; route: string }, chargeStands = false): Promise<Response> {
  const { RECEIPT_HEADER, receiptHeader, nextChallenge, passGrant } = await payments();
  const refunded = answer.status >= 400 && !chargeStands && (await safeRefund(env, payment, answer.headers.get(H.refusal) ?? `status_${answer.status}`, requestId));
  // A buyer paying with a pass needs no next challenge; one granted a pass now neither.
  const grant = passGrant(request, payment, quote.route);
  const [receipt, next] = await Promise.all([receiptHeader(payment, { requestId, refunded }), payment.byPass || grant !== null ? null : nextChallenge(env, quote)]);
  // Our own answers (startedAnswer's, refusals) take the headers as they are; a key
  // object's, whose headers are immutable, is copied first.
  let out = answer;
  try {
    out.headers.set(RECEIPT_HEADER, receipt);
  } catch {
    out = new Response(answer.body, answer);
    out.headers.set(RECEIPT_HEADER, receipt);
  }
  if (next !== null) out.headers.set(H.nextChallenge, next);
  if (grant !== null) out.headers.set(H.pass, grant);
  return out;
}

/**
 * Refund, never throwing: if the wallet is unreachable the receipt says "not refunded",
 * and the log line (proof id, no buyer data) plus the buyer's dispute put it right.
 */
async function safeRefund(env: Env, payment: Payment, reason: string, requestId: string): Promise<boolean> {
  try {
    await (await payments()).refund(env, payment, reason);
    return true;
  } catch (err) {
    console.error(JSON.stringify({ evt: "refund_failed", requestId, proofId: payment.proofId, error: err instanceof Error ? err.name : "unknown" }));
    return false;
  }
}

async function tryKey(env: Env, provider: Provider, key: Candidate, request: Request, search: string, path: string, body: ArrayBuffer | null, requestId: string, paid: number, tab: string): Promise<Response> {
  // Always set: a buyer's own copies of our internal headers must never reach the key.
  const headers = keyRequestHeaders(provider, request.headers, { [H.requestId]: requestId, [H.paid]: String(paid), [H.tab]: tab });
  trackLoad(key.keyId, 1);
  try {
    return await keyStub(env, key.keyId, key.home).fetch(`https://key${path}${search}`, {
      method: request.method,
      headers,
      body,
    });
  } catch {
    // Its answer never reached us (the object restarted while answering, say): had it
    // already earned from this payment, that is reversed, as the buyer will not pay it.
    if (paid > 0) await undeliver(env, key, requestId);
    return errorResponse("upstream_error", "key object unavailable", { requestId, headers: { [H.refusal]: "upstream_error" } });
  } finally {
    trackLoad(key.keyId, -1);
  }
}

async function bufferBody(request: Request): Promise<ArrayBuffer | null> {
  if (request.method === "GET" || request.method === "HEAD" || request.body === null) return null;
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > MAX_BODY_BYTES) throw new ApiError("body_too_large", `request body exceeds ${MAX_BODY_BYTES} bytes`);
  const buf = await request.arrayBuffer();
  if (buf.byteLength > MAX_BODY_BYTES) throw new ApiError("body_too_large", `request body exceeds ${MAX_BODY_BYTES} bytes`);
  return buf;
}

/** Every tried key refused: one refusal kind is passed on as is, a mix becomes 503. */
function combineRefusals(refusals: Response[], requestId: string): Response {
  const codes = refusals.map((r) => r.headers.get(H.refusal) as ErrorCode);
  const last = refusals[refusals.length - 1];
  if (last && codes.every((c) => c === codes[0])) {
    const out = new Response(last.body, last);
    out.headers.delete(H.refusal);
    return out;
  }
  const retryAfter = refusals.map((r) => Number(r.headers.get("retry-after"))).filter((n) => n > 0);
  const headers: Record<string, string> = retryAfter.length ? { "retry-after": String(Math.min(...retryAfter)) } : {};
  return errorResponse("no_key_available", `all ${refusals.length} keys tried refused: ${[...new Set(codes)].join(", ")}`, { requestId, headers });
}
