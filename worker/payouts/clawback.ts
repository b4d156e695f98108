// Dispute clawbacks (issue 12): when a dispute is refunded to the buyer, the serving
// seller gives back its share: a negative entry in its balance (public.clawbacks),
// netted before its next payout, instead of the marketplace absorbing it.
//
// Which seller served: the request's metadata row (request_log, flushed by the key object)
// names the key; the key names the seller. The share: what the seller was credited for the
// request, the key's price minus the marketplace fee (core/money.ts split), capped
// at the refund. Exactly once per dispute (unique dispute_id); a refund whose request is
// not in the log yet reports `pending` and the same resolve call can be repeated later.
import { asService } from "../../schema/tables.ts";
import { withDb } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { feeBps, split } from "../../core/money.ts";

export type ClawbackResult =
  | { status: "recorded" | "already_recorded"; sellerId: string; keyId: string; amountMicros: number }
  | { status: "pending"; reason: "request_not_logged_yet" }
  | { status: "none"; reason: "no_seller" | "nothing_to_claw_back" };

export async function clawBackDispute(env: Env, d: { disputeId: string; requestId: string; refundedMicros: number }): Promise<ClawbackResult> {
  if (d.refundedMicros <= 0) return { status: "none", reason: "nothing_to_claw_back" };
  return withDb(env, null, (sql) => asService(sql, async (tx) => {
    const [existing] = await tx<{ seller_id: string | null; key_id: string; amount_micros: string }[]>`
      select seller_id, key_id, amount_micros::text from public.clawbacks where dispute_id = ${d.disputeId}`;
    if (existing) return { status: "already_recorded" as const, sellerId: existing.seller_id ?? "", keyId: existing.key_id, amountMicros: Number(existing.amount_micros) };
    const [logged] = await tx<{ key_id: string }[]>`select key_id from public.request_log where request_id = ${d.requestId}`;
    if (!logged) return { status: "pending" as const, reason: "request_not_logged_yet" as const };
    // The key row, or (key removed since) the seller its earnings were credited to.
    const [key] = await tx<{ seller_id: string; price_micros: string | null }[]>`
      select seller_id, price_micros::text from public.keys where key_id = ${logged.key_id}
      union all
      select seller_id, null from public.earnings_ledger where key_id = ${logged.key_id} and seller_id is not null
      limit 1`;
    if (!key) return { status: "none" as const, reason: "no_seller" as const };
    const price = key.price_micros === null ? d.refundedMicros : Math.min(Number(key.price_micros), d.refundedMicros);
    const share = split(d.refundedMicros, price, feeBps(env)).sellerMicros;
    if (share <= 0) return { status: "none" as const, reason: "nothing_to_claw_back" as const };
    const inserted = await tx`
      insert into public.clawbacks (dispute_id, request_id, key_id, seller_id, amount_micros)
      values (${d.disputeId}, ${d.requestId}, ${logged.key_id}, ${key.seller_id}, ${share})
      on conflict (dispute_id) do nothing`;
    return { status: inserted.count === 1 ? "recorded" as const : "already_recorded" as const, sellerId: key.seller_id, keyId: logged.key_id, amountMicros: share };
  }));
}
