// One PoolIndex per provider/region/tier: the membership, prices and health of its keys,
// fed by the key objects when something changes. It writes a compact snapshot to KV
// (debounced), which routers read and cache: no central object on the request path.
import { DurableObject } from "cloudflare:workers";
import type { PoolMember, PoolSnapshot, Region, Tier } from "../../schema/wire.ts";
import type { Env } from "../../core/env.ts";
import { numberSetting } from "../../core/settings.ts";
import { poolSnapshotKey } from "./stub.ts";

export class PoolIndex extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS members (key_id TEXT PRIMARY KEY, member TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
    `);
  }

  async upsert(name: string, member: PoolMember): Promise<void> {
    this.sql.exec("INSERT OR REPLACE INTO members (key_id, member) VALUES (?, ?)", member.keyId, JSON.stringify(member));
    await this.changed(name);
  }

  async remove(name: string, keyId: string): Promise<void> {
    this.sql.exec("DELETE FROM members WHERE key_id = ?", keyId);
    await this.changed(name);
  }

  snapshot(name: string): PoolSnapshot {
    const [provider = "", region, tier] = name.split(":");
    const members = this.sql.exec<{ member: string }>("SELECT member FROM members ORDER BY key_id").toArray().map((r) => JSON.parse(r.member) as PoolMember);
    return { provider, region: region as Region, tier: tier as Tier, updatedAt: Date.now(), members };
  }

  /**
   * The snapshot as KV stores it: the stored member JSON joined by SQLite, never parsed and
   * re-serialized in JavaScript (10,000 members are about 1.8 MB; see docs/bench.md).
   */
  snapshotJson(name: string): string {
    const [provider = "", region, tier] = name.split(":");
    const head = JSON.stringify({ provider, region, tier, updatedAt: Date.now() });
    const list = this.sql.exec<{ list: string | null }>("SELECT group_concat(member, ',' ORDER BY key_id) AS list FROM members").one().list ?? "";
    return `${head.slice(0, -1)},"members":[${list}]}`;
  }

  override async alarm(): Promise<void> {
    const name = this.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = 'name'").toArray()[0]?.v;
    if (name) await this.write(name);
  }

  /** Write now when debouncing is off; otherwise coalesce changes into one alarm. */
  private async changed(name: string) {
    this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES ('name', ?)", name);
    const debounce = numberSetting(this.env.POOL_DEBOUNCE_MS, 500);
    if (debounce === 0) return this.write(name);
    if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(Date.now() + debounce);
  }

  private async write(name: string) {
    await this.env.POOLS.put(poolSnapshotKey(name), this.snapshotJson(name));
  }
}
