// The analytics sink (M4): the consumer of the ANALYTICS queue and of its dead-letter
// queue (the Worker's `queue` handler routes both here).
//
// The key objects enqueue request metadata after their earnings flush committed it to
// Postgres (objects/seller-key/analytics-outbox.ts): this stream runs beside the flush and
// never on a buyer's request, so a slow or failing sink delays analytics, never a request.
//
// Each batch goes to one sink in one call:
//   * Tinybird's Events API when TINYBIRD_TOKEN is set (production; tinybird.ts);
//   * otherwise the local Postgres `request_log`, `on conflict (request_id, key_id) do
//     nothing`. That is the table the flush already wrote these rows to, so locally the
//     sink adds nothing twice: one table, one retention rule (PR14), read by disputes,
//     clawbacks and the statistics; the queue path is exercised end to end all the same.
// Success acks the batch; a failure or a timeout retries every message with exponential
// backoff. After max_retries the runtime moves them to the dead-letter queue, whose
// consumer tries again hours apart and finally drops a batch with a log line (the rows
// stay in Postgres request_log for 30 days).
//
// Nothing but the eleven metadata fields passes (schema/analytics.ts is strict), and no row
// older than 30 days is delivered (PR14).
import * as v from "valibot";
import { ANALYTICS_DLQ, ANALYTICS_QUEUE, AnalyticsMessageSchema, RAW_METADATA_DAYS, type AnalyticsRow } from "../../schema/analytics.ts";
import { asService } from "../../schema/tables.ts";
import { connectDb, type DbEnv } from "../../core/postgres.ts";
import { numberSetting } from "../../core/settings.ts";
import { postEvents, SinkError, type TinybirdEnv } from "./tinybird.ts";

export interface AnalyticsSinkEnv extends DbEnv, TinybirdEnv {
  ANALYTICS_RETRY_BASE_SECONDS?: string;
}

export const isAnalyticsQueue = (name: string) => name === ANALYTICS_QUEUE || name === ANALYTICS_DLQ;

export const DEFAULT_RETRY_BASE_SECONDS = 30;
/** Longest wait between two attempts (Queues allow up to 12 h). */
export const MAX_RETRY_DELAY_SECONDS = 6 * 60 * 60;
/** On the dead-letter queue, the attempt after which a batch is dropped (its max_retries is 5). */
export const DEAD_LETTER_ATTEMPTS = 5;

/** Seconds before the next attempt after attempt `attempt` (1-based) failed: base * 2^(attempt-1), capped. */
export function retryDelaySeconds(attempt: number, baseSeconds = DEFAULT_RETRY_BASE_SECONDS): number {
  const n = Math.max(1, Math.min(Math.floor(attempt), 30));
  return Math.min(baseSeconds * 2 ** (n - 1), MAX_RETRY_DELAY_SECONDS);
}

export type Sink = "tinybird" | "postgres";
export const sinkOf = (env: AnalyticsSinkEnv): Sink => (env.TINYBIRD_TOKEN?.trim() ? "tinybird" : "postgres");

const log = (evt: string, fields: Record<string, unknown>) => console.log(JSON.stringify({ evt, ...fields }));

