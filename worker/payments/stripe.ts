// Card top-ups of prepaid credit through Stripe Checkout (Stripe's minimum charge rules
// out per-request card payments), and the one Stripe webhook endpoint, with the `stripe`
// package: its fetch HTTP client and SubtleCrypto verifier run in a Worker. The API base
// is a variable (STRIPE_API_BASE) turned into the client's host/port/protocol options, so
// tests point the real client at a fake Stripe on loopback.
//
// Exactly once: a top-up is keyed by its Checkout Session id in the buyer's wallet, so a
// replayed event, a retried delivery, or both completion events of one session credit once.
// Connect events (account.updated, transfer.*) go to the payouts code (worker/payouts/).
import Stripe from "stripe";
import * as v from "valibot";
import type { Env } from "../../core/env.ts";
import { parseOr400, readJson } from "../../core/http.ts";
import { BuyerIdSchema } from "./credit.ts";
import { BUYER_ID } from "../../core/did.ts";
import { walletStub } from "../../objects/buyer-wallet/stub.ts";
import { handleConnectEvent } from "../payouts/stripe-connect.ts";
import { ack, EventSchema, problem, stripeClient } from "../../core/stripe.ts";

/** The router's request id (set on the request it routes), for error bodies. */
const idOf = (request: Request) => (request as { requestId?: string }).requestId;

/** Top-ups are whole cents from $1 to $1000. */
export const TOPUP_MIN_MICROS = 1_000_000;
export const TOPUP_MAX_MICROS = 1_000_000_000;
const MICROS_PER_CENT = 10_000;
export const STRIPE_TOLERANCE_SECONDS = 300;
const MAX_WEBHOOK_BYTES = 256 * 1024;


const cryptoProvider = Stripe.createSubtleCryptoProvider();

/** What a top-up asks for: amount in whole cents from $1 to $1000, optional return pages. */
export const TopUpAmountSchema = v.pipe(
  v.number(), v.safeInteger("amountMicros must be whole micro-dollars"),
  v.minValue(TOPUP_MIN_MICROS, `at least ${TOPUP_MIN_MICROS} micro-dollars ($1)`),
  v.maxValue(TOPUP_MAX_MICROS, `at most ${TOPUP_MAX_MICROS} micro-dollars ($1000)`),
  v.check((n) => n % MICROS_PER_CENT === 0, "amountMicros must be whole cents (a multiple of 10000)"),
);
export const ReturnUrlSchema = v.optional(v.pipe(v.string(), v.url(), v.maxLength(2000)));

const TopUpSchema = v.strictObject({
  buyerId: BuyerIdSchema,
  amountMicros: TopUpAmountSchema,
  successUrl: ReturnUrlSchema,
  cancelUrl: ReturnUrlSchema,
});
export type TopUpInput = v.InferOutput<typeof TopUpSchema>;

/** POST /api/credit/topup { buyerId, amountMicros, successUrl?, cancelUrl? } -> { sessionId, url } */
export async function stripeTopUpHandler(request: Request, env: Env): Promise<Response> {
  if (!env.STRIPE_SECRET_KEY) return problem("topup_unavailable", "card top-ups are not configured here (STRIPE_SECRET_KEY)", 503, idOf(request));
  return startCheckout(request, env, parseOr400(TopUpSchema, await readJson(request), "top-up"));
}

/**
 * A Stripe Checkout Session that credits `input.buyerId` once paid (the webhook below):
 * 201 { sessionId, url, amountMicros }, or a problem. Stripe learns the buyer id (a hash)
 * and the amount, nothing else of ours. Also started from a buyer account (B4) for one of
 * its attached ids.
 */
