// A key object's earnings and request metadata, moved to Postgres (S7, PR16, PR12).
//
// SellerKey accumulates what a key earns (its `earnings` row) and one metadata row per
// request (`request_meta`) in its own SQLite storage, on the hot path, with no network.
// From an alarm it flushes them, exactly once in effect, even across crashes:
//
//   1 take     in one synchronous storage transaction: the accumulator moves into a
//              *pending flush* with the next sequence number, with the rowid of the last
//              of up to FLUSH_ROWS metadata rows it covers (oldest first), and the
//              accumulator restarts at zero (and its paid requests stop being reversible:
//              the `voidable` rows go). The rows themselves stay where they are
//              until step 3 (no copy, no sort: rowid is insertion order). The flush id is
//              `<keyId>.<epoch>.<seq>` (epoch: random, per object lifetime, so a key id
//              reused after removal never collides with an old flush).
//   2 send     one Postgres transaction as service_role: public.record_earnings (idempotent
//              on the flush id: a second delivery with the same figures is a no-op) and the
//              metadata rows with `on conflict (request_id, key_id)` changing nothing but a
//              missing time to the last byte (a stream's row recorded again when it ended).
//   3 complete the pending flush and the metadata rows it covered are deleted locally
//              (in the same storage transaction, rows Postgres took join the analytics
//              outbox: objects/seller-key/analytics-outbox.ts).
//
// A crash (or a lost answer) between 2 and 3 leaves the pending flush in storage; the
// next run sends the very same flush again, which changes nothing in Postgres, then
// completes it. Earnings made meanwhile wait in the accumulator for the next flush.
//
// Paid requests still upstream (booked before their outcome is known: SellerKey.fetch,
// WriteBuffer.hold) are left out of step 1: their earnings stay in the accumulator, their
// `voidable` rows stay, and their metadata rows stay for a later flush, so that a call that
// fails can still be reversed, and the ledger never gets a row that says nothing yet.
import { RequestLogEntrySchema, asService, dbErrorName, recordEarnings } from "../../schema/tables.ts";
import type { RequestMeta } from "../../schema/wire.ts";
import { connectDb, type DbEnv } from "../../core/postgres.ts";
import * as v from "valibot";

/** Metadata rows per flush; more wait for the next run (scheduled at once). */
export const FLUSH_ROWS = 1000;

export interface PendingFlush {
  flushId: string;
  seq: number;
  keyId: string;
  sellerId: string;
  provider: string;
  periodStart: number;
  periodEnd: number;
  /** What buyers paid for this key's served requests: the seller's share plus the fee. */
  amountMicros: number;
  feeMicros: number;
  requestCount: number;
  /** The metadata rows covered: request_meta rowids up to this one (0: none), except `held`'s. */
  metaThrough: number;
  /** Request ids of paid requests still upstream when the flush was taken: left out. */
  held?: string[];
}

export interface FlushOutcome {
  /** A flush was sent and completed this time (false: nothing to flush). */
  flushed: boolean;
  flushId: string | null;
  /** The ledger row was written now (false: nothing earned, or it was already recorded). */
  recordedNow: boolean;
  amountMicros: number;
  metadataRows: number;
  /** More metadata rows are waiting for another run. */
  more: boolean;
}

export interface FlushTarget {
  keyId: string;
  sellerId: string;
  provider: string;
  createdAt: number;
}

type State = {
  epoch: string;
  seq: number;
  last_end: number;
  pending: string | null;
};

export class EarningsFlusher {
  readonly #storage: DurableObjectStorage;
  readonly #sql: SqlStorage;
  /** One flush at a time per object: the alarm and an RPC must not interleave. */
  #running: Promise<FlushOutcome> | null = null;

  /** Called inside step 3's transaction with the covered rows (last rowid, ids left out), when Postgres took them. */
  readonly #committed: ((metaThrough: number, held: string[]) => void) | undefined;

  constructor(storage: DurableObjectStorage, committed?: (metaThrough: number, held: string[]) => void) {
    this.#storage = storage;
    this.#sql = storage.sql;
    this.#committed = committed;
    this.#ensureTable();
  }

