// The pool object's KV snapshot is built by SQLite from the stored member JSON
// (PoolIndex.snapshotJson): it must read back as exactly the snapshot the object describes
// (members in key id order, every field intact), also empty and after removals.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Env } from "../../core/env.ts";
import { poolSnapshotKey, poolStub } from "../../objects/pool-index/stub.ts";
import type { PoolMember, PoolSnapshot } from "../../schema/wire.ts";

const e = env as unknown as Env;

const member = (keyId: string, n: number): PoolMember => ({
  keyId, home: n % 2 ? "eu" : "default", region: "us", tier: "standard", priceMicros: 1000 + n,
  routePrices: n % 3 ? [] : [{ route: "POST /v1/embeddings", priceMicros: 10 + n }], health: n / 10, state: n % 4 ? "healthy" : "cooling",
  coolingUntil: n % 4 ? 0 : 1_900_000_000_000, latencyMs: 40 + n,
});

describe("PoolIndex snapshot JSON", () => {
  it("reads back as the object's snapshot, in key id order; empty, filled, after a removal", async () => {
    const name = `openai:us:standard-${crypto.randomUUID().slice(0, 8)}`;
    const pool = poolStub(e, name);
    const parsed = async () => {
      const { updatedAt, ...rest } = JSON.parse(await pool.snapshotJson(name)) as PoolSnapshot;
      expect(updatedAt).toEqual(expect.any(Number));
      return rest;
    };
    const described = async () => {
      const { updatedAt: _t, ...rest } = await pool.snapshot(name);
      return rest;
    };
    expect(await parsed()).toEqual({ provider: "openai", region: "us", tier: `standard-${name.split("-").pop()}`, members: [] });
    const ids = ["k_c", "k_a", "k_e", "k_b", "k_d"];
    for (const [i, id] of ids.entries()) await pool.upsert(name, member(id, i));
    await pool.upsert(name, member("k_a", 9)); // replaced, not added
    const full = await parsed();
    expect(full.members.map((m) => m.keyId)).toEqual(["k_a", "k_b", "k_c", "k_d", "k_e"]);
    expect(full.members[0]).toEqual(member("k_a", 9));
    expect(full).toEqual(await described());
    await pool.remove(name, "k_c");
    expect((await parsed()).members.map((m) => m.keyId)).toEqual(["k_a", "k_b", "k_d", "k_e"]);
    // What routers read: the tests publish at once (POOL_DEBOUNCE_MS 0).
    const stored = JSON.parse((await e.POOLS.get(poolSnapshotKey(name)))!) as PoolSnapshot;
    expect(stored.members).toEqual((await described()).members);
  });
});
