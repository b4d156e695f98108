// A key object's analytics outbox (M4): request metadata already committed to Postgres
// (objects/seller-key/earnings-flush.ts), waiting to be enqueued on the ANALYTICS queue
// for the sink (worker/analytics/).
//
// Rows enter in the same storage transaction that forgets them as flushed, so a row is
// either still waiting for its Postgres flush or waiting here, never lost in between.
// Draining enqueues them with sendBatch and deletes what was enqueued. It runs from the
// flush alarm and the flush RPCs, never on a buyer's request, and it never throws: the
// earnings flush does not wait for it or fail with it. A row enqueued twice (an object
// that dies between sendBatch and the delete) is harmless: both sinks keep one row per
// (request_id, key_id). A stream's row flushed before the stream ended comes through
// twice by design, first with duration_ms null, then with it (write-buffer.ts records it
// again when the stream ends); the consumer keeps the copy with the time.
//
// Bounded: at most MAX_ROWS wait (the oldest beyond go, logged: their Postgres rows stay),
// and none older than RAW_METADATA_DAYS (PR14).
import * as v from "valibot";
import { AnalyticsRowSchema, RAW_METADATA_DAYS, type AnalyticsRow } from "../../schema/analytics.ts";
import { sendAnalytics, type AnalyticsEnv } from "../../core/analytics.ts";

export const OUTBOX_MAX_ROWS = 20_000;
/** Rows read per drain step (a few sendBatch calls at most). */
const DRAIN_ROWS = 2_000;

export interface DrainResult {
  sent: number;
  left: number;
  /** Why the last send failed (an error name), if it did. */
  error?: string;
}

type OutboxRow = Omit<AnalyticsRow, "key_id" | "provider"> & { id: number };

export class AnalyticsOutbox {
  readonly #sql: SqlStorage;
  #draining: Promise<DrainResult> | null = null;

  constructor(storage: DurableObjectStorage) {
    this.#sql = storage.sql;
    this.#ensureTable();
    // Objects made before the time to last byte was carried have the table without it
    // (a table made after a wipe has it from the CREATE).
    if (!this.#sql.exec("SELECT * FROM analytics_outbox LIMIT 0").columnNames.includes("duration_ms")) {
      this.#sql.exec("ALTER TABLE analytics_outbox ADD COLUMN duration_ms INTEGER");
    }
  }

  /** Also after the object's storage was wiped (key removed, id reused). */
  #ensureTable() {
    this.#sql.exec(`CREATE TABLE IF NOT EXISTS analytics_outbox (
      id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, at INTEGER NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL,
      status INTEGER NOT NULL, latency_ms INTEGER NOT NULL, amount_micros INTEGER NOT NULL, outcome TEXT NOT NULL, duration_ms INTEGER)`);
  }

  /**
   * Inside the flusher's completing transaction: the request_meta rows it covered (rowid up
   * to `metaThrough`, except the `held` requests still upstream) join the outbox before
   * they are deleted there.
   */
  keep(metaThrough: number, held: string[] = []): void {
    this.#ensureTable();
    this.#sql.exec(
      `INSERT INTO analytics_outbox (request_id, at, method, route, status, latency_ms, amount_micros, outcome, duration_ms)
       SELECT request_id, at, method, route, status, latency_ms, amount_micros, outcome, duration_ms FROM request_meta
       WHERE rowid <= ? AND request_id NOT IN (SELECT value FROM json_each(?)) ORDER BY rowid`,
      metaThrough, JSON.stringify(held),
    );
    const over = this.size() - OUTBOX_MAX_ROWS;
    if (over > 0) {
      this.#sql.exec("DELETE FROM analytics_outbox WHERE id IN (SELECT id FROM analytics_outbox ORDER BY id LIMIT ?)", over);
      console.error(JSON.stringify({ evt: "analytics_outbox_trimmed", rows: over }));
    }
  }

  size(): number {
    this.#ensureTable();
    return this.#sql.exec<{ n: number }>("SELECT count(*) AS n FROM analytics_outbox").one().n;
  }

  /** Enqueue everything waiting (one drain at a time per object). Never throws. */
  drain(env: AnalyticsEnv, key: { keyId: string; provider: string }): Promise<DrainResult> {
    if (this.#draining) return this.#draining;
    const run = this.#drain(env, key).finally(() => {
      this.#draining = null;
    });
    this.#draining = run;
    return run;
  }

  async #drain(env: AnalyticsEnv, key: { keyId: string; provider: string }): Promise<DrainResult> {
    this.#ensureTable();
    this.#sql.exec("DELETE FROM analytics_outbox WHERE at < ?", Date.now() - RAW_METADATA_DAYS * 86_400_000);
    if (!env.ANALYTICS) {
      // No queue bound (not a configuration wrangler.toml makes): nothing would ever take them.
      this.#sql.exec("DELETE FROM analytics_outbox");
      return { sent: 0, left: 0 };
    }
    let sent = 0;
    try {
      for (;;) {
        const rows = this.#sql.exec<OutboxRow>("SELECT * FROM analytics_outbox ORDER BY id LIMIT ?", DRAIN_ROWS).toArray();
        if (rows.length === 0) break;
        // A row the sink would refuse (no router request id: a call made on the object
        // directly) is left out here, so it cannot take a whole message down with it.
        const valid = rows.map((r) => ({ id: r.id, row: toRow(r, key) })).filter((p) => v.is(AnalyticsRowSchema, p.row));
        let done = 0;
        await sendAnalytics(env, valid.map((p) => p.row), (n) => {
          // Forget exactly the rows now enqueued, at once: a later failure must not resend them.
          this.#sql.exec("DELETE FROM analytics_outbox WHERE id <= ?", valid[done + n - 1]!.id);
          done += n;
          sent += n;
        });
        this.#sql.exec("DELETE FROM analytics_outbox WHERE id <= ?", rows[rows.length - 1]!.id);
        if (rows.length < DRAIN_ROWS) break;
      }
      return { sent, left: 0 };
    } catch (error) {
      const name = error instanceof Error ? error.name : "unknown";
      const left = this.size();
      console.error(JSON.stringify({ evt: "analytics_enqueue_failed", keyId: key.keyId, error: name, rowsLeft: left }));
      return { sent, left, error: name };
    }
  }
}

function toRow(r: OutboxRow, key: { keyId: string; provider: string }): AnalyticsRow {
  return {
    request_id: String(r.request_id), key_id: key.keyId, provider: key.provider, route: String(r.route),
    method: String(r.method) as AnalyticsRow["method"], at: Number(r.at), latency_ms: Number(r.latency_ms),
    duration_ms: r.duration_ms === null || r.duration_ms === undefined ? null : Number(r.duration_ms),
    status: Number(r.status), amount_micros: Number(r.amount_micros), outcome: String(r.outcome) as AnalyticsRow["outcome"],
  };
}
