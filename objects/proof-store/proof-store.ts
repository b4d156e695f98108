// Replay markers and small atomic state for payment methods whose proofs are not claimed
// in a buyer's wallet (tempo, stripe): the Durable-Object side of mppx's `AtomicStore`
// (worker/payments/atomic-store.ts is the client; it shards keys over several of these objects).
// One object serialises every operation on its keys, which is what makes `tryClaim`
// single-use under concurrency (P6). Values are opaque JSON strings; nothing here knows
// a payer. Expired markers and deletion tombstones are removed by an alarm.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../../core/env.ts";

export type StoreWrite = { op: "set"; value: string; expires: number | null } | { op: "delete" };

/**
 * Deleted or expired rows stay as versioned tombstones this long, so a compare-and-set
 * that read "absent" cannot succeed after the key was set and removed in between (ABA).
 */
const TOMBSTONE_MS = 10 * 60_000;
/** Clean-ups run at most this often. */
const CLEANUP_BATCH_MS = 60_000;

export class ProofStore extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private nextAlarm: number | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS items (key TEXT PRIMARY KEY, value TEXT, version INTEGER NOT NULL, expires INTEGER);
      CREATE INDEX IF NOT EXISTS items_expires ON items (expires) WHERE expires IS NOT NULL;
    `);
    void ctx.blockConcurrencyWhile(async () => {
      this.nextAlarm = await ctx.storage.getAlarm();
    });
  }

  /** The current value (null = absent) and its version, for compare-and-set updates. */
  read(key: string): { value: string | null; version: number } {
    return this.state(key, Date.now());
  }

  /** Apply `write` only if the key is still at `version`; false means read again and retry. */
  async compareAndSet(key: string, version: number, write: StoreWrite): Promise<boolean> {
    const now = Date.now();
    if (this.state(key, now).version !== version) return false;
    await this.apply(key, version, write, now);
    return true;
  }

  async put(key: string, value: string, expires: number | null = null): Promise<void> {
    const now = Date.now();
    await this.apply(key, this.state(key, now).version, { op: "set", value, expires }, now);
  }

  async delete(key: string): Promise<void> {
    const now = Date.now();
    await this.apply(key, this.state(key, now).version, { op: "delete" }, now);
  }

  /** Claim `key` until `expires` (ms since epoch): true exactly once while the claim lives. */
  async tryClaim(key: string, expires: number, marker: string): Promise<boolean> {
    const now = Date.now();
    const current = this.state(key, now);
    if (current.value !== null) return false;
    await this.apply(key, current.version, { op: "set", value: marker, expires }, now);
    return true;
  }

  override async alarm(): Promise<void> {
    this.nextAlarm = null;
    const now = Date.now();
    this.sql.exec("DELETE FROM items WHERE expires IS NOT NULL AND expires <= ?", now - TOMBSTONE_MS);
    const next = this.sql.exec<{ t: number | null }>("SELECT min(expires) AS t FROM items WHERE expires IS NOT NULL").one().t;
    if (next !== null) await this.schedule(Math.max(next + TOMBSTONE_MS, now + CLEANUP_BATCH_MS));
  }

  private state(key: string, now: number): { value: string | null; version: number } {
    const row = this.sql.exec<{ value: string | null; version: number; expires: number | null }>("SELECT value, version, expires FROM items WHERE key = ?", key).toArray()[0];
    if (!row) return { value: null, version: 0 };
    const expired = row.expires !== null && row.expires <= now;
    return { value: expired ? null : row.value, version: row.version };
  }

  private async apply(key: string, version: number, write: StoreWrite, now: number) {
    const value = write.op === "set" ? write.value : null;
    const expires = write.op === "set" ? write.expires : now;
    this.sql.exec("INSERT OR REPLACE INTO items (key, value, version, expires) VALUES (?, ?, ?, ?)", key, value, version + 1, expires);
    if (expires !== null) await this.schedule(expires + TOMBSTONE_MS);
  }

  private async schedule(at: number) {
    if (this.nextAlarm !== null && this.nextAlarm <= at) return;
    this.nextAlarm = at;
    await this.ctx.storage.setAlarm(at);
  }
}
