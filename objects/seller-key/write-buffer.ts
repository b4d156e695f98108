// A key object's storage and the per-request bookkeeping it batches (S7, P3).
//
// Admission reads memory mirrors (the limiter window, spend per period), never rows, and
// what each request changes (a limiter hit, spend, earnings, a metadata row, the health
// EWMA, the track record) waits in memory for one batched commit at most every
// PERSIST_MS. A commit holds back the object's outgoing messages until it is durable (and
// locally is an fsync on workerd's only thread), so one per request would make every
// answer wait for it. SQLite stays the record: an evicted object reloads from it, and
// what a crash can forget is bounded by the window (docs/operations.md). A paid request is
// booked (earning, tab draw, metadata row) as its upstream call leaves, and its answer
// awaits committed() (a group commit shared by the bookings of that moment,
// core/group-commit.ts): money never waits for the window, is durable before its answer
// leaves, and its commit runs while the provider works.
import { GroupCommit } from "../../core/group-commit.ts";
import { numberSetting } from "../../core/settings.ts";
import type { RequestMeta } from "../../schema/wire.ts";
import type { TabDraw } from "../../schema/wallet.ts";

const MINUTE = 60_000;
/** Metadata rows kept until flushed to Postgres; the oldest go first past this. */
export const MAX_BUFFERED_META = 10_000;
const MAX_EVENTS = 200;
/**
 * Longest a paid booking waits for the bookings of other requests to share its commit,
 * while other paid requests of the key are upstream (alone, it commits at once, so c=1
 * never waits); the first answer that needs the batch ends the wait (commitNow). Under
 * load each commit locally blocks workerd's thread on fsync (docs/bench.md, seventh and
 * ninth passes). Against a provider's hundreds of ms it is hidden: the commit runs while
 * the provider works.
 */
const PAID_BATCH_WAIT_MS = 6;

/** A paid request drawn on a router's tab (docs/payments.md, "Tabs"), recorded with its earning. */
export interface KeyDraw {
  tabId: string;
  buyerId: string;
  draw: TabDraw;
}

/** At most this many draws per report to one wallet. */
const REPORT_BATCH = 500;

export interface EarningsRow {
  unflushed_micros: number;
  fee_micros: number;
  served_count: number;
}

/** State the buffer writes to `meta` when it was marked changed (health, track record). */
export type DirtyState = () => Record<string, unknown>;

export class WriteBuffer {
  /** Admission times inside the last minute, oldest first (from `hitsStart`). */
  private hits: number[] = [];
  private hitsStart = 0;
  private readonly spendCache = new Map<string, number>();
  private pendingHits: number[] = [];
  /** Limiter rows at or before this time can be deleted (expired). */
  private hitsExpiredAt = 0;
  private readonly pendingSpend = new Map<string, number>();
  private readonly pendingEarnings = { sellerMicros: 0, feeMicros: 0, served: 0 };
  private pendingMeta: RequestMeta[] = [];
  /** Rows in pendingMeta that replace a row already counted (a booked request's own): not counted again. */
  private replacing = 0;
  /** Paid earnings that may still be reversed (request id, seller share, fee): see voidEarning. */
  private pendingVoidable: [string, number, number][] = [];
  /** Tab draws of paid answers, written with their earnings (see drawsToReport). */
  private pendingDraws: KeyDraw[] = [];
  /** Outcome changes (stream cuts) of rows that may already be written. */
  private readonly pendingOutcomes = new Map<string, RequestMeta["outcome"]>();
  /** `meta` entries changed since the last commit, written from `dirtyState` then. */
  private readonly dirtyKeys = new Set<string>();
  private pending = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /**
   * Paid requests booked whose upstream outcome is not known yet (see hold): the earnings
   * flush leaves their earnings, reversible rows and metadata rows alone.
   */
  private readonly held = new Set<string>();
  private readonly paidCommit = new GroupCommit(() => this.persist(), { busy: () => this.held.size > 1, maxWaitMs: PAID_BATCH_WAIT_MS });
  private metaRows = 0;

  private readonly sql: SqlStorage;
  private readonly persistMs: () => string | undefined;
  private readonly dirtyState: DirtyState;

