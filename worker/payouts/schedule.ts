// Scheduled payouts (the Cron Trigger in wrangler.toml -> worker/index.ts `scheduled`).
// Each run, in order:
//   1 every ready, KYC-approved seller whose schedule (daily, weekly by default, monthly;
//     manual = never) has a period without a payout gets one for its whole available
//     balance, keyed by the period (weekly:2026-W49): a second run, or two runs at once,
//     find the first one (unique per seller and period) and make nothing new;
//   2 every payout still requested is executed (claimed first: one winner per payout);
//   3 payouts left sent for a while are reconciled (Stripe / chain state read back).
import { asService, dbErrorName, type PayoutPreferenceRow, type PayoutSchedule } from "../../schema/tables.ts";
import { withDb, type Db } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { executePayout, reconcilePayout } from "./execute.ts";
import { requestedPayouts, requestPayoutRow, staleSentPayouts } from "./store.ts";

/** Default minimum payout: $10. */
export const DEFAULT_MIN_PAYOUT_MICROS = 10_000_000;
/** A payout sent this long ago without a settled state is looked at again. */
const RECONCILE_AFTER_SECONDS = 600;

export function minPayoutMicros(env: Pick<Env, "PAYOUT_MIN_MICROS">): number {
  const raw = env.PAYOUT_MIN_MICROS;
  if (raw === undefined || raw === "") return DEFAULT_MIN_PAYOUT_MICROS;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error("PAYOUT_MIN_MICROS must be a whole number of micro-dollars >= 1");
  return n;
}

/** The period a schedule pays at `now` (UTC), or null for manual. ISO weeks start on Monday. */
export function periodKey(schedule: PayoutSchedule, now: Date): string | null {
  const y = now.getUTCFullYear();
  const m = String(now.getUTCMonth() + 1).padStart(2, "0");
  const d = String(now.getUTCDate()).padStart(2, "0");
  switch (schedule) {
    case "manual":
      return null;
    case "daily":
      return `daily:${y}-${m}-${d}`;
    case "monthly":
      return `monthly:${y}-${m}`;
    case "weekly": {
      // ISO 8601 week: the week with the year's first Thursday is week 1.
      const day = new Date(Date.UTC(y, now.getUTCMonth(), now.getUTCDate()));
      const dow = day.getUTCDay() || 7;
      day.setUTCDate(day.getUTCDate() + 4 - dow);
      const isoYear = day.getUTCFullYear();
      const week = Math.ceil(((day.getTime() - Date.UTC(isoYear, 0, 1)) / 86_400_000 + 1) / 7);
      return `weekly:${isoYear}-W${String(week).padStart(2, "0")}`;
    }
  }
}

export interface ScheduleReport {
  requested: number;
  executed: number;
  reconciled: number;
  skipped: Record<string, number>;
}

/** One run of the payout schedule. Safe to run twice, or twice at once. */
export async function runPayoutSchedule(env: Env, now = new Date()): Promise<ScheduleReport> {
  const report: ScheduleReport = { requested: 0, executed: 0, reconciled: 0, skipped: {} };
  const min = minPayoutMicros(env);
  await withDb(env, null, async (sql) => {
    for (const pref of await dueSellers(sql)) {
      const key = periodKey(pref.schedule, now);
      if (!key) continue;
      try {
        await requestPayoutRow(sql, pref.seller_id, { amountMicros: null, minMicros: min, scheduleKey: key });
        report.requested++;
      } catch (error) {
        // Nothing to pay, not ready, one in flight: this seller waits for the next run.
        const name = dbErrorName(error) ?? "error";
        report.skipped[name] = (report.skipped[name] ?? 0) + 1;
        if (name === "error") console.error(JSON.stringify({ evt: "payout_schedule_error", error: error instanceof Error ? error.name : "unknown" }));
      }
    }
    for (const payout of await requestedPayouts(sql)) {
      const after = await executePayout(env, sql, payout.id);
      if (after && after.status !== "requested") report.executed++;
    }
    for (const payout of await staleSentPayouts(sql, RECONCILE_AFTER_SECONDS)) {
      const after = await reconcilePayout(env, sql, payout);
      if (after && after.status !== "sent") report.reconciled++;
    }
  });
  console.log(JSON.stringify({ evt: "payout_schedule", ...report }));
  return report;
}

/** Sellers on a schedule with a ready method and approved KYC. */
async function dueSellers(sql: Db): Promise<Pick<PayoutPreferenceRow, "seller_id" | "schedule">[]> {
  return asService(sql, (tx) => tx<Pick<PayoutPreferenceRow, "seller_id" | "schedule">[]>`
    select p.seller_id, p.schedule from public.payout_preferences p
      join public.kyc k on k.seller_id = p.seller_id and k.status = 'approved'
     where p.schedule <> 'manual'
       and ((p.method = 'stripe_connect' and p.stripe_payouts_enabled) or (p.method = 'usdc_tempo' and p.evm_confirmed_at is not null))
     order by p.seller_id`);
}