export async function startCheckout(request: Request, env: Env, input: TopUpInput): Promise<Response> {
  if (!env.STRIPE_SECRET_KEY) return problem("topup_unavailable", "card top-ups are not configured here (STRIPE_SECRET_KEY)", 503, idOf(request));
  const stripe = stripeClient(env)!;
  const origin = new URL(request.url).origin;
  let session: Stripe.Checkout.Session;
  try {
    session = await stripe.checkout.sessions.create({
      mode: "payment",
      line_items: [{ quantity: 1, price_data: { currency: "usd", unit_amount: input.amountMicros / MICROS_PER_CENT, product_data: { name: "cn2 prepaid credit" } } }],
      client_reference_id: input.buyerId,
      metadata: { cn2_buyer_id: input.buyerId, cn2_credit_micros: String(input.amountMicros) },
      payment_intent_data: { metadata: { cn2_buyer_id: input.buyerId } },
      success_url: input.successUrl ?? `${origin}/?topup=success`,
      cancel_url: input.cancelUrl ?? `${origin}/?topup=cancelled`,
    }, { idempotencyKey: `cn2-topup-${crypto.randomUUID()}` });
  } catch (err) {
    if (err instanceof Stripe.errors.StripeConnectionError) return problem("stripe_unavailable", "Stripe could not be reached; nothing was charged", 502, idOf(request));
    // Stripe's error type and status only: its message can echo request fields.
    const e = err as { type?: unknown; statusCode?: unknown };
    console.error(JSON.stringify({ evt: "stripe_checkout_failed", status: typeof e.statusCode === "number" ? e.statusCode : null, type: typeof e.type === "string" ? e.type : null }));
    return problem("stripe_error", `Stripe refused the checkout session (${typeof e.statusCode === "number" ? e.statusCode : "error"})`, 502, idOf(request));
  }
  if (!session.url) return problem("stripe_error", "Stripe returned a checkout session without a URL", 502, idOf(request));
  return new Response(JSON.stringify({ sessionId: session.id, url: session.url, amountMicros: input.amountMicros }), { status: 201, headers: { "content-type": "application/json" } });
}


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
/** Seller onboarding and payout transfers (worker/payouts/stripe-connect.ts). */
const CONNECT_EVENTS = new Set(["account.updated", "transfer.created", "transfer.updated", "transfer.reversed"]);

/** POST /webhooks/stripe: verify; credit a paid Checkout Session exactly once; hand Connect events to payouts. */
export async function stripeWebhookHandler(request: Request, env: Env): Promise<Response> {
  if (!env.STRIPE_WEBHOOK_SECRET) return problem("webhook_unavailable", "Stripe webhooks are not configured here (STRIPE_WEBHOOK_SECRET)", 503, idOf(request));
  const payload = await request.text();
  if (payload.length > MAX_WEBHOOK_BYTES) return problem("body_too_large", "webhook body too large", 413, idOf(request));
  const header = request.headers.get("stripe-signature");
  if (!header) return problem("bad_signature", "Stripe signature refused: no Stripe-Signature header", 400, idOf(request));
  let parsed: unknown = undefined;
  // The account endpoint's secret, then (if Stripe gave the Connect endpoint its own) that one.
  for (const secret of [env.STRIPE_WEBHOOK_SECRET, env.STRIPE_CONNECT_WEBHOOK_SECRET]) {
    if (!secret) continue;
    try {
      // The library checks the scheme (t=, one or more v1=, HMAC-SHA256 over "t.payload") and the tolerance.
      parsed = await Stripe.webhooks.constructEventAsync(payload, header, secret, STRIPE_TOLERANCE_SECONDS, cryptoProvider);
      break;
    } catch (err) {
      if (!(err instanceof Stripe.errors.StripeSignatureVerificationError)) return problem("invalid_json", "body is not valid JSON", 400, idOf(request));
    }
  }
  if (parsed === undefined) return problem("bad_signature", "Stripe signature refused: no signature matches within the tolerance", 400, idOf(request));
  const event = v.safeParse(EventSchema, parsed);
  if (!event.success) return problem("invalid_request", "not a Stripe event", 400, idOf(request));
  if (CONNECT_EVENTS.has(event.output.type)) {
    return handleConnectEvent(env, event.output);
  }
  if (!CREDIT_EVENTS.has(event.output.type)) return ack({ ignored: true });

  const session = v.safeParse(SessionSchema, event.output.data.object);
  if (!session.success) return problem("invalid_request", "event does not carry a checkout session", 400, idOf(request));
  const s = session.output;
  if (s.payment_status !== "paid") return ack({ credited: false, reason: "not_paid" });
  const buyerId = s.metadata?.cn2_buyer_id ?? s.client_reference_id ?? "";
  const cents = s.amount_subtotal ?? s.amount_total ?? 0;
  // Not ours, or nothing to credit: acknowledge so Stripe stops retrying, and say why.
  if (!BUYER_ID.test(buyerId)) return ack({ credited: false, reason: "no_buyer" });
  if ((s.currency ?? "").toLowerCase() !== "usd" || cents <= 0) return ack({ credited: false, reason: "unsupported_amount" });

  const result = await walletStub(env, buyerId).topUp({ buyerId, eventId: `stripe:${s.id}`, amountMicros: cents * MICROS_PER_CENT, source: "stripe" });
  if (!result.ok) return problem("invalid_request", result.message, 400, idOf(request));
  return ack({ credited: result.value.credited });
}