  constructor(sql: SqlStorage, persistMs: () => string | undefined, dirtyState: DirtyState) {
    this.sql = sql;
    this.persistMs = persistMs;
    this.dirtyState = dirtyState;
    sql.exec(`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS hits (at INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS hits_at ON hits (at);
      CREATE TABLE IF NOT EXISTS spend (period TEXT PRIMARY KEY, micros INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS earnings (id INTEGER PRIMARY KEY CHECK (id = 1), unflushed_micros INTEGER NOT NULL, fee_micros INTEGER NOT NULL, served_count INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS request_meta (request_id TEXT PRIMARY KEY, at INTEGER NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, status INTEGER NOT NULL, latency_ms INTEGER NOT NULL, amount_micros INTEGER NOT NULL, outcome TEXT NOT NULL, duration_ms INTEGER);
      CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS voidable (request_id TEXT PRIMARY KEY, seller_micros INTEGER NOT NULL, fee_micros INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS tab_draws (request_id TEXT PRIMARY KEY, tab_id TEXT NOT NULL, buyer_id TEXT NOT NULL, proof_id TEXT NOT NULL, amount INTEGER NOT NULL, at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
    `);
    // Objects made before the time to last byte was recorded have the table without it.
    if (!sql.exec("SELECT * FROM request_meta LIMIT 0").columnNames.includes("duration_ms")) sql.exec("ALTER TABLE request_meta ADD COLUMN duration_ms INTEGER");
    sql.exec("DELETE FROM hits WHERE at <= ?", Date.now() - MINUTE);
    this.hits = sql.exec<{ at: number }>("SELECT at FROM hits ORDER BY at").toArray().map((r) => r.at);
    this.metaRows = this.countMeta();
  }

  // ---- the `meta` table: small JSON values, written at once ---------------------------

  readMeta<T>(k: string): T | null {
    const row = this.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = ?", k).toArray()[0];
    return row ? (JSON.parse(row.v) as T) : null;
  }

  writeMeta(k: string, value: unknown) {
    this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", k, JSON.stringify(value));
    this.dirtyKeys.delete(k);
  }

  /** `k` changed in memory; the next batch writes it (see dirtyState). */
  changed(k: string) {
    this.dirtyKeys.add(k);
    this.markDirty();
  }

  /** A state change operators see: kept in storage (the last MAX_EVENTS) and logged. */
  event(kind: string, detail: string, keyId: string | undefined) {
    // Rare state changes only; never credentials or bodies.
    console.log(JSON.stringify({ evt: kind, keyId, detail }));
    this.sql.exec("INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)", Date.now(), kind, detail);
    this.sql.exec("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", MAX_EVENTS);
  }

  events(limit = 50) {
    return this.sql.exec<{ at: number; kind: string; detail: string }>("SELECT at, kind, detail FROM events ORDER BY id DESC LIMIT ?", limit).toArray();
  }

  // ---- the limiter window --------------------------------------------------------------

  /** Requests admitted in the sliding minute before `now`; expired ones are dropped. */
  hitsInWindow(now: number): number {
    const cutoff = now - MINUTE;
    const before = this.hitsStart;
    while (this.hitsStart < this.hits.length && this.hits[this.hitsStart]! <= cutoff) this.hitsStart++;
    if (this.hitsStart > 1024 && this.hitsStart * 2 > this.hits.length) {
      // Compact the array and the table together, in batches rather than per request.
      this.hits = this.hits.slice(this.hitsStart);
      this.hitsStart = 0;
      this.hitsExpiredAt = cutoff;
    } else if (this.hitsStart !== before && this.hitsStart === this.hits.length) {
      this.hits = [];
      this.hitsStart = 0;
      this.hitsExpiredAt = cutoff;
    }
    return this.hits.length - this.hitsStart;
  }

  /** The oldest admission still in the window (call after hitsInWindow). */
  oldestHit(): number | undefined {
    return this.hits[this.hitsStart];
  }

  hit(now: number) {
    this.hits.push(now);
    this.pendingHits.push(now);
  }

  // ---- spend, earnings, metadata ------------------------------------------------------

  spent(period: string): number {
    let micros = this.spendCache.get(period);
    if (micros === undefined) {
      micros = this.sql.exec<{ micros: number }>("SELECT micros FROM spend WHERE period = ?", period).toArray()[0]?.micros ?? 0;
      this.spendCache.set(period, micros);
    }
    return micros;
  }

