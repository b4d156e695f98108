// Stripe Connect for seller payouts: the connected account (controller properties, the
// current form of an Express-style account: Stripe collects requirements and hosts the
// dashboard, the platform pays Stripe's fees), its onboarding link, the Transfer that pays
// a payout, and the Connect webhooks that move state (account.updated -> payouts enabled;
// transfer.created/updated -> paid; transfer.reversed -> failed).
//
// Exactly once on Stripe's side: a transfer's idempotency key is derived from the payout
// id, so a retried call, a second worker, or a retry after a crash returns the same
// transfer instead of making another.
import Stripe from "stripe";
import * as v from "valibot";
import type { PayoutRow } from "../../schema/tables.ts";
import { withDb } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { ApiError } from "../../core/http.ts";
import { ack, problem, stripeClient, type StripeEventInput } from "../../core/stripe.ts";
import { asService } from "../../schema/tables.ts";
import { markFailed, markPaid, payoutOfTransfer, recordRef } from "./store.ts";
import { notifyPayout } from "./notify.ts";

/** The idempotency key of a payout's transfer: one payout, one transfer, ever. */
export const transferIdempotencyKey = (payoutId: string) => `cn2-payout-${payoutId}`;

export type SendResult =
  | { ok: true; ref: string; settled: false }
  | { ok: false; code: string; retryable: boolean };

function requireStripe(env: Env): Stripe {
  const stripe = stripeClient(env);
  if (!stripe) throw new ApiError("payouts_unavailable", "Stripe payouts are not configured here (STRIPE_SECRET_KEY)");
  return stripe;
}

/** A connected account for a seller, made once per seller (the idempotency key). */
export async function createConnectedAccount(env: Env, sellerId: string): Promise<string> {
  const stripe = requireStripe(env);
  try {
    const account = await stripe.accounts.create({
      controller: {
        fees: { payer: "application" },
        losses: { payments: "application" },
        requirement_collection: "stripe",
        stripe_dashboard: { type: "express" },
      },
      capabilities: { transfers: { requested: true } },
      // Only our own id: name, email and bank details are the seller's business with Stripe (PR6).
      metadata: { cn2_seller_id: sellerId },
    }, { idempotencyKey: `cn2-connect-account-${sellerId}` });
    return account.id;
  } catch (err) {
    throw stripeApiError(err, "create the connected account");
  }
}

/** A one-time onboarding link (Stripe-hosted) for the seller's connected account. */
export async function onboardingLink(env: Env, accountId: string, urls: { refreshUrl: string; returnUrl: string }): Promise<{ url: string; expiresAt: string }> {
  const stripe = requireStripe(env);
  try {
    const link = await stripe.accountLinks.create({ account: accountId, type: "account_onboarding", refresh_url: urls.refreshUrl, return_url: urls.returnUrl });
    return { url: link.url, expiresAt: new Date(link.expires_at * 1000).toISOString() };
  } catch (err) {
    throw stripeApiError(err, "create the onboarding link");
  }
}

function stripeApiError(err: unknown, what: string): ApiError {
  if (err instanceof Stripe.errors.StripeConnectionError) return new ApiError("stripe_error", `Stripe could not be reached to ${what}; try again`);
  const e = err as { statusCode?: unknown; type?: unknown };
  // Stripe's type and status only: its messages can echo request fields.
  console.error(JSON.stringify({ evt: "stripe_connect_failed", what, status: typeof e.statusCode === "number" ? e.statusCode : null, type: typeof e.type === "string" ? e.type : null }));
  return new ApiError("stripe_error", `Stripe refused to ${what}`);
}

/**
 * Transfer a payout to its connected account. Errors Stripe answered (the request was
 * refused, nothing moved) fail the payout; errors in getting an answer (network, Stripe
 * 5xx, rate limit) leave it sent, to be repeated with the same idempotency key.
 */
