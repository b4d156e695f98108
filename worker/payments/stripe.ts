// Card top-ups of prepaid credit through Stripe Checkout (Stripe's minimum charge rules
// out per-request card payments), with the webhook verified in WebCrypto per Stripe's
// documented scheme: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>`.
// Stripe's REST API is called with fetch and form encoding; its base URL is a variable
// (STRIPE_API_BASE) so tests point it at a fake Stripe on loopback.
//
// Exactly once: a top-up is keyed by its Checkout Session id in the buyer's wallet, so a
// replayed event, a retried delivery, or both completion events of one session credit once.
import * as v from "valibot";
import type { Env } from "../env.ts";
import { parseOr400, readJson } from "../http.ts";
import { BuyerIdSchema } from "./account.ts";
import { BUYER_ID } from "./did.ts";
import { toHex } from "./encoding.ts";
import { walletStub } from "./wallet.ts";

/** Top-ups are whole cents from $1 to $1000. */
export const TOPUP_MIN_MICROS = 1_000_000;
export const TOPUP_MAX_MICROS = 1_000_000_000;
const MICROS_PER_CENT = 10_000;
export const STRIPE_TOLERANCE_SECONDS = 300;
const MAX_WEBHOOK_BYTES = 256 * 1024;

const TopUpSchema = v.strictObject({
  buyerId: BuyerIdSchema,
  amountMicros: v.pipe(
    v.number(), v.safeInteger("amountMicros must be whole micro-dollars"),
    v.minValue(TOPUP_MIN_MICROS, `at least ${TOPUP_MIN_MICROS} micro-dollars ($1)`),
    v.maxValue(TOPUP_MAX_MICROS, `at most ${TOPUP_MAX_MICROS} micro-dollars ($1000)`),
    v.check((n) => n % MICROS_PER_CENT === 0, "amountMicros must be whole cents (a multiple of 10000)"),
  ),
  successUrl: v.optional(v.pipe(v.string(), v.url(), v.maxLength(2000))),
  cancelUrl: v.optional(v.pipe(v.string(), v.url(), v.maxLength(2000))),
});

/** An error in the Worker's one shape: code, message and the router's request id (set on the request). */
function problem(request: Request, code: string, message: string, status: number): Response {
  const requestId = (request as { requestId?: string }).requestId;
  return new Response(JSON.stringify({ error: { code, message }, ...(requestId ? { requestId } : {}) }), { status, headers: { "content-type": "application/json" } });
}

/** POST /api/credit/topup { buyerId, amountMicros, successUrl?, cancelUrl? } -> { sessionId, url } */
export async function stripeTopUpHandler(request: Request, env: Env): Promise<Response> {
  if (!env.STRIPE_SECRET_KEY) return problem(request, "topup_unavailable", "card top-ups are not configured here (STRIPE_SECRET_KEY)", 503);
  const input = parseOr400(TopUpSchema, await readJson(request), "top-up");
  const origin = new URL(request.url).origin;
  const form = new URLSearchParams({
    mode: "payment",
    "line_items[0][quantity]": "1",
    "line_items[0][price_data][currency]": "usd",
    "line_items[0][price_data][unit_amount]": String(input.amountMicros / MICROS_PER_CENT),
    "line_items[0][price_data][product_data][name]": "cn2 prepaid credit",
    client_reference_id: input.buyerId,
    "metadata[cn2_buyer_id]": input.buyerId,
    "metadata[cn2_credit_micros]": String(input.amountMicros),
    "payment_intent_data[metadata][cn2_buyer_id]": input.buyerId,
    success_url: input.successUrl ?? `${origin}/?topup=success`,
    cancel_url: input.cancelUrl ?? `${origin}/?topup=cancelled`,
  });
  let res: Response;
  try {
    res = await fetch(`${stripeBase(env)}/v1/checkout/sessions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${env.STRIPE_SECRET_KEY}`,
        "content-type": "application/x-www-form-urlencoded",
        "idempotency-key": `cn2-topup-${crypto.randomUUID()}`,
      },
      body: form,
    });
  } catch {
    return problem(request, "stripe_unavailable", "Stripe could not be reached; nothing was charged", 502);
  }
  const body = (await res.json().catch(() => null)) as { id?: unknown; url?: unknown; error?: { type?: unknown } } | null;
  if (!res.ok || typeof body?.id !== "string" || typeof body.url !== "string") {
    // Stripe's error type only: its message can echo request fields.
    console.error(JSON.stringify({ evt: "stripe_checkout_failed", status: res.status, type: typeof body?.error?.type === "string" ? body.error.type : null }));
    return problem(request, "stripe_error", `Stripe refused the checkout session (${res.status})`, 502);
  }
  return new Response(JSON.stringify({ sessionId: body.id, url: body.url, amountMicros: input.amountMicros }), { status: 201, headers: { "content-type": "application/json" } });
}

const EventSchema = v.looseObject({
  id: v.pipe(v.string(), v.maxLength(255)),
  type: v.pipe(v.string(), v.maxLength(255)),
  data: v.looseObject({ object: v.looseObject({}) }),
});

