// Payments for the proxy (B1, B2, B5, B6, P6, P7): the four calls worker/proxy/proxy.ts makes,
// and the HTTP handlers for credit (top-up, webhook, faucet, balance, budget).
//
//   no credential      -> challengeResponse(): 402 + WWW-Authenticate: Payment (one challenge per method)
//   Authorization: Payment …
//                      -> charge(): verify (HMAC, expiry, route scope, method) + claim + debit, or a 402
//   nothing served     -> refund(): credit back to the buyer's wallet, exactly once, recorded
//   answer             -> receiptHeader(): the Payment-Receipt value
import { Challenge, Credential, Errors, PaymentRequest, Receipt } from "mppx";
import type { Env } from "../../core/env.ts";
import { fromBase64Url, sha256Hex, toBase64Url } from "../../core/encoding.ts";
import { PaymentRefusal, problemResponse, type PaymentCode } from "./errors.ts";
import { CREDIT_METHOD, CURRENCY } from "../../core/credit-method.ts";
import { issueChallenges, payments, routeScope, verifyCredit, type Payments } from "./server.ts";
import { secretHmacKey, serializeChallenge, verifyChallengeId } from "./credit-challenge.ts";
import { proofStore } from "./atomic-store.ts";
import { walletStub } from "../../objects/buyer-wallet/stub.ts";
import { finishDraw, returnDraw, type Draw } from "./tabs.ts";
import { drawOnPass, grantPass } from "./passes.ts";
import { PASS_WANTED } from "../../core/pass.ts";
import { H } from "../../schema/headers.ts";

export { split, feeBps } from "../../core/money.ts";
export { PAYMENT_CODES, type PaymentCode } from "./errors.ts";
export { readSpend, type SpendDay } from "../../objects/buyer-wallet/spend.ts";
export { CHALLENGE_TTL_MS } from "./server.ts";
export { walletStub } from "../../objects/buyer-wallet/stub.ts";
export { balanceHandler, budgetHandler, faucetHandler } from "./credit.ts";
export { stripeTopUpHandler, stripeWebhookHandler } from "./stripe.ts";

export const RECEIPT_HEADER = "Payment-Receipt";

/** A verified, debited payment: what the proxy needs to serve, split, refund and receipt. */
export interface Payment {
  /** B2: hex SHA-256 of the payer principal. Never the principal. */
  buyerId: string;
  /** What the buyer paid: the quote the challenge carried. Serve with a key priced at or below it. */
  amountMicros: number;
  /** "credit" or "tempo". */
  method: string;
  /** The challenge id the credential answered: single-use, the refund and dispute handle. */
  proofId: string;
  /** Drawn on the buyer's tab here (tabs.ts): settled with paymentDone or refund. */
  draw?: Draw;
  /** Paid with a pass (passes.ts): the buyer holds one, so its answer carries no next challenge. */
  byPass?: boolean;
}

export interface Quote {
  amountMicros: number;
  /** What the credential is bound to, e.g. "POST /openai/v1/chat/completions". */
  route: string;
  /** Optional human-readable text shown by MPP clients. */
  description?: string;
}

export type ChargeResult =
  | { ok: true; payment: Payment }
  | { ok: false; code: PaymentCode; response: Response };

/** Does the request carry `Authorization: Payment …`? (Else a pass, or challengeResponse.) */
export function hasPaymentCredential(request: Request): boolean {
  const header = request.headers.get("authorization");
  return header !== null && Credential.extractPaymentScheme(header) !== null;
}

/** The request's pass proof (`cn2-pass`, not `want`), or null. */
export function passProof(request: Request): string | null {
  const value = request.headers.get(H.pass);
  return value === null || value === PASS_WANTED ? null : value;
}

/**
 * Pay `quote` with a pass proof (passes.ts): the draw on the buyer's tab here, or a 402
 * with a stable code, and a fresh challenge when paying the signed way can succeed.
 */
