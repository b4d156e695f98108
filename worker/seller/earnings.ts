// Earnings (S7, PR16): the balance and history of the signed-in seller, from the ledger
// its key objects flush to (objects/seller-key/earnings-flush.ts) and its payouts. Balance = what
// the ledger credits (what buyers paid minus the marketplace fee) minus payouts that did
// not fail minus dispute clawbacks (schema/sql/0011). Read as the seller: row-level
// security shows only its own rows.
import * as v from "valibot";
import { micros, type EarningsLedgerRow, type PayoutRow, type SellerBalanceRow } from "../../schema/tables.ts";
import { json, parseOr400 } from "../../core/http.ts";
import { payoutView } from "./payouts.ts";
import { sellerRoute } from "./profile.ts";

const Query = v.object({
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d{1,3}$/, "limit must be 1-500"), v.transform(Number), v.minValue(1), v.maxValue(500)), "100"),
  before: v.optional(v.pipe(v.string(), v.regex(/^\d{1,18}$/, "before must be an entry id"))),
});

interface ClawbackRow { id: string; dispute_id: string; request_id: string; key_id: string; amount_micros: string; created_at: Date }
export const clawbackView = (c: ClawbackRow) => ({
  id: c.id, disputeId: c.dispute_id, requestId: c.request_id, keyId: c.key_id, amountMicros: micros(c.amount_micros), createdAt: c.created_at.toISOString(),
});

export const ledgerEntryView = (e: EarningsLedgerRow) => ({
  id: String(e.id),
  keyId: e.key_id,
  periodStart: e.period_start.toISOString(),
  periodEnd: e.period_end.toISOString(),
  /** What buyers paid for the period's requests. */
  grossMicros: micros(e.amount_micros),
  feeMicros: micros(e.fee_micros),
  /** Credited to the seller: gross minus fee. */
  netMicros: micros(e.amount_micros) - micros(e.fee_micros),
  requestCount: e.request_count,
  recordedAt: e.created_at.toISOString(),
});

export const getEarnings = sellerRoute(async (c) => {
  const q = parseOr400(Query, Object.fromEntries(new URL(c.request.url).searchParams), "query");
  const limit = Number(q.limit);
  const { balance, entries, payouts, clawbacks } = await c.asSeller(async (tx) => {
    const [balance] = await tx<SellerBalanceRow[]>`select * from public.seller_balances where seller_id = ${c.identity.id}`;
    const entries = await tx<EarningsLedgerRow[]>`
      select * from public.earnings_ledger
       where seller_id = ${c.identity.id} ${q.before ? tx`and id < ${q.before}` : tx``}
       order by id desc limit ${limit + 1}`;
    const payouts = await tx<PayoutRow[]>`select * from public.payouts where seller_id = ${c.identity.id} order by requested_at desc limit 100`;
    const clawbacks = await tx<ClawbackRow[]>`select * from public.clawbacks where seller_id = ${c.identity.id} order by created_at desc limit 100`;
    return { balance, entries, payouts, clawbacks };
  });
  const page = entries.slice(0, limit);
  return json({
    balance: {
      earnedMicros: micros(balance?.earned_micros ?? 0),
      withdrawnMicros: micros(balance?.withdrawn_micros ?? 0),
      availableMicros: Number(balance?.available_micros ?? 0),
    },
    history: page.map(ledgerEntryView),
    nextBefore: entries.length > limit ? String(page[page.length - 1]!.id) : null,
    payouts: payouts.map(payoutView),
    /** Dispute refunds that took back this seller's share (netted from the balance). */
    clawbacks: clawbacks.map(clawbackView),
  });
});