  addSpend(period: string, micros: number) {
    if (micros === 0) return;
    this.spendCache.set(period, this.spent(period) + micros);
    this.pendingSpend.set(period, (this.pendingSpend.get(period) ?? 0) + micros);
    this.markDirty();
  }

  /**
   * A served request's earnings. A paid one (`requestId` given) stays reversible until the
   * earnings flush takes it (objects/seller-key/earnings-flush.ts clears `voidable` as it
   * takes the accumulator): the router reverses it when the answer broke off before its
   * first byte reached the buyer (voidEarning).
   */
  earn(sellerMicros: number, feeMicros: number, requestId?: string, draw?: KeyDraw) {
    this.pendingEarnings.sellerMicros += sellerMicros;
    this.pendingEarnings.feeMicros += feeMicros;
    this.pendingEarnings.served++;
    if (requestId && sellerMicros + feeMicros > 0) this.pendingVoidable.push([requestId, sellerMicros, feeMicros]);
    // The draw is durable in the same commit as the earning: a tab its router never closed
    // is settled on these (reported by reportDraws' caller, once no longer reversible).
    if (draw) this.pendingDraws.push(draw);
    this.markDirty();
  }

  /**
   * Reverse one paid request's earnings, if they are still in the accumulator (not taken by
   * a flush): the earnings row goes down by exactly what it earned, its metadata row keeps
   * amount 0 and outcome `undelivered`. One storage transaction; null when there is nothing
   * to reverse (never earned, already reversed, or already on its way to the ledger).
   */
  voidEarning(storage: DurableObjectStorage, requestId: string): { sellerMicros: number; feeMicros: number } | null {
    this.held.delete(requestId);
    this.persist();
    return storage.transactionSync(() => {
      const row = this.sql.exec<{ seller_micros: number; fee_micros: number }>("SELECT seller_micros, fee_micros FROM voidable WHERE request_id = ?", requestId).toArray()[0];
      if (!row) return null;
      this.sql.exec("DELETE FROM voidable WHERE request_id = ?", requestId);
      // Not drawn after all: the router returns it to its tab.
      this.sql.exec("DELETE FROM tab_draws WHERE request_id = ?", requestId);
      this.sql.exec(
        "UPDATE earnings SET unflushed_micros = unflushed_micros - ?, fee_micros = fee_micros - ?, served_count = served_count - 1 WHERE id = 1",
        row.seller_micros, row.fee_micros,
      );
      this.sql.exec("UPDATE request_meta SET amount_micros = 0, outcome = 'undelivered' WHERE request_id = ?", requestId);
      return { sellerMicros: row.seller_micros, feeMicros: row.fee_micros };
    });
  }

  /** The earnings row as committed (call persist() first to include the batch). */
  earnings(): EarningsRow | undefined {
    return this.sql.exec<{ unflushed_micros: number; fee_micros: number; served_count: number }>("SELECT unflushed_micros, fee_micros, served_count FROM earnings WHERE id = 1").toArray()[0];
  }

  /** The seller's earnings not yet flushed to the ledger: committed plus this batch. */
  unflushedSellerMicros(): number {
    return (this.earnings()?.unflushed_micros ?? 0) + this.pendingEarnings.sellerMicros;
  }

  /**
   * A row to write (INSERT OR REPLACE on the request id). Recording a row again replaces
   * it: a stream's row is recorded when the answer starts and again, with its time to the
   * last byte, when it ends; if the first copy already went to Postgres, the second one
   * follows it there and fills that time in. `replaces`: the row of a booked request, whose
   * booking's row (held back from the flush) it replaces, so it is not counted again.
   */
  recordMeta(m: RequestMeta, replaces = false) {
    this.pendingMeta.push(m);
    if (replaces) this.replacing++;
    this.markDirty();
  }

  /** A row's outcome changed after it was recorded (a stream cut); an undelivered row stays so. */
  amendOutcome(requestId: string, outcome: RequestMeta["outcome"]) {
    this.pendingOutcomes.set(requestId, outcome);
    this.markDirty();
  }

