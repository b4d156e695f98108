// Payout rows and their state moves, as service_role. Every move is one conditional UPDATE
// (`where status = <from>`): of two workers racing on one payout exactly one gets the row
// back, and only that one calls Stripe or the chain, or tells the seller. The database
// (schema/sql/0011) refuses any move backwards and logs each state once.
import { asService, micros, type PayoutRow } from "../../schema/tables.ts";
import type { Db } from "../../core/postgres.ts";

export const MICROS_PER_CENT = 10_000;

/** A payout as the seller and ops see it. */
export const payoutView = (p: PayoutRow) => ({
  id: p.id,
  method: p.method,
  destination: p.destination,
  amountMicros: micros(p.amount_micros),
  /** Cents (Stripe) or TIP-20 base units (USDC, 6 decimals): exactly what moves. */
  amountUnits: p.amount_units === null ? null : micros(p.amount_units),
  status: p.status,
  externalRef: p.external_ref,
  failureCode: p.failure_code,
  scheduleKey: p.schedule_key,
  retryOf: p.retry_of,
  requestedAt: p.requested_at.toISOString(),
  sentAt: p.sent_at?.toISOString() ?? null,
  completedAt: p.completed_at?.toISOString() ?? null,
});
export type PayoutView = ReturnType<typeof payoutView>;

/**
 * Ask for a payout (public.request_payout): null amount = everything available, rounded
 * down to the method's unit. Raises the database's CN codes (kyc_required,
 * payout_method_required, payout_method_not_ready, below_minimum, payout_in_progress,
 * insufficient_balance). With a schedule key or a retry link, an existing payout for it
 * is returned instead of a new one.
 */
export async function requestPayoutRow(
  sql: Db,
  sellerId: string,
  opts: { amountMicros: number | null; minMicros: number; scheduleKey?: string | null; retryOf?: string | null },
): Promise<PayoutRow> {
  const [row] = await asService(sql, (tx) => tx<PayoutRow[]>`
    select * from public.request_payout(${sellerId}, ${opts.amountMicros}, ${opts.minMicros}, ${opts.scheduleKey ?? null}, ${opts.retryOf ?? null})`);
  return row!;
}

export async function getPayout(sql: Db, id: string): Promise<PayoutRow | null> {
  const [row] = await asService(sql, (tx) => tx<PayoutRow[]>`select * from public.payouts where id = ${id}`);
  return row ?? null;
}

/** requested -> sent: whoever gets the row back is the one that moves the money. */
export async function claimPayout(sql: Db, id: string): Promise<PayoutRow | null> {
  const [row] = await asService(sql, (tx) => tx<PayoutRow[]>`
    update public.payouts set status = 'sent', sent_at = now() where id = ${id} and status = 'requested' returning *`);
  return row ?? null;
}

/** Record the Stripe transfer id or the transaction hash, once. */
export async function recordRef(sql: Db, id: string, ref: string): Promise<PayoutRow | null> {
  const [row] = await asService(sql, (tx) => tx<PayoutRow[]>`
    update public.payouts set external_ref = ${ref} where id = ${id} and status = 'sent' and external_ref is null returning *`);
  return row ?? null;
}

/** sent -> paid. */
export async function markPaid(sql: Db, id: string, ref: string | null): Promise<PayoutRow | null> {
  const [row] = await asService(sql, (tx) => tx<PayoutRow[]>`
    update public.payouts set status = 'paid', completed_at = now(), external_ref = coalesce(external_ref, ${ref})
     where id = ${id} and status = 'sent' returning *`);
  return row ?? null;
}

/** requested | sent -> failed: the amount counts toward the balance again (the debit reversed). */
export async function markFailed(sql: Db, id: string, code: string): Promise<PayoutRow | null> {
  const failureCode = /^[a-z0-9_.]{1,64}$/.test(code) ? code : "transfer_failed";
  const [row] = await asService(sql, (tx) => tx<PayoutRow[]>`
    update public.payouts set status = 'failed', failure_code = ${failureCode}, completed_at = now()
     where id = ${id} and status in ('requested', 'sent') returning *`);
  return row ?? null;
}

/** The payout a Stripe transfer belongs to: by its id, else by the payout id in its metadata. */
export async function payoutOfTransfer(sql: Db, transferId: string, payoutId: string | null): Promise<PayoutRow | null> {
  const [row] = await asService(sql, (tx) => tx<PayoutRow[]>`
    select * from public.payouts
     where method = 'stripe_connect'
       and (external_ref = ${transferId} or (${payoutId}::uuid is not null and id = ${payoutId}::uuid))
     order by external_ref = ${transferId} desc limit 1`);
  return row ?? null;
}

/** Payouts waiting to be sent, oldest first. */
export async function requestedPayouts(sql: Db, limit = 100): Promise<PayoutRow[]> {
  return asService(sql, (tx) => tx<PayoutRow[]>`
    select * from public.payouts where status = 'requested' order by requested_at limit ${limit}`);
}

/** Payouts sent at least `olderThanSeconds` ago and not settled yet. */
export async function staleSentPayouts(sql: Db, olderThanSeconds: number, limit = 100): Promise<PayoutRow[]> {
  return asService(sql, (tx) => tx<PayoutRow[]>`
    select * from public.payouts where status = 'sent' and sent_at < now() - make_interval(secs => ${olderThanSeconds})
     order by sent_at limit ${limit}`);
}
