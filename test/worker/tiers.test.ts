// P2: premium is earned. A key whose seller asks for premium serves in standard until its
// track record (calls, success, uptime over the last day) clears the bar, then in premium,
// and drops back to standard by itself when the record falls below the lower bar.
// PREMIUM_MIN_CALLS is 10 in the test environment (vitest.config.ts), 200 deployed.
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import type { Env } from "../../core/env.ts";
import { addKey, api, chat, demo, demoLog, earnTrackRecord, inspect, persisted, poolMembers, removeAllKeys, resetDemo, untilInPool } from "./helpers.ts";

const members = (tier: string) => poolMembers("us", tier);
const untilIn = (tier: string, keyId: string) => untilInPool("us", tier, keyId);

const servedBy = async (tier: string, upstreamFails?: { credential: string; status: number }) => {
  await resetDemo();
  if (upstreamFails) await demo("/__demo/behaviour", { ...upstreamFails, times: 1 });
  const res = await chat({ headers: { "cn2-tier": tier } });
  const body = await res.text();
  return { status: res.status, credential: (await demoLog())[0]?.credential, body };
};

describe("earned premium (P2)", () => {
  beforeEach(async () => {
    await resetDemo();
    await removeAllKeys();
  });

  it("P2: a key asking for premium serves in standard until its record earns premium", async () => {
    const key = await addKey({ config: { tier: "premium" } });
    expect(key.key).toMatchObject({ servingTier: "standard", trackRecord: { calls: 0 } });
    expect(await members("premium")).toEqual([]);
    expect(await members("standard")).toEqual([key.keyId]);
    // A premium buyer is not served by an unproven key; a standard buyer is.
    const premiumBuyer = await servedBy("premium");
    expect(premiumBuyer.status).toBe(503);
    expect(JSON.parse(premiumBuyer.body).error.code).toBe("no_key_available");
    expect(await servedBy("standard")).toMatchObject({ status: 200, credential: key.credential });

    await earnTrackRecord(key.keyId);
    await untilIn("premium", key.keyId);
    expect(await members("standard")).toEqual([]);
    const inspected = await inspect(key.keyId);
    expect(inspected.servingTier).toBe("premium");
    expect(inspected.trackRecord).toMatchObject({ calls: 11, successRate: 1, uptime: 1 });
    expect(inspected.events.find((e) => e.kind === "key.tier_changed")?.detail).toBe("standard -> premium");
    expect(await servedBy("premium")).toMatchObject({ status: 200, credential: key.credential });
    // The seller's own view says where the key serves and why.
    const view = (await (await api(`/api/keys/${key.keyId}`)).json()) as { key: { config: { tier: string }; servingTier: string; trackRecord: { calls: number } } };
    expect(view.key).toMatchObject({ config: { tier: "premium" }, servingTier: "premium", trackRecord: { calls: 12 } });
  });

  it("P2: a premium key whose success rate falls is moved back to standard by itself", async () => {
    const key = await addKey({ config: { tier: "premium" } });
    await earnTrackRecord(key.keyId);
    await untilIn("premium", key.keyId);
    // One upstream failure in eleven calls: 91 % success, below the 98 % a premium key must keep.
    const failed = await servedBy("premium", { credential: key.credential, status: 502 });
    expect(failed.status).toBe(502);
    await untilIn("standard", key.keyId);
    expect(await members("premium")).toEqual([]);
    const inspected = await inspect(key.keyId);
    expect(inspected.servingTier).toBe("standard");
    expect(inspected.trackRecord).toMatchObject({ calls: 11 });
    expect(inspected.events.map((e) => e.detail)).toContain("premium -> standard");
    expect(inspected.health.state).toBe("healthy"); // one failure does not cool a key: only the tier moved
    expect(await servedBy("standard")).toMatchObject({ status: 200, credential: key.credential });
    expect((await servedBy("premium")).status).toBe(503);
  });

  it("P2: editing the config to premium does not buy premium, and the record survives the object's restart", async () => {
    const key = await addKey({ config: { tier: "standard" } });
    await earnTrackRecord(key.keyId, 3);
    const patched = await api(`/api/keys/${key.keyId}`, { method: "PATCH", json: { tier: "premium" } });
    expect(patched.status).toBe(200);
    expect(((await patched.json()) as { key: { servingTier: string } }).key.servingTier).toBe("standard");
    expect(await members("standard")).toEqual([key.keyId]);
    // The calls made as a standard key count towards premium: seven more reach ten.
    await earnTrackRecord(key.keyId, 7);
    await untilIn("premium", key.keyId);
    // Asking for standard again moves it back at once, whatever its record.
    const back = await api(`/api/keys/${key.keyId}`, { method: "PATCH", json: { tier: "standard" } });
    expect(((await back.json()) as { key: { servingTier: string } }).key.servingTier).toBe("standard");
    expect(await members("premium")).toEqual([]);
    // The record is in the object's storage (the batch commit), so a restart keeps it.
    const stub = (env as unknown as Env).SELLER_KEY.get((env as unknown as Env).SELLER_KEY.idFromName(key.keyId));
    await persisted(stub);
    const stored = await runInDurableObject(stub, (_o, state) =>
      JSON.parse(state.storage.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = 'track'").one().v) as { buckets: { calls: number }[] },
    );
    expect(stored.buckets.reduce((n, b) => n + b.calls, 0)).toBe(10);
  });
});