  /**
   * Draws that can no longer be reversed (their `voidable` row is gone: the earnings flush
   * took them) and were drawn before `before` (ms), oldest first, grouped by buyer and tab,
   * at most REPORT_BATCH per group.
   */
  drawsToReport(before = Number.POSITIVE_INFINITY): { buyerId: string; tabId: string; draws: TabDraw[] }[] {
    this.persist();
    const rows = this.sql.exec<{ request_id: string; tab_id: string; buyer_id: string; proof_id: string; amount: number; at: number; expires_at: number }>(
      "SELECT request_id, tab_id, buyer_id, proof_id, amount, at, expires_at FROM tab_draws WHERE request_id NOT IN (SELECT request_id FROM voidable) AND at < ? ORDER BY rowid LIMIT ?",
      Math.min(before, Number.MAX_SAFE_INTEGER), REPORT_BATCH * 4,
    ).toArray();
    const groups = new Map<string, { buyerId: string; tabId: string; draws: TabDraw[] }>();
    for (const r of rows) {
      const k = `${r.buyer_id} ${r.tab_id}`;
      let g = groups.get(k);
      if (!g) groups.set(k, (g = { buyerId: r.buyer_id, tabId: r.tab_id, draws: [] }));
      if (g.draws.length < REPORT_BATCH) g.draws.push({ proofId: r.proof_id, requestId: r.request_id, amountMicros: r.amount, at: r.at, expiresAt: r.expires_at });
    }
    return [...groups.values()];
  }

  /** The wallet has these draws: they go. */
  reported(requestIds: string[]) {
    this.sql.exec("DELETE FROM tab_draws WHERE request_id IN (SELECT value FROM json_each(?))", JSON.stringify(requestIds));
  }

  /** Draws not yet reported (in storage and in this batch). */
  unreportedDraws(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM tab_draws").one().n + this.pendingDraws.length;
  }

  /** Metadata rows waiting for the flush: in storage and in this batch. */
  bufferedMetaRows(): number {
    return this.metaRows + this.pendingMeta.length - this.replacing;
  }

  countMeta(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM request_meta").one().n;
  }

  /** Re-read after something else (the earnings flush) deleted rows. */
  recountMeta() {
    this.metaRows = this.countMeta();
  }

  // ---- the batch -----------------------------------------------------------------------

  /** Something waits in memory: commit it within PERSIST_MS (0: at once, per request). */
  private markDirty() {
    if (this.pending) return;
    this.pending = true;
    const delay = numberSetting(this.persistMs(), 250);
    if (delay <= 0) queueMicrotask(() => this.persist());
    else this.timer = setTimeout(() => this.persist(), delay);
  }

  /**
   * The group commit for paid bookings: resolves after a persist() that ran after this call,
   * shared by the bookings of that moment (core/group-commit.ts: at once when no other paid
   * request of the key is upstream, else batched for up to PAID_BATCH_WAIT_MS). The output
   * gate holds what is sent after the writes until they are durable, so an answer sent
   * after this resolves leaves after its earnings.
   */
  committed(): Promise<void> {
    return this.paidCommit.committed();
  }

  /** An answer needs the waiting booking batch now: write it (see committed). */
  commitNow(): void {
    this.paidCommit.commitNow();
  }

  /**
   * A paid request was booked (earn with its request id, and its metadata row) before its
   * upstream's outcome is known: until settle() or voidEarning(), the earnings flush leaves
   * it out, so that a failed call can still be reversed before its refusal leaves.
   */
  hold(requestId: string) {
    this.held.add(requestId);
  }

  /** The booked request was served: the flush may take it (it stays reversible until then, B6). */
  settle(requestId: string) {
    this.held.delete(requestId);
  }

  /** Booked requests still upstream (see hold), for the earnings flush. */
  heldIds(): string[] {
    return [...this.held];
  }