export async function chargePass(env: Env, proof: string, quote: Quote, requestId: string): Promise<ChargeResult> {
  let p: Payments;
  try {
    p = await payments(env);
  } catch (err) {
    return { ok: false, code: "payment_unavailable", response: unavailable(err, requestId) };
  }
  try {
    // Every refusal of a pass can be paid the signed way: it comes with a fresh challenge.
    const r = await drawOnPass(env, proof, quote.route, quote.amountMicros, requestId);
    if (!r.ok) return refusal(env, requestId, r.code, r.detail, quote);
    return { ok: true, payment: issued({ buyerId: r.buyerId, amountMicros: quote.amountMicros, method: CREDIT_METHOD, proofId: r.proofId, draw: r.draw, byPass: true }, p.secretKey) };
  } catch (err) {
    if (err instanceof PaymentRefusal) return refusal(env, requestId, err.code, err.message, RECHALLENGE.has(err.code) ? quote : undefined);
    return { ok: false, code: "payment_unavailable", response: unavailable(err, requestId) };
  }
}

/** A 402 (nothing debited) with a stable code, and fresh challenges for `quote` when given (none if they cannot be issued). */
async function refusal(env: Env, requestId: string, code: PaymentCode, detail: string, quote?: Quote): Promise<ChargeResult> {
  const challenges = quote ? await issueChallenges(env, quote).then((cs) => cs.map(serializeChallenge), () => []) : [];
  return { ok: false, code, response: problemResponse(code, detail, { requestId, challenges }) };
}

/**
 * The `cn2-pass` grant for a paid answer, or null: granted when the request asked (`want`)
 * and paid with a signed credit credential. Asking is the buyer's word that more calls
 * follow, and a pass costs nothing until it is drawn on (no tab, no hold: its first draw
 * opens the tab), so no rate is waited for (passes.ts).
 */
export function passGrant(request: Request, payment: Payment, route: string): string | null {
  if (payment.byPass || payment.method !== CREDIT_METHOD || request.headers.get(H.pass) !== PASS_WANTED) return null;
  return grantPass(payment.buyerId, route, payment.amountMicros);
}

/**
 * B1: the 402 for an unpaid request: `WWW-Authenticate: Payment …` with one challenge per
 * enabled method, scoped to `quote.route`, expiring after CHALLENGE_TTL_MS, and a
 * problem+json body. Pass `failure` to re-challenge after a refused credential.
 */
export async function challengeResponse(
  _request: Request,
  env: Env,
  quote: Quote,
  requestId: string,
  failure?: { code: PaymentCode; detail: string },
): Promise<Response> {
  let challenges: Challenge.Challenge[];
  try {
    challenges = await issueChallenges(env, quote);
  } catch (err) {
    if (err instanceof RangeError) throw err;
    return unavailable(err, requestId);
  }
  const detail = failure?.detail ?? `this request costs ${quote.amountMicros} micro-dollars (${CURRENCY}); pay with one of the offered methods and retry`;
  return problemResponse(failure?.code ?? "payment_required", detail, {
    requestId, challenges: challenges.map(serializeChallenge), challengeId: challenges[0]!.id,
  });
}

/** Refusals after which a fresh challenge helps (the buyer can simply pay again). */
const RECHALLENGE: ReadonlySet<PaymentCode> = new Set<PaymentCode>(["expired", "replayed", "payment_failed", "challenge_elsewhere"]);

/**
 * Verify the request's `Authorization: Payment` credential for `route` and take the money:
 * for `credit`, the signature is checked and the proof claimed + debited in the buyer's
 * wallet in one step; other methods claim the proof in the proof store, then verify.
 * On refusal nothing is debited and `response` is a 402 problem+json with a stable code
 * (a fresh challenge is attached when paying again can succeed: expired, replayed).
 */
