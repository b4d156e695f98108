// P4/PR18: upstream answers drive each key's health, and the router fails over to
// another key while no byte has reached the buyer.
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import type { Env } from "../../core/env.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { addKey, api, chat, demo, demoLog, inspect, removeAllKeys, resetDemo } from "./helpers.ts";

describe("key health and failover", () => {
  beforeEach(async () => {
    await resetDemo();
    await removeAllKeys();
  });

  it("PR18: an upstream 401 disables the key, records an event, and the same request is served by another key", async () => {
    const bad = await addKey({ config: { priceMicros: 1 } });
    const good = await addKey({ config: { priceMicros: 2 } });
    await demo("/__demo/behaviour", { credential: bad.credential, status: 401 });
    // Try until the router has picked the bad key first at least once (P2C is random).
    let sawBadFirst = false;
    for (let i = 0; i < 20 && !sawBadFirst; i++) {
      const res = await chat();
      expect(res.status).toBe(200);
      await res.text();
      const log = await demoLog();
      sawBadFirst = log.some((e) => e.credential === bad.credential && e.status === 401);
    }
    expect(sawBadFirst).toBe(true);
    const log = await demoLog();
    const i401 = log.findIndex((e) => e.credential === bad.credential && e.status === 401);
    expect(log[i401 + 1]).toMatchObject({ credential: good.credential, status: 200 });
    const key = await inspect(bad.keyId);
    expect(key.health.state).toBe("disabled");
    expect(key.health.reason).toBe("upstream_401");
    expect(key.events.map((e) => e.kind)).toContain("key.disabled");
    // The pool snapshot stops offering it.
    const pool = await (await api("/ops/pools/openai/us/standard")).json() as { pool: { members: { keyId: string; state: string }[] } };
    expect(pool.pool.members.find((m) => m.keyId === bad.keyId)?.state).toBe("disabled");
    // The seller re-enables it once fixed.
    await demo("/__demo/behaviour", undefined, "DELETE");
    await api(`/api/keys/${bad.keyId}`, { method: "PATCH", json: { status: "active" } });
    expect((await inspect(bad.keyId)).health.state).toBe("healthy");
  });

  it("PR18: a 429 cools the key for Retry-After, then one probe brings it back", async () => {
    const { keyId, credential } = await addKey();
    // A Retry-After long enough that no slow machine sees the cooling end during the test;
    // its end is then brought forward in the object instead of waited for.
    await demo("/__demo/behaviour", { credential, status: 429, retryAfter: 600, times: 1 });
    const before = Date.now();
    const limited = await chat();
    expect(limited.status).toBe(429);
    expect(((await limited.json()) as { error: { code: string } }).error.code).toBe("rate_limited");
    const cooling = await inspect(keyId);
    const after = Date.now();
    expect(cooling.health.state).toBe("cooling");
    // Cooling for the upstream's Retry-After, counted from the 429 (bracketed by the clock reads around it).
    expect(cooling.health.coolingUntil).toBeGreaterThanOrEqual(before + 600_000);
    expect(cooling.health.coolingUntil).toBeLessThanOrEqual(after + 600_000);
    // While cooling the key is not tried at all.
    const logBefore = (await demoLog()).length;
    const refused = await chat();
    expect(refused.status).toBe(503);
    expect((await demoLog()).length).toBe(logBefore);
    // The cooling time passes (moved into the past in the object, as the clock would).
    const stub = keyStub(env as unknown as Env, keyId, "default");
    await runInDurableObject(stub, async (instance) => {
      const o = instance as unknown as { health: { coolingUntil: number }; publish(before: string | null): Promise<void> };
      o.health = { ...o.health, coolingUntil: Date.now() - 1 };
      await o.publish(null);
    });
    const probe = await chat();
    expect(probe.status).toBe(200);
    await probe.text();
    const recovered = await inspect(keyId);
    expect(recovered.health.state).toBe("healthy");
    expect(recovered.events.map((e) => e.kind)).toEqual(expect.arrayContaining(["key.cooling", "key.recovered"]));
  });

  it("repeated 5xx open the circuit; the buyer is served by a healthy key meanwhile", async () => {
    const flaky = await addKey({ config: { priceMicros: 1 } });
    const steady = await addKey({ config: { priceMicros: 5 } });
    await demo("/__demo/behaviour", { credential: flaky.credential, status: 503 });
    for (let i = 0; i < 12; i++) {
      const res = await chat();
      expect(res.status).toBe(200);
      await res.text();
    }
    const key = await inspect(flaky.keyId);
    expect(key.health.state).toBe("cooling");
    expect(key.health.score).toBeLessThan(1);
    expect((await inspect(steady.keyId)).earnings.servedCount).toBe(12);
  });

  it("an upstream timeout counts against the key and fails over", async () => {
    const slow = await addKey({ config: { priceMicros: 1 } });
    await addKey({ config: { priceMicros: 1 } });
    await demo("/__demo/behaviour", { credential: slow.credential, delayMs: 3000, times: 1 });
    // UPSTREAM_TIMEOUT_MS is 2000 in tests; keep trying until the slow key was hit.
    for (let i = 0; i < 10; i++) {
      const res = await chat();
      expect(res.status).toBe(200);
      await res.text();
      if ((await inspect(slow.keyId)).health.reason === "timeout") break;
    }
    expect((await inspect(slow.keyId)).health.reason).toBe("timeout");
  }, 30_000);
});
