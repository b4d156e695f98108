// The producer side of the analytics stream (M4): rows -> ANALYTICS queue messages. Called
// by the key objects after their rows are committed to Postgres (objects/seller-key/
// analytics-outbox.ts), never on a buyer's request path.
//
// Queues bound a message to 128 KB and a sendBatch to 100 messages and 256 KB, and bill
// by 64 KB: rows are packed into messages of at most MESSAGE_BYTES, and messages into
// batches of at most BATCH_BYTES.
import type { AnalyticsMessage, AnalyticsRow } from "../schema/analytics.ts";

export interface AnalyticsEnv {
  ANALYTICS?: Queue<AnalyticsMessage>;
}

const MESSAGE_BYTES = 60_000;
const BATCH_BYTES = 200_000;
const BATCH_MESSAGES = 100;
const MESSAGE_ROWS = 1000;

/** Rows packed into messages, in order, each under the size bound. */
export function analyticsMessages(rows: AnalyticsRow[]): { body: AnalyticsMessage; bytes: number }[] {
  const out: { body: AnalyticsMessage; bytes: number }[] = [];
  let current: AnalyticsRow[] = [];
  let bytes = 0;
  for (const row of rows) {
    // UTF-8 length: routes may hold non-ASCII characters.
    const size = new TextEncoder().encode(JSON.stringify(row)).length + 1;
    if (current.length > 0 && (bytes + size > MESSAGE_BYTES || current.length >= MESSAGE_ROWS)) {
      out.push({ body: { v: 1, rows: current }, bytes: bytes + 16 });
      current = [];
      bytes = 0;
    }
    current.push(row);
    bytes += size;
  }
  if (current.length > 0) out.push({ body: { v: 1, rows: current }, bytes: bytes + 16 });
  return out;
}

/**
 * Enqueue `rows`, in order, in one or more sendBatch calls; `sent(n)` hears after each
 * call that the next n rows are enqueued, so a caller keeping an outbox forgets exactly
 * those (a later failure does not resend them). Rejects on the first failed send.
 * Resolves to the number of messages. No binding: nothing is sent.
 */
export async function sendAnalytics(env: AnalyticsEnv, rows: AnalyticsRow[], sent: (rows: number) => void = () => {}): Promise<number> {
  if (!env.ANALYTICS || rows.length === 0) return 0;
  const queue = env.ANALYTICS;
  const messages = analyticsMessages(rows);
  let batch: MessageSendRequest<AnalyticsMessage>[] = [];
  let bytes = 0;
  let batchRows = 0;
  const flush = async () => {
    await queue.sendBatch(batch);
    sent(batchRows);
    batch = [];
    bytes = 0;
    batchRows = 0;
  };
  for (const m of messages) {
    if (batch.length > 0 && (bytes + m.bytes > BATCH_BYTES || batch.length >= BATCH_MESSAGES)) await flush();
    batch.push({ body: m.body, contentType: "json" });
    bytes += m.bytes;
    batchRows += m.body.rows.length;
  }
  if (batch.length > 0) await flush();
  return messages.length;
}