  /**
   * Write everything kept in memory since the last batch: synchronous statements, so they
   * land in one storage commit. Called by the timer, and before anything reads these tables.
   */
  persist() {
    this.cancel();
    // Rows go in as one JSON array per table: one statement per batch, not one per row.
    if (this.pendingHits.length > 0) {
      this.sql.exec("INSERT INTO hits (at) SELECT value FROM json_each(?)", JSON.stringify(this.pendingHits));
      this.pendingHits = [];
    }
    if (this.hitsExpiredAt > 0) {
      this.sql.exec("DELETE FROM hits WHERE at <= ?", this.hitsExpiredAt);
      this.hitsExpiredAt = 0;
    }
    for (const [period, micros] of this.pendingSpend) {
      if (micros !== 0) this.sql.exec("INSERT INTO spend (period, micros) VALUES (?, ?) ON CONFLICT (period) DO UPDATE SET micros = micros + excluded.micros", period, micros);
    }
    this.pendingSpend.clear();
    const e = this.pendingEarnings;
    if (e.served > 0) {
      this.sql.exec(
        `INSERT INTO earnings (id, unflushed_micros, fee_micros, served_count) VALUES (1, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET unflushed_micros = unflushed_micros + excluded.unflushed_micros, fee_micros = fee_micros + excluded.fee_micros, served_count = served_count + excluded.served_count`,
        e.sellerMicros, e.feeMicros, e.served,
      );
      e.sellerMicros = e.feeMicros = e.served = 0;
    }
    const rows = this.pendingMeta;
    if (rows.length > 0) {
      this.pendingMeta = [];
      this.sql.exec(
        `INSERT OR REPLACE INTO request_meta (request_id, at, method, route, status, latency_ms, amount_micros, outcome, duration_ms)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8 FROM json_each(?)`,
        JSON.stringify(rows.map((m) => [m.requestId, m.at, m.method, m.route, m.status, m.latencyMs, m.amountMicros, m.outcome, m.durationMs])),
      );
      this.metaRows += rows.length - this.replacing;
      this.replacing = 0;
      // Past the cap, drop the oldest rows down to it, in batches rather than per request.
      if (this.metaRows > MAX_BUFFERED_META + 500) {
        // rowid is insertion order, which is time order here: no sort of the table.
        this.sql.exec("DELETE FROM request_meta WHERE rowid IN (SELECT rowid FROM request_meta ORDER BY rowid LIMIT ?)", this.metaRows - MAX_BUFFERED_META);
        this.metaRows = MAX_BUFFERED_META;
      }
    }
    if (this.pendingVoidable.length > 0) {
      this.sql.exec(
        "INSERT OR REPLACE INTO voidable (request_id, seller_micros, fee_micros) SELECT value->>0, value->>1, value->>2 FROM json_each(?)",
        JSON.stringify(this.pendingVoidable),
      );
      this.pendingVoidable = [];
    }
    if (this.pendingDraws.length > 0) {
      this.sql.exec(
        "INSERT OR REPLACE INTO tab_draws (request_id, tab_id, buyer_id, proof_id, amount, at, expires_at) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?)",
        JSON.stringify(this.pendingDraws.map((d) => [d.draw.requestId, d.tabId, d.buyerId, d.draw.proofId, d.draw.amountMicros, d.draw.at, d.draw.expiresAt])),
      );
      this.pendingDraws = [];
    }
    for (const [requestId, outcome] of this.pendingOutcomes) this.sql.exec("UPDATE request_meta SET outcome = ? WHERE request_id = ? AND outcome <> 'undelivered'", outcome, requestId);
    this.pendingOutcomes.clear();
    if (this.dirtyKeys.size > 0) {
      const state = this.dirtyState();
      for (const k of this.dirtyKeys) this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", k, JSON.stringify(state[k]));
      this.dirtyKeys.clear();
    }
  }

  private cancel() {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = false;
  }

  /** The key is being removed: forget everything, in memory and in storage. */
  async clear(storage: DurableObjectStorage) {
    this.cancel();
    this.hits = [];
    this.hitsStart = 0;
    this.spendCache.clear();
    this.pendingHits = [];
    this.hitsExpiredAt = 0;
    this.pendingSpend.clear();
    this.pendingEarnings.sellerMicros = this.pendingEarnings.feeMicros = this.pendingEarnings.served = 0;
    this.pendingMeta = [];
    this.replacing = 0;
    this.pendingVoidable = [];
    this.pendingDraws = [];
    this.pendingOutcomes.clear();
    this.dirtyKeys.clear();
    this.held.clear();
    this.metaRows = 0;
    await storage.deleteAll();
  }
}

// Budget periods (UTC day and month), computed once per day rather than per request.
let periodCache = { from: 0, until: 0, day: "", month: "" };
export function periods(now: number): { day: string; month: string } {
  if (now < periodCache.from || now >= periodCache.until) {
    const iso = new Date(now).toISOString();
    const from = Date.parse(iso.slice(0, 10));
    periodCache = { from, until: from + 86_400_000, day: `d:${iso.slice(0, 10)}`, month: `m:${iso.slice(0, 7)}` };
  }
  return periodCache;
}
