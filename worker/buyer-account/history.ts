// What a buyer account shows and starts for its attached ids (B4, B5): the spend history
// of the last 90 days, and a card top-up.
//
// The history is read from where B5 keeps buyer spend: each id's BuyerWallet object (per-day
// spend and the list of debits, payments, refunds and top-ups, both kept 90 days; the KV
// SPEND entries are its copy, written a few seconds behind). Nothing is copied into
// Postgres: an account only points at ids, so a detached id's spend stops showing at once,
// and no spend outlives its 90 days because an account looked at it.
import * as v from "valibot";
import {
  HISTORY_DAYS,
  type BuyerAccountHistory, type BuyerIdHistory, type SpendTotals,
} from "../../schema/buyer-account.ts";
import { BUYER_ID } from "../../core/did.ts";
import { ApiError, parseOr400, readJson, json } from "../../core/http.ts";
import { walletStub } from "../../objects/buyer-wallet/stub.ts";
import { ReturnUrlSchema, startCheckout, TopUpAmountSchema } from "../payments/stripe.ts";
import { attachedIds, buyerRoute } from "./account.ts";

const DAY_MS = 86_400_000;
/** The wallet keeps at most this many history entries (objects/buyer-wallet MAX_HISTORY). */
const ENTRY_LIMIT = 500;

const HistoryQuery = v.object({
  days: v.optional(v.pipe(
    v.string(), v.regex(/^\d{1,3}$/, `days must be 1-${HISTORY_DAYS}`), v.transform(Number),
    v.minValue(1, `days must be 1-${HISTORY_DAYS}`), v.maxValue(HISTORY_DAYS, `days must be 1-${HISTORY_DAYS}`),
  ), String(HISTORY_DAYS)),
});

const add = (a: SpendTotals, b: SpendTotals): SpendTotals =>
  ({ spentMicros: a.spentMicros + b.spentMicros, refundedMicros: a.refundedMicros + b.refundedMicros, requests: a.requests + b.requests });
const ZERO: SpendTotals = { spentMicros: 0, refundedMicros: 0, requests: 0 };

/** GET /api/buyer/account/history?days=1..90 (default 90): per attached id, its days, entries, balance and totals. */
export const getHistory = buyerRoute(async (c) => {
  const q = parseOr400(HistoryQuery, Object.fromEntries(new URL(c.request.url).searchParams), "history query");
  const days = Number(q.days);
  const now = Date.now();
  // Today and the days-1 UTC days before it.
  const since = new Date(now - (days - 1) * DAY_MS).toISOString().slice(0, 10);
  const sinceMs = Date.parse(`${since}T00:00:00Z`);
  const ids = await attachedIds(c);
  const buyerIds: BuyerIdHistory[] = await Promise.all(ids.map(async (row) => {
    const wallet = walletStub(c.env, row.buyer_id_hash);
    const [spend, summary] = await Promise.all([wallet.spendDays(), wallet.summary(ENTRY_LIMIT)]);
    const inWindow = spend.filter((d) => d.day >= since);
    return {
      buyerId: row.buyer_id_hash,
      attachedAt: row.attached_at.toISOString(),
      balanceMicros: summary.balanceMicros,
      days: inWindow,
      entries: summary.history.filter((h) => h.at >= sinceMs),
      totals: inWindow.reduce<SpendTotals>((t, d) => add(t, d), ZERO),
    };
  }));
  const body: BuyerAccountHistory = { since, days, buyerIds, totals: buyerIds.reduce<SpendTotals>((t, b) => add(t, b.totals), ZERO) };
  return json(body, 200, { "cache-control": "no-store" });
});

const AccountTopUpSchema = v.strictObject({
  buyerId: v.pipe(v.string(), v.regex(BUYER_ID, "buyerId must be one of your attached buyer ids (64 lowercase hex characters)")),
  amountMicros: TopUpAmountSchema,
  successUrl: ReturnUrlSchema,
  cancelUrl: ReturnUrlSchema,
});

/**
 * POST /api/buyer/account/topup {buyerId, amountMicros, successUrl?, cancelUrl?}: the same
 * Stripe Checkout top-up as POST /api/credit/topup, for one of this account's ids only.
 */
export const accountTopUp = buyerRoute(async (c) => {
  const input = parseOr400(AccountTopUpSchema, await readJson(c.request), "top-up");
  const attached = await attachedIds(c);
  if (!attached.some((r) => r.buyer_id_hash === input.buyerId)) {
    throw new ApiError("buyer_id_not_attached", "that buyer id is not attached to this account: attach its key first (POST /api/buyer/account/ids)");
  }
  return startCheckout(c.request, c.env, input);
});