export async function charge(request: Request, env: Env, route: string, requestId: string): Promise<ChargeResult> {
  const header = request.headers.get("authorization");
  const serialized = header === null ? null : Credential.extractPaymentScheme(header);
  const refuse = (code: PaymentCode, detail: string) => refusal(env, requestId, code, detail);
  if (serialized === null) return refuse("payment_required", "this request needs a payment credential (Authorization: Payment …)");

  let credential: Credential.Credential;
  try {
    credential = Credential.deserialize(serialized);
  } catch {
    return refuse("malformed_credential", "the Payment credential does not decode (base64url JSON of challenge, payload, source)");
  }
  let p: Payments;
  try {
    p = await payments(env);
  } catch (err) {
    return { ok: false, code: "payment_unavailable", response: unavailable(err, requestId) };
  }
  const { challenge } = credential;
  const method = p.methods.get(`${challenge.method}/${challenge.intent}`);
  if (!method) {
    return refuse("unknown_method", `payment method ${String(challenge.method).slice(0, 32)}/${String(challenge.intent).slice(0, 32)} is not accepted; accepted: ${[...p.methods.keys()].join(", ")}`);
  }
  const genuine = challenge.method === CREDIT_METHOD ? await verifyChallengeId(p.secretKey, challenge) : Challenge.verify(challenge, { secretKey: p.secretKey });
  if (!genuine) return refuse("tampered", "the challenge was not issued by this server, or was altered");
  const amountMicros = Number(challenge.request.amount);
  // issueChallenges refuses an amount that is not a positive whole number: no challenge then.
  const rechallenge = (code: PaymentCode, detail: string) => refusal(env, requestId, code, detail, RECHALLENGE.has(code) ? { amountMicros, route } : undefined);
  const expiresAt = challenge.expires === undefined ? Number.NaN : Date.parse(challenge.expires);
  if (!(expiresAt > Date.now())) return rechallenge("expired", "the challenge expired; pay the fresh one");
  const scope = await routeScope(route);
  if (scopeOf(challenge) !== scope) return refuse("wrong_route", "this credential pays for another route");
  if (!method.schema.credential.payload.safeParse(credential.payload).success) {
    return refuse("malformed_credential", `the credential payload does not match the ${challenge.method} method`);
  }

  try {
    if (challenge.method === CREDIT_METHOD) {
      // Every check mppx's verifyCredential makes for a scoped credential was made above
      // (method, id, expiry, payload, scope); what is left is the method's own verification.
      const v = await verifyCredit(env, credential as Parameters<typeof verifyCredit>[1], requestId);
      return { ok: true, payment: issued(v, p.secretKey) };
    }
    // Every other method claims its proof first (mppx core does not deduplicate on its own).
    if (!(await proofStore(env).tryClaim!(`cn2:proof:${challenge.id}`, expiresAt))) return rechallenge("replayed", "this payment credential was already used");
    await p.mppx.verifyCredential(serialized, { scope });
    // The payer's address (did:pkh) is hashed at once; refunds become credit under that id.
    const buyerId = await sha256Hex(credential.source ? credential.source.trim().toLowerCase() : `${challenge.method}:${challenge.id}`);
    const payment: Payment = issued({ buyerId, amountMicros, method: challenge.method, proofId: challenge.id }, p.secretKey);
    // The money has moved: recording it (spend, refundability) must not undo the answer.
    try {
      const recorded = await walletStub(env, buyerId).recordPayment({ buyerId, proofId: challenge.id, amountMicros, expiresAt, method: challenge.method });
      if (!recorded.ok && recorded.code !== "replayed") console.error(JSON.stringify({ evt: "payment_record_failed", requestId, code: recorded.code }));
    } catch (err) {
      console.error(JSON.stringify({ evt: "payment_record_failed", requestId, error: err instanceof Error ? err.name : "unknown" }));
    }
    return { ok: true, payment };
  } catch (err) {
    if (err instanceof PaymentRefusal) return rechallenge(err.code, err.message);
    if (err instanceof Errors.PaymentExpiredError) return rechallenge("expired", "the challenge expired; pay the fresh one");
    if (err instanceof Errors.InvalidPayloadError) return refuse("malformed_credential", "the credential payload does not match its method");
    if (err instanceof Errors.InvalidChallengeError) return refuse("tampered", "the challenge does not match this server's");
    if (err instanceof Errors.PaymentError) return rechallenge("payment_failed", `${challenge.method} payment failed: ${err.title}`);
    if (err instanceof Error && err.name === "$ZodError") return refuse("malformed_credential", "the credential does not match its method's schema");
    return { ok: false, code: "payment_unavailable", response: unavailable(err, requestId) };
  }
}