export async function sendStripeTransfer(env: Env, payout: PayoutRow): Promise<SendResult> {
  const stripe = stripeClient(env);
  if (!stripe) return { ok: false, code: "stripe_not_configured", retryable: true };
  if (!payout.destination || payout.amount_units === null) return { ok: false, code: "no_destination", retryable: false };
  try {
    const transfer = await stripe.transfers.create({
      amount: Number(payout.amount_units),
      currency: "usd",
      destination: payout.destination,
      description: `cn2 payout ${payout.id}`,
      transfer_group: `cn2_payout_${payout.id}`,
      metadata: { cn2_payout_id: payout.id },
    }, { idempotencyKey: transferIdempotencyKey(payout.id) });
    return { ok: true, ref: transfer.id, settled: false };
  } catch (err) {
    const e = err as { statusCode?: unknown; code?: unknown; type?: unknown };
    const status = typeof e.statusCode === "number" ? e.statusCode : null;
    const retryable = err instanceof Stripe.errors.StripeConnectionError || err instanceof Stripe.errors.StripeRateLimitError
      || err instanceof Stripe.errors.StripeAPIError || status === null || status >= 500 || status === 409;
    const code = typeof e.code === "string" && /^[a-z0-9_]{1,60}$/.test(e.code) ? `stripe.${e.code}` : "stripe.refused";
    console.error(JSON.stringify({ evt: "payout_transfer_error", payoutId: payout.id, status, code, retryable }));
    return { ok: false, code, retryable };
  }
}

// ---- Connect webhooks (from /webhooks/stripe, verified there) ----------------------------

const AccountSchema = v.looseObject({
  id: v.pipe(v.string(), v.regex(/^acct_[A-Za-z0-9]{10,64}$/)),
  object: v.literal("account"),
  payouts_enabled: v.nullish(v.boolean()),
});

const TransferSchema = v.looseObject({
  id: v.pipe(v.string(), v.regex(/^tr_[A-Za-z0-9]{1,100}$/)),
  object: v.literal("transfer"),
  amount: v.pipe(v.number(), v.safeInteger()),
  destination: v.nullish(v.string()),
  reversed: v.optional(v.boolean(), false),
  metadata: v.nullish(v.record(v.string(), v.string())),
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * account.updated: the seller's payouts become ready (or stop being) as Stripe says.
 * transfer.created / transfer.updated: the transfer reached the connected account -> paid.
 * transfer.reversed (or an update that says reversed): -> failed, the debit reversed.
 * A replayed event finds the state already moved and changes nothing.
 */
export async function handleConnectEvent(env: Env, event: StripeEventInput): Promise<Response> {
  return withDb(env, null, async (sql) => {
    if (event.type === "account.updated") {
      const parsed = v.safeParse(AccountSchema, event.data.object);
      if (!parsed.success) return problem("invalid_request", "event does not carry an account", 400);
      const enabled = parsed.output.payouts_enabled === true;
      const updated = await asService(sql, (tx) => tx`
        update public.payout_preferences set stripe_payouts_enabled = ${enabled}
         where stripe_account_id = ${parsed.output.id} and stripe_payouts_enabled is distinct from ${enabled}`);
      return ack({ applied: updated.count > 0, payoutsEnabled: enabled });
    }

    const parsed = v.safeParse(TransferSchema, event.data.object);
    if (!parsed.success) return problem("invalid_request", "event does not carry a transfer", 400);
    const t = parsed.output;
    const metaId = t.metadata?.cn2_payout_id;
    const payout = await payoutOfTransfer(sql, t.id, metaId && UUID.test(metaId) ? metaId : null);
    if (!payout) return ack({ applied: false, reason: "unknown_transfer" });
    // A transfer that is not the one we asked for (amount or destination) is never taken as payment.
    if (payout.amount_units !== null && (Number(payout.amount_units) !== t.amount || (t.destination && t.destination !== payout.destination))) {
      console.error(JSON.stringify({ evt: "payout_transfer_mismatch", payoutId: payout.id }));
      return ack({ applied: false, reason: "mismatch" });
    }
    if (payout.external_ref === null) {
      const sent = await recordRef(sql, payout.id, t.id);
      if (sent) await notifyPayout(env, sent);
    }
    if (event.type === "transfer.reversed" || t.reversed) {
      const failed = await markFailed(sql, payout.id, "stripe.transfer_reversed");
      if (failed) await notifyPayout(env, failed);
      else if (payout.status === "paid") console.error(JSON.stringify({ evt: "payout_reversed_after_paid", payoutId: payout.id }));
      return ack({ applied: failed !== null, status: failed?.status ?? payout.status });
    }
    const paid = await markPaid(sql, payout.id, t.id);
    if (paid) await notifyPayout(env, paid);
    return ack({ applied: paid !== null, status: paid?.status ?? payout.status });
  });
}