  /** Also after the object's storage was wiped (key removed, id reused): the table comes back. */
  #ensureTable() {
    this.#sql.exec(`CREATE TABLE IF NOT EXISTS earnings_flush (
      id INTEGER PRIMARY KEY CHECK (id = 1), epoch TEXT NOT NULL, seq INTEGER NOT NULL, last_end INTEGER NOT NULL, pending TEXT)`);
  }

  /**
   * Take (or resume) a flush, send it and complete it; `held`: the paid requests still
   * upstream, read when the flush is taken. Throws if Postgres refused or was unreachable.
   */
  flush(env: DbEnv, target: FlushTarget, held: () => string[] = () => []): Promise<FlushOutcome> {
    const run = (this.#running ?? Promise.resolve(null)).catch(() => null).then(() => this.#flushOnce(env, target, held));
    this.#running = run;
    const clear = () => {
      if (this.#running === run) this.#running = null;
    };
    run.then(clear, clear);
    return run;
  }

  /** The flush taken but not yet confirmed, if any (ops inspection, tests). */
  pending(): PendingFlush | null {
    const raw = this.#state()?.pending;
    return raw ? (JSON.parse(raw) as PendingFlush) : null;
  }

  async #flushOnce(env: DbEnv, target: FlushTarget, held: () => string[]): Promise<FlushOutcome> {
    const pending = this.take(target, held());
    if (!pending) return { flushed: false, flushId: null, recordedNow: false, amountMicros: 0, metadataRows: 0, more: false };
    const meta = this.#covered(pending);
    let recordedNow = false;
    let committed = true;
    try {
      recordedNow = await send(env, pending, meta);
    } catch (error) {
      // A closed account takes no new ledger rows (CN005): what a closing seller's key
      // earned after the closing flush cannot be credited to anyone. Drop it, loudly.
      if (dbErrorName(error) !== "seller_closed") throw error;
      committed = false;
      console.error(JSON.stringify({ evt: "earnings_flush_dropped", keyId: pending.keyId, flushId: pending.flushId, reason: "seller_closed", amountMicros: pending.amountMicros }));
    }
    this.complete(pending, committed);
    return {
      flushed: true, flushId: pending.flushId, recordedNow, amountMicros: pending.amountMicros,
      metadataRows: meta.length,
      more: this.#sql.exec<{ more: number }>("SELECT EXISTS (SELECT 1 FROM request_meta WHERE request_id NOT IN (SELECT value FROM json_each(?))) AS more", JSON.stringify(held())).one().more === 1,
    };
  }

  /** The metadata rows a pending flush covers (read when sent, so a retry sends them again). */
  #covered(p: PendingFlush): RequestMeta[] {
    if (!(p.metaThrough > 0)) return [];
    return this.#sql.exec<Record<string, string | number>>(
      "SELECT * FROM request_meta WHERE rowid <= ? AND request_id NOT IN (SELECT value FROM json_each(?)) ORDER BY rowid", p.metaThrough, JSON.stringify(p.held ?? []),
    ).toArray().map(toMeta);
  }

  /**
   * Step 1 (synchronous, atomic): the pending flush, taken now unless one is waiting;
   * `held`: paid requests still upstream, left in the accumulator (see the top).
   */
  take(target: FlushTarget, held: string[] = []): PendingFlush | null {
    return this.#storage.transactionSync(() => {
      const state = this.#state() ?? this.#initState(target.createdAt);
      if (state.pending) return JSON.parse(state.pending) as PendingFlush;
      const heldJson = JSON.stringify(held);
      const earned = this.#sql.exec<{ unflushed_micros: number; fee_micros: number; served_count: number }>(
        "SELECT unflushed_micros, fee_micros, served_count FROM earnings WHERE id = 1").toArray()[0];
      // What the held requests booked stays behind (each one's share and fee, from its reversible row).
      const kept = held.length === 0 ? { seller: 0, fee: 0, n: 0 } : this.#sql.exec<{ seller: number; fee: number; n: number }>(
        "SELECT coalesce(sum(seller_micros), 0) AS seller, coalesce(sum(fee_micros), 0) AS fee, count(*) AS n FROM voidable WHERE request_id IN (SELECT value FROM json_each(?))", heldJson).one();
      const through = this.#sql.exec<{ through: number | null }>(
        "SELECT max(rowid) AS through FROM (SELECT rowid FROM request_meta WHERE request_id NOT IN (SELECT value FROM json_each(?)) ORDER BY rowid LIMIT ?)", heldJson, FLUSH_ROWS).one().through ?? 0;
      const seller = (earned?.unflushed_micros ?? 0) - kept.seller;
      const fee = (earned?.fee_micros ?? 0) - kept.fee;
      const amount = seller + fee;
      if (amount === 0 && through === 0) {
        // Unpaid (operator) traffic leaves only a count: nothing to credit.
        if (earned) this.#sql.exec("UPDATE earnings SET served_count = ? WHERE id = 1", kept.n);
        return null;
      }
      const seq = state.seq + 1;
      const periodEnd = Math.max(Date.now(), state.last_end);
      const pending: PendingFlush = {
        flushId: `${target.keyId}.${state.epoch}.${seq}`,
        seq, keyId: target.keyId, sellerId: target.sellerId, provider: target.provider,
        periodStart: state.last_end, periodEnd,
        amountMicros: amount, feeMicros: fee, requestCount: (earned?.served_count ?? 0) - kept.n,
        metaThrough: through,
        ...(held.length > 0 ? { held } : {}),
      };
      this.#sql.exec("UPDATE earnings SET unflushed_micros = ?, fee_micros = ?, served_count = ? WHERE id = 1", kept.seller, kept.fee, kept.n);
      // What this flush takes can no longer be reversed (write-buffer.ts voidEarning): the ledger takes no negative rows.
      this.#sql.exec("DELETE FROM voidable WHERE request_id NOT IN (SELECT value FROM json_each(?))", heldJson);
      this.#sql.exec("UPDATE earnings_flush SET seq = ?, last_end = ?, pending = ? WHERE id = 1", seq, periodEnd, JSON.stringify(pending));
      return pending;
    });
  }

  /**
   * Step 3: forget a flush Postgres has confirmed (only that one: a newer one stays), and its
   * rows; `committed`: Postgres took the rows (they go on to the analytics outbox).
   */
  complete(pending: PendingFlush, committed = false): void {
    const state = this.#state();
    if (!state?.pending) return;
    if ((JSON.parse(state.pending) as PendingFlush).seq !== pending.seq) return;
    this.#storage.transactionSync(() => {
      if (pending.metaThrough > 0 && committed) this.#committed?.(pending.metaThrough, pending.held ?? []);
      if (pending.metaThrough > 0) this.#sql.exec("DELETE FROM request_meta WHERE rowid <= ? AND request_id NOT IN (SELECT value FROM json_each(?))", pending.metaThrough, JSON.stringify(pending.held ?? []));
      this.#sql.exec("UPDATE earnings_flush SET pending = NULL WHERE id = 1");
    });
  }

  #state(): State | undefined {
    this.#ensureTable();
    return this.#sql.exec<State>("SELECT epoch, seq, last_end, pending FROM earnings_flush WHERE id = 1").toArray()[0];
  }

  #initState(createdAt: number): State {
    const epoch = [...crypto.getRandomValues(new Uint8Array(5))].map((b) => b.toString(16).padStart(2, "0")).join("");
    this.#sql.exec("INSERT INTO earnings_flush (id, epoch, seq, last_end, pending) VALUES (1, ?, 0, ?, NULL)", epoch, createdAt);
    return { epoch, seq: 0, last_end: createdAt, pending: null };
  }

}

/** A request_meta row as SellerKey stores it. */
export function toMeta(row: Record<string, string | number | null>): RequestMeta {
  return {
    requestId: String(row.request_id), at: Number(row.at), method: String(row.method), route: String(row.route),
    status: Number(row.status), latencyMs: Number(row.latency_ms), amountMicros: Number(row.amount_micros),
    durationMs: row.duration_ms === null || row.duration_ms === undefined ? null : Number(row.duration_ms),
    outcome: row.outcome as RequestMeta["outcome"],
  };
}

/** Step 2: one transaction; true when the ledger row was written now. */
async function send(env: DbEnv, p: PendingFlush, meta: RequestMeta[]): Promise<boolean> {
  // Metadata the database would refuse (no request id: a call that did not come through
  // the router) is not worth failing the earnings for.
  const rows = meta.flatMap((m) => {
    const parsed = v.safeParse(RequestLogEntrySchema, {
      requestId: m.requestId, keyId: p.keyId, provider: p.provider, route: m.route, method: m.method,
      at: new Date(m.at), latencyMs: m.latencyMs, durationMs: m.durationMs, status: m.status, amountMicros: m.amountMicros, outcome: m.outcome,
    });
    return parsed.success ? [parsed.output] : [];
  });
  if (rows.length < meta.length) console.log(JSON.stringify({ evt: "request_meta_skipped", keyId: p.keyId, rows: meta.length - rows.length }));
  const sql = connectDb(env, 1);
  try {
    return await asService(sql, async (tx) => {
      const recorded = p.amountMicros > 0
        ? await recordEarnings(tx, {
          flushId: p.flushId, keyId: p.keyId, sellerId: p.sellerId,
          periodStart: new Date(p.periodStart), periodEnd: new Date(p.periodEnd),
          amountMicros: p.amountMicros, feeMicros: p.feeMicros, requestCount: p.requestCount,
        })
        : false;
      if (rows.length > 0) {
        // One statement, one array per column: eleven parameters for any number of rows,
        // where a VALUES list would send and parse eleven per row.
        const col = <T,>(pick: (r: (typeof rows)[number]) => T) => rows.map((r) => String(pick(r)));
        await tx`
          insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, status, amount_micros, outcome, duration_ms)
          select r.request_id, ${p.keyId}, ${p.provider}, r.route, r.method, to_timestamp(r.at_ms / 1000.0), r.latency_ms, r.status, r.amount_micros, r.outcome, r.duration_ms
          from unnest(${col((r) => r.requestId)}::text[], ${col((r) => r.route)}::text[], ${col((r) => r.method)}::text[],
                      ${col((r) => r.at.getTime())}::bigint[], ${col((r) => r.latencyMs)}::int[], ${col((r) => r.status)}::int[],
                      ${col((r) => r.amountMicros)}::bigint[], ${col((r) => r.outcome)}::text[], ${rows.map((r) => (r.durationMs === null ? null : String(r.durationMs)))}::int[])
            as r(request_id, route, method, at_ms, latency_ms, status, amount_micros, outcome, duration_ms)
          on conflict (request_id, key_id) do update set duration_ms = excluded.duration_ms
            where public.request_log.duration_ms is null and excluded.duration_ms is not null`;
      }
      return recorded;
    });
  } finally {
    await sql.end({ timeout: 5 }).catch(() => {});
  }
}
