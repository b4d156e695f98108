// The scheduled jobs themselves (M1). Each is idempotent: run twice, or twice at once, it
// changes nothing the first run did not. Each returns its counts; the runner (run.ts)
// records them.
import { asService } from "../../schema/tables.ts";
import { withDb } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { runPayoutSchedule } from "../payouts/schedule.ts";
import type { Counts } from "./record.ts";
import type { JobName } from "./schedule.ts";

export interface JobInput {
  env: Env;
  /** The Cron Trigger's scheduled time (or now, for a run asked by an operator). */
  now: Date;
  /** Where the job had got to (its last watermark), if it keeps one. */
  watermark: Date | null;
}

export interface JobResult {
  counts: Counts;
  /** Set: the run did its work but some of it failed (the record says failed, with this). */
  error?: string;
  watermark?: Date;
}

const HOUR = 3_600_000;
/** Hours before the last rolled-up hour that each rollup recomputes: flushes retried late (Postgres down) land there. */
export const ROLLUP_LOOKBACK_HOURS = 6;
/** Raw rows exist for 30 days: no rollup reaches further back. */
const ROLLUP_MAX_HOURS = 30 * 24;
/** Key objects asked at once by the safety-net flush. */
const FLUSH_CONCURRENCY = 8;
/** Keys read per page from public.keys. */
const KEY_PAGE = 500;

/**
 * Retention (PR14, PR24): public.run_retention() rolls up the raw hours about to go, then
 * deletes raw request metadata after 30 days, hourly aggregates after 1 year, the ledger,
 * payouts, their events and clawbacks after 7 years, resolved disputes after 7 years, and
 * the webhook delivery log after 30 days. Counts: rows deleted per table.
 */
async function retention({ env }: JobInput): Promise<JobResult> {
  const [row] = await withDb(env, null, (sql) => asService(sql, (tx) => tx<{ r: Record<string, number> }[]>`select public.run_retention() as r`));
  return { counts: row!.r };
}

/**
 * The hourly aggregation: recompute request_log_hourly for every whole hour from a few
 * hours before the last run's end up to the start of the current hour. A recomputation
 * replaces what was there, so a second run changes nothing and late rows are picked up.
 */
async function rollup({ env, now, watermark }: JobInput): Promise<JobResult> {
  const to = new Date(Math.floor(now.getTime() / HOUR) * HOUR);
  const resumeAt = Math.min(watermark?.getTime() ?? to.getTime(), to.getTime());
  const from = new Date(Math.max(resumeAt - ROLLUP_LOOKBACK_HOURS * HOUR, to.getTime() - ROLLUP_MAX_HOURS * HOUR));
  const [row] = await withDb(env, null, (sql) => asService(sql, (tx) => tx<{ n: number }[]>`select public.rollup_request_log(${from}, ${to}) as n`));
  return { counts: { groups: row!.n, hours: (to.getTime() - from.getTime()) / HOUR, from: from.toISOString(), to: to.toISOString() }, watermark: to };
}

/**
 * The safety-net earnings flush: each key object flushes on its own alarm; this asks every
 * key in public.keys to flush whatever it still holds (earnings, metadata, the analytics
 * outbox), in case an alarm was lost or is backing off. A flush is idempotent on its
 * flush id, and a key with nothing to flush does nothing. Counts: keys asked, keys that
 * flushed, micro-dollars and metadata rows moved, keys with no object record (missing),
 * keys whose flush failed.
 */
async function earningsFlush({ env }: JobInput): Promise<JobResult> {
  const counts = { keys: 0, flushed: 0, micros: 0, rows: 0, idle: 0, missing: 0, failed: 0 };
  const reasons = new Set<string>();
  let after = "";
  for (;;) {
    const page = await withDb(env, null, (sql) => asService(sql, (tx) => tx<{ key_id: string; home: "eu" | "default" }[]>`
      select key_id, home from public.keys where key_id > ${after} order by key_id limit ${KEY_PAGE}`));
    if (page.length === 0) break;
    after = page[page.length - 1]!.key_id;
    let next = 0;
    const worker = async () => {
      while (next < page.length) {
        const key = page[next++]!;
        counts.keys++;
        try {
          const result = await keyStub(env, key.key_id, key.home).flushEarnings();
          if (result.ok && result.value.flushed) {
            counts.flushed++;
            counts.micros += result.value.amountMicros;
            counts.rows += result.value.metadataRows;
          } else if (result.ok) counts.idle++;
          else if (result.code === "key_not_found") counts.missing++;
          else {
            counts.failed++;
            reasons.add(result.code);
          }
        } catch (error) {
          counts.failed++;
          reasons.add(error instanceof Error ? error.name : "unknown");
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(FLUSH_CONCURRENCY, page.length) }, worker));
    if (page.length < KEY_PAGE) break;
  }
  return { counts, ...(counts.failed > 0 ? { error: `${counts.failed} key(s) did not flush: ${[...reasons].join(", ")}` } : {}) };
}

/** Scheduled payouts (worker/payouts/schedule.ts), recorded like the others. */
async function payouts({ env, now }: JobInput): Promise<JobResult> {
  const report = await runPayoutSchedule(env, now);
  const skipped = Object.values(report.skipped).reduce((a, b) => a + b, 0);
  return { counts: { requested: report.requested, executed: report.executed, reconciled: report.reconciled, skipped } };
}

export const JOB_RUNS: Record<JobName, (input: JobInput) => Promise<JobResult>> = {
  payouts,
  earnings_flush: earningsFlush,
  rollup,
  retention,
};
