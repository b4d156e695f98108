// Executing a payout: claim it (requested -> sent, one winner), move the money on its
// rail, record the transfer, settle it (paid | failed), tell the seller at each step.
//
//   Stripe: the transfer is created synchronously; Stripe's transfer.created webhook (or
//           the reconciler reading the transfer back) marks it paid.
//   Tempo:  the transaction is broadcast (hash recorded), its receipt marks it paid or
//           failed.
// A failure reverses the debit: a failed payout no longer counts against the balance.
// An outcome we could not learn (network) leaves the payout sent; the scheduled
// reconciler (reconcilePayout) finishes it: Stripe with the same idempotency key, Tempo by
// receipt or memo.
import Stripe from "stripe";
import type { PayoutRow } from "../../schema/tables.ts";
import type { Db } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { stripeClient } from "../../core/stripe.ts";
import { notifyPayout } from "./notify.ts";
import { sendStripeTransfer } from "./stripe-connect.ts";
import { claimPayout, getPayout, markFailed, markPaid, recordRef } from "./store.ts";
import { reconcileTempo, sendTempoTransfer, tempoConfig } from "./tempo.ts";

/** Whether this deployment can send on a method's rail at all (else payouts wait, requested). */
export function railConfigured(env: Env, method: PayoutRow["method"]): boolean {
  return method === "stripe_connect" ? stripeClient(env) !== null : tempoConfig(env) !== null;
}

/**
 * Execute one payout if it is still requested; returns it as it stands afterwards. A
 * payout whose rail is not configured here stays requested (unclaimed) for a later run.
 */
export async function executePayout(env: Env, sql: Db, payoutId: string): Promise<PayoutRow | null> {
  const current = await getPayout(sql, payoutId);
  if (!current || current.status !== "requested" || !railConfigured(env, current.method)) return current;
  const claimed = await claimPayout(sql, payoutId);
  if (!claimed) return getPayout(sql, payoutId); // someone else has it, or it is done
  return send(env, sql, claimed);
}

async function send(env: Env, sql: Db, payout: PayoutRow): Promise<PayoutRow | null> {
  if (payout.method === "stripe_connect") {
    const result = await sendStripeTransfer(env, payout);
    if (!result.ok) {
      if (!result.retryable) await fail(env, sql, payout.id, result.code);
      return getPayout(sql, payout.id);
    }
    const sent = await recordRef(sql, payout.id, result.ref);
    if (sent) await notifyPayout(env, sent);
    return getPayout(sql, payout.id);
  }

  const result = await sendTempoTransfer(env, payout, async (hash) => {
    const sent = await recordRef(sql, payout.id, hash);
    if (sent) await notifyPayout(env, sent);
  });
  if (!result.ok) {
    if (!result.retryable) await fail(env, sql, payout.id, result.code);
  } else if (result.settled) {
    if (result.status === "paid") await pay(env, sql, payout.id, result.ref);
    else await fail(env, sql, payout.id, "tempo.transfer_reverted");
  }
  return getPayout(sql, payout.id);
}

async function pay(env: Env, sql: Db, id: string, ref: string) {
  const paid = await markPaid(sql, id, ref);
  if (paid) await notifyPayout(env, paid);
}

async function fail(env: Env, sql: Db, id: string, code: string) {
  const failed = await markFailed(sql, id, code);
  if (failed) await notifyPayout(env, failed);
}

/**
 * Finish a payout left sent. Stripe: without a transfer id, the transfer call again (same
 * idempotency key: the same transfer, never a second); with one, read it back (reversed ->
 * failed, else paid). Tempo: receipt by hash, or the transfer by memo.
 */
export async function reconcilePayout(env: Env, sql: Db, payout: PayoutRow): Promise<PayoutRow | null> {
  if (payout.status !== "sent") return payout;
  if (payout.method === "stripe_connect") {
    if (payout.external_ref === null) return send(env, sql, payout);
    const stripe = stripeClient(env);
    if (!stripe) return payout;
    try {
      const transfer = await stripe.transfers.retrieve(payout.external_ref);
      if (transfer.reversed) await fail(env, sql, payout.id, "stripe.transfer_reversed");
      else await pay(env, sql, payout.id, transfer.id);
    } catch (err) {
      if (!(err instanceof Stripe.errors.StripeConnectionError)) console.error(JSON.stringify({ evt: "payout_reconcile_error", payoutId: payout.id }));
    }
    return getPayout(sql, payout.id);
  }
  const found = await reconcileTempo(env, payout).catch(() => null);
  if (found?.status === "paid") await pay(env, sql, payout.id, found.ref);
  else if (found?.status === "failed") await fail(env, sql, payout.id, "tempo.transfer_reverted");
  return getPayout(sql, payout.id);
}
