// Ops over payouts (behind the ops token, /ops/payouts...):
//   GET  /ops/payouts?status=pending|failed|all  pending = requested or sent (default: pending and failed)
//   POST /ops/payouts/:id/retry                   a failed payout again, as a new payout linked to it
// A retry is safe to repeat: the new payout names the failed one (unique), so a second
// retry returns the first retry instead of paying twice; it re-checks KYC, readiness and
// the balance like any payout, and goes through the same execution.
import * as v from "valibot";
import { asService, type PayoutRow } from "../../schema/tables.ts";
import { withDb } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { ApiError, json, parseOr400 } from "../../core/http.ts";
import { executePayout } from "./execute.ts";
import { notifyPayout } from "./notify.ts";
import { getPayout, payoutView, requestPayoutRow } from "./store.ts";

const ListQuery = v.object({
  status: v.optional(v.picklist(["pending", "failed", "open", "all"], "status must be pending, failed, open or all"), "open"),
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d{1,4}$/, "limit must be 1-1000"), v.transform(Number), v.minValue(1), v.maxValue(1000)), "200"),
});
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const STATUSES: Record<string, string[]> = {
  pending: ["requested", "sent"],
  failed: ["failed"],
  open: ["requested", "sent", "failed"],
  all: ["requested", "sent", "paid", "failed", "canceled"],
};

/** Ops see the seller id (to act) but never a Stripe or chain secret. */
const opsView = (p: PayoutRow) => ({ ...payoutView(p), sellerId: p.seller_id });

export async function listPayoutsHandler(request: Request, env: Env): Promise<Response> {
  const q = parseOr400(ListQuery, Object.fromEntries(new URL(request.url).searchParams), "query");
  const rows = await withDb(env, null, (sql) => asService(sql, (tx) => tx<PayoutRow[]>`
    select * from public.payouts where status in ${tx(STATUSES[q.status]!)} order by requested_at desc limit ${Number(q.limit)}`));
  return json({ payouts: rows.map(opsView) });
}

export async function retryPayoutHandler(env: Env, id: string | undefined): Promise<Response> {
  if (!id || !UUID.test(id)) throw new ApiError("invalid_request", "a payout id is a UUID");
  return withDb(env, null, async (sql) => {
    const original = await getPayout(sql, id);
    if (!original) throw new ApiError("payout_not_found", `no payout ${id}`);
    if (original.status !== "failed") throw new ApiError("payout_not_retryable", `only a failed payout can be retried (this one is ${original.status})`);
    if (!original.seller_id) throw new ApiError("payout_not_retryable", "the seller closed the account");
    const retry = await requestPayoutRow(sql, original.seller_id, { amountMicros: Number(original.amount_micros), minMicros: 1, retryOf: original.id });
    if (retry.status === "requested") await notifyPayout(env, retry);
    const after = (await executePayout(env, sql, retry.id)) ?? retry;
    return json({ retryOf: original.id, payout: opsView(after) }, 201);
  });
}
