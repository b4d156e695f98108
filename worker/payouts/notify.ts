// Seller webhooks for payout states (S6): payout.created, payout.sent, payout.paid,
// payout.failed. Called by whoever made the state move (a conditional UPDATE that
// returned the row), so each state is announced once.
import type { PayoutRow } from "../../schema/tables.ts";
import type { Env } from "../../core/env.ts";
import { emitSellerEvent } from "../../core/emit-event.ts";
import type { WebhookEventType } from "../../core/events.ts";
import { payoutView } from "./store.ts";

const TYPE_OF: Record<PayoutRow["status"], WebhookEventType | null> = {
  requested: "payout.created",
  sent: "payout.sent",
  paid: "payout.paid",
  failed: "payout.failed",
  canceled: null,
};

export async function notifyPayout(env: Env, row: PayoutRow): Promise<void> {
  const type = TYPE_OF[row.status];
  if (!type || !row.seller_id) return;
  const p = payoutView(row);
  await emitSellerEvent(env, row.seller_id, {
    type,
    data: {
      payoutId: p.id, amountMicros: p.amountMicros, amountUnits: p.amountUnits, method: p.method, status: p.status,
      externalRef: p.externalRef, failureCode: p.failureCode,
    },
  });
}