/**
 * A fresh `credit` challenge for the buyer's next call to `quote.route` at today's quote
 * (the `cn2-next-challenge` header of a paid answer): that call can pay without a 402 round
 * trip. It is bound to this isolate's epoch (a busy buyer pays it from a tab here; paid at
 * another isolate it is refused with a fresh, unbound challenge). Null if none.
 */
export async function nextChallenge(env: Env, quote: { amountMicros: number; route: string }): Promise<string | null> {
  try {
    const [challenge] = await issueChallenges(env, { ...quote, creditOnly: true, bound: true });
    return challenge ? serializeChallenge(challenge) : null;
  } catch {
    return null;
  }
}

export type RefundOutcome = "refunded" | "already_refunded" | "unknown_proof";

/**
 * B6: credit a payment back to the buyer's wallet at once (for any method), exactly
 * once per proof, recorded in the wallet's history with `reason` (a short code such as
 * "no_key_could_serve"). Safe to call twice: the second call changes nothing.
 */
export async function refund(env: Env, payment: Payment, reason: string): Promise<RefundOutcome> {
  // A tab draw goes back to the tab; the wallet records it as refunded when the tab closes.
  if (payment.draw) return returnDraw(env, payment.draw, reason) ? "refunded" : "already_refunded";
  const result = await walletStub(env, payment.buyerId).refund(payment.proofId, reason);
  if (result.ok) return "refunded";
  return result.code === "already_refunded" ? "already_refunded" : "unknown_proof";
}

/** The request is done and its payment stands (served, or a charge that could not be reversed). Safe to call twice, and after a refund. */
export function paymentDone(env: Env, payment: Payment) {
  if (payment.draw) finishDraw(env, payment.draw);
}

/** The H.tab value for the key that serves this payment: the draw it records with its earning ("" when none). */
export function tabHeader(payment: Payment | null): string {
  const d = payment?.draw;
  return d ? `${d.tab.id} ${d.tab.buyerId} ${d.draw.proofId} ${d.draw.expiresAt}` : "";
}

/** What a Payment-Receipt carries (mppx's Receipt plus cn2's fields, for disputes: P7). */
export interface Cn2Receipt extends Record<string, unknown> {
  method: string;
  /** The proof id. */
  reference: string;
  status: "success";
  timestamp: string;
  /** The request id (mppx's externalId slot). */
  externalId: string;
  requestId: string;
  amountMicros: number;
  currency: typeof CURRENCY;
  refunded: boolean;
  /**
   * base64url HMAC-SHA256 over the fields above (RECEIPT_MAC_DOMAIN), under a key derived
   * from MPP_SECRET_KEY: a dispute can trust which request a payment paid for (P7).
   */
  signature?: string;
}

/** The MPP secret of the server that verified each payment, for signing its receipt. */
const receiptSecrets = new WeakMap<Payment, string>();

function issued(payment: Payment, secretKey: string): Payment {
  receiptSecrets.set(payment, secretKey);
  return payment;
}

const RECEIPT_MAC_DOMAIN = "cn2-receipt/v1";
const HMAC_SHA256 = { name: "HMAC", hash: "SHA-256" } as const;
const utf8 = new TextEncoder();
const receiptKeys = new Map<string, Promise<CryptoKey>>();

/**
 * A key of its own for receipts, derived from the MPP secret (never the challenge HMAC key
 * itself): HMAC-SHA256(secret, "cn2-receipt-key/v1"). WebCrypto, imported once: node:crypto's
 * Hmac builds a stream per call in workerd, a measurable share of a paid request.
 */