const SessionSchema = v.looseObject({
  id: v.pipe(v.string(), v.regex(/^cs_[A-Za-z0-9_]{1,250}$/, "not a checkout session id")),
  object: v.literal("checkout.session"),
  payment_status: v.string(),
  currency: v.nullish(v.string()),
  amount_subtotal: v.nullish(v.pipe(v.number(), v.safeInteger(), v.minValue(0))),
  amount_total: v.nullish(v.pipe(v.number(), v.safeInteger(), v.minValue(0))),
  client_reference_id: v.nullish(v.string()),
  metadata: v.nullish(v.record(v.string(), v.string())),
});

const CREDIT_EVENTS = new Set(["checkout.session.completed", "checkout.session.async_payment_succeeded"]);

/** POST /webhooks/stripe: verify, then credit a paid Checkout Session exactly once. */
export async function stripeWebhookHandler(request: Request, env: Env): Promise<Response> {
  if (!env.STRIPE_WEBHOOK_SECRET) return problem(request, "webhook_unavailable", "Stripe webhooks are not configured here (STRIPE_WEBHOOK_SECRET)", 503);
  const payload = await request.text();
  if (payload.length > MAX_WEBHOOK_BYTES) return problem(request, "body_too_large", "webhook body too large", 413);
  const verified = await verifyStripeSignature(payload, request.headers.get("stripe-signature"), env.STRIPE_WEBHOOK_SECRET);
  if (!verified.ok) return problem(request, "bad_signature", `Stripe signature refused: ${verified.reason}`, 400);
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload);
  } catch {
    return problem(request, "invalid_json", "body is not valid JSON", 400);
  }
  const event = v.safeParse(EventSchema, parsed);
  if (!event.success) return problem(request, "invalid_request", "not a Stripe event", 400);
  if (!CREDIT_EVENTS.has(event.output.type)) return ack({ ignored: true });

  const session = v.safeParse(SessionSchema, event.output.data.object);
  if (!session.success) return problem(request, "invalid_request", "event does not carry a checkout session", 400);
  const s = session.output;
  if (s.payment_status !== "paid") return ack({ credited: false, reason: "not_paid" });
  const buyerId = s.metadata?.cn2_buyer_id ?? s.client_reference_id ?? "";
  const cents = s.amount_subtotal ?? s.amount_total ?? 0;
  // Not ours, or nothing to credit: acknowledge so Stripe stops retrying, and say why.
  if (!BUYER_ID.test(buyerId)) return ack({ credited: false, reason: "no_buyer" });
  if ((s.currency ?? "").toLowerCase() !== "usd" || cents <= 0) return ack({ credited: false, reason: "unsupported_amount" });

  const result = await walletStub(env, buyerId).topUp({ buyerId, eventId: `stripe:${s.id}`, amountMicros: cents * MICROS_PER_CENT, source: "stripe" });
  if (!result.ok) return problem(request, "invalid_request", result.message, 400);
  return ack({ credited: result.credited });
}

const ack = (extra: Record<string, unknown>) => new Response(JSON.stringify({ received: true, ...extra }), { status: 200, headers: { "content-type": "application/json" } });

const stripeBase = (env: Env) => (env.STRIPE_API_BASE || "https://api.stripe.com").replace(/\/+$/, "");

// ---- Stripe's signature scheme ------------------------------------------------------

async function hmacHex(secret: string, message: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return toHex(new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(message))));
}

function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

export async function verifyStripeSignature(
  payload: string,
  header: string | null,
  secret: string,
  opts: { toleranceSeconds?: number; now?: number } = {},
): Promise<{ ok: true; timestamp: number } | { ok: false; reason: string }> {
  if (!header) return { ok: false, reason: "no Stripe-Signature header" };
  let timestamp: number | null = null;
  const signatures: string[] = [];
  for (const part of header.split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const k = part.slice(0, eq).trim();
    const val = part.slice(eq + 1).trim();
    if (k === "t" && /^\d{1,12}$/.test(val)) timestamp = Number(val);
    else if (k === "v1" && /^[0-9a-f]{64}$/.test(val)) signatures.push(val);
  }
  if (timestamp === null) return { ok: false, reason: "no timestamp" };
  if (signatures.length === 0) return { ok: false, reason: "no v1 signature" };
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > (opts.toleranceSeconds ?? STRIPE_TOLERANCE_SECONDS)) return { ok: false, reason: "timestamp outside the tolerance" };
  const expected = await hmacHex(secret, `${timestamp}.${payload}`);
  return signatures.some((sig) => constantTimeEqual(sig, expected)) ? { ok: true, timestamp } : { ok: false, reason: "no signature matches" };
}

/** The header Stripe would send for `payload` (tests, the fake Stripe, local replays). */
export async function stripeSignatureHeader(payload: string, secret: string, timestamp = Math.floor(Date.now() / 1000)): Promise<string> {
  return `t=${timestamp},v1=${await hmacHex(secret, `${timestamp}.${payload}`)}`;
}