/** The `queue` handler for the analytics queue and its dead-letter queue. */
export async function handleAnalyticsBatch(batch: MessageBatch<unknown>, env: AnalyticsSinkEnv): Promise<void> {
  const dead = batch.queue === ANALYTICS_DLQ;
  const sink = sinkOf(env);
  const valid: { message: Message<unknown>; rows: AnalyticsRow[] }[] = [];
  for (const message of batch.messages) {
    const parsed = v.safeParse(AnalyticsMessageSchema, message.body);
    if (parsed.success) {
      valid.push({ message, rows: parsed.output.rows });
      continue;
    }
    // A malformed message (or one carrying any field beyond the eleven) will not get better: drop it, loudly.
    log("analytics_message_invalid", { queue: batch.queue, id: message.id, issue: parsed.issues[0]?.message ?? "invalid" });
    message.ack();
  }
  // One row per (request_id, key_id): a row its key object enqueued twice goes once. A
  // stream's row can come twice by design (flushed before the stream ended, without
  // duration_ms, then again with it): the copy that has the time is the one kept.
  const oldest = Date.now() - RAW_METADATA_DAYS * 86_400_000;
  const byId = new Map<string, AnalyticsRow>();
  for (const r of valid.flatMap((m) => m.rows)) {
    if (r.at < oldest) continue;
    const id = `${r.request_id} ${r.key_id}`;
    const kept = byId.get(id);
    if (!kept || (kept.duration_ms === null && r.duration_ms !== null)) byId.set(id, r);
  }
  const rows = [...byId.values()];
  if (rows.length === 0) {
    for (const m of valid) m.message.ack();
    return;
  }
  try {
    const result = sink === "tinybird" ? await postEvents(env, rows) : await toPostgres(env, rows);
    for (const m of valid) m.message.ack();
    log("analytics_delivered", { sink, queue: batch.queue, rows: rows.length, ...result });
    if ("quarantined" in result && result.quarantined > 0) {
      // Rows the data source's schema refused are in Tinybird's quarantine: sending them again would not help.
      console.error(JSON.stringify({ evt: "analytics_quarantined", sink, rows: result.quarantined }));
    }
  } catch (error) {
    const reason = error instanceof SinkError ? error.reason : error instanceof Error ? ((error as { code?: unknown }).code as string | undefined) ?? error.name : "unknown";
    const base = numberSetting(env.ANALYTICS_RETRY_BASE_SECONDS, DEFAULT_RETRY_BASE_SECONDS);
    const after = error instanceof SinkError ? error.retryAfterSeconds : undefined;
    let dropped = 0;
    for (const { message, rows: mine } of valid) {
      if (dead && message.attempts >= DEAD_LETTER_ATTEMPTS) {
        dropped += mine.length;
        message.ack();
        continue;
      }
      // On the dead-letter queue, hours apart; before it, exponential from the base.
      const delay = dead ? retryDelaySeconds(10 + message.attempts, base) : retryDelaySeconds(message.attempts, base);
      message.retry({ delaySeconds: Math.min(Math.max(delay, after ?? 0), MAX_RETRY_DELAY_SECONDS) });
    }
    console.error(JSON.stringify({ evt: "analytics_sink_failed", sink, queue: batch.queue, reason, rows: rows.length, attempts: Math.max(...valid.map((m) => m.message.attempts)) }));
    if (dropped > 0) console.error(JSON.stringify({ evt: "analytics_dropped", sink, rows: dropped, reason }));
  }
}

/** The local sink: request_log, idempotent by its key (request_id, key_id). */
async function toPostgres(env: DbEnv, rows: AnalyticsRow[]): Promise<{ inserted: number }> {
  const sql = connectDb(env, 1);
  try {
    // One statement, one array per column (as the earnings flush writes them).
    const col = (pick: (r: AnalyticsRow) => string | number) => rows.map((r) => String(pick(r)));
    const result = await asService(sql, (tx) => tx`
      insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, status, amount_micros, outcome, duration_ms)
      select r.request_id, r.key_id, r.provider, r.route, r.method, to_timestamp(r.at_ms / 1000.0), r.latency_ms, r.status, r.amount_micros, r.outcome, r.duration_ms
      from unnest(${col((r) => r.request_id)}::text[], ${col((r) => r.key_id)}::text[], ${col((r) => r.provider)}::text[],
                  ${col((r) => r.route)}::text[], ${col((r) => r.method)}::text[], ${col((r) => r.at)}::bigint[],
                  ${col((r) => r.latency_ms)}::int[], ${col((r) => r.status)}::int[], ${col((r) => r.amount_micros)}::bigint[],
                  ${col((r) => r.outcome)}::text[], ${rows.map((r) => (r.duration_ms === null ? null : String(r.duration_ms)))}::int[])
        as r(request_id, key_id, provider, route, method, at_ms, latency_ms, status, amount_micros, outcome, duration_ms)
      on conflict (request_id, key_id) do nothing`);
    return { inserted: result.count };
  } finally {
    await sql.end({ timeout: 5 }).catch(() => {});
  }
}