function receiptKey(secretKey: string): Promise<CryptoKey> {
  let key = receiptKeys.get(secretKey);
  if (!key) {
    key = (async () => {
      const derived = await crypto.subtle.sign("HMAC", await secretHmacKey(secretKey), utf8.encode("cn2-receipt-key/v1"));
      return crypto.subtle.importKey("raw", derived, HMAC_SHA256, false, ["sign", "verify"]);
    })();
    receiptKeys.clear(); // one secret per deployment; a rotation replaces it
    receiptKeys.set(secretKey, key);
  }
  return key;
}

const receiptMacInput = (r: Cn2Receipt) =>
  utf8.encode([RECEIPT_MAC_DOMAIN, r.method, r.reference, r.requestId, String(r.amountMicros), r.currency, String(r.refunded), r.timestamp].join("\n"));

/**
 * The `Payment-Receipt` header value: mppx's Receipt format (base64url JSON), signed when
 * `payment` came from `charge` (which knows the server's secret).
 */
export async function receiptHeader(payment: Payment, opts: { requestId: string; refunded: boolean }): Promise<string> {
  const receipt: Cn2Receipt = {
    method: payment.method,
    reference: payment.proofId,
    status: "success",
    timestamp: new Date().toISOString(),
    externalId: opts.requestId,
    requestId: opts.requestId,
    amountMicros: payment.amountMicros,
    currency: CURRENCY,
    refunded: opts.refunded,
  };
  const secretKey = receiptSecrets.get(payment);
  if (secretKey !== undefined) {
    const mac = await crypto.subtle.sign("HMAC", await receiptKey(secretKey), receiptMacInput(receipt));
    receipt.signature = toBase64Url(new Uint8Array(mac));
  }
  // mppx's Receipt.serialize (base64url of the JSON) without its schema pass: every field
  // is ours and typed; clients read it with Receipt.deserialize (test/worker/credit-challenge.test.ts).
  return toBase64Url(utf8.encode(JSON.stringify(receipt)));
}

/**
 * A Payment-Receipt value this server issued, unaltered (its signature verifies), or null.
 * Disputes are opened from one (P7).
 */
export async function verifyReceipt(env: Env, value: string): Promise<Cn2Receipt | null> {
  const receipt = parseReceipt(value);
  if (!receipt || typeof receipt.signature !== "string" || typeof receipt.reference !== "string" || typeof receipt.method !== "string") return null;
  let given: Uint8Array;
  try {
    given = fromBase64Url(receipt.signature);
  } catch {
    return null;
  }
  const { secretKey } = await payments(env);
  // crypto.subtle.verify compares in constant time.
  return (await crypto.subtle.verify("HMAC", await receiptKey(secretKey), given, receiptMacInput(receipt))) ? receipt : null;
}

/** Read a Payment-Receipt value back (disputes are opened from one); null if it is not ours. */
export function parseReceipt(value: string): Cn2Receipt | null {
  try {
    const r = Receipt.deserialize(value) as unknown as Partial<Cn2Receipt>;
    if (typeof r.requestId !== "string" || typeof r.amountMicros !== "number" || typeof r.refunded !== "boolean") return null;
    return r as Cn2Receipt;
  } catch {
    return null;
  }
}

/** The route scope a challenge is bound to; its opaque data is decoded into `meta` once (verifyCredit reads the epoch there). */
function scopeOf(challenge: Challenge.Challenge): string | undefined {
  if (challenge.meta === undefined && challenge.opaque !== undefined) {
    try {
      challenge.meta = PaymentRequest.deserialize(challenge.opaque) as Record<string, string>;
    } catch {
      return undefined;
    }
  }
  return challenge.meta?._mppx_scope;
}

function unavailable(err: unknown, requestId: string): Response {
  // The kind of failure only: messages can carry request data.
  console.error(JSON.stringify({ evt: "payment_unavailable", requestId, error: err instanceof Error ? err.name : "unknown" }));
  return problemResponse("payment_unavailable", "the payment could not be completed right now; retry (a debit that did land shows in your wallet history)", { requestId, headers: { "retry-after": "1" } });
}
