// P2/B3 (PR15, PR21): keys are chosen by provider, region and tier; an EU buyer is only
// ever served by an EU key, whatever the pool looks like.
import fc from "fast-check";
import { beforeEach, describe, expect, it } from "vitest";
import { REGIONS, TIERS, type PoolMember, type PoolSnapshot, type Region } from "../../schema/wire.ts";
import { attemptOrder, buyerRegions, eligible, EU_COUNTRIES, RouteCandidates } from "../../worker/proxy/routing.ts";
import { addKey, api, chat, demoLog, earnPremium, removeAllKeys, resetDemo } from "./helpers.ts";
import { env } from "cloudflare:workers";
import type { Env } from "../../core/env.ts";
import { cachedPools, readPools } from "../../worker/proxy/pools.ts";

const member = fc.record({
  keyId: fc.stringMatching(/^k_[a-z0-9]{12}$/),
  home: fc.constant("default" as const),
  region: fc.constantFrom(...REGIONS),
  tier: fc.constantFrom(...TIERS),
  priceMicros: fc.integer({ min: 0, max: 100_000 }),
  routePrices: fc.constant([]),
  health: fc.double({ min: 0, max: 1, noNaN: true }),
  state: fc.constantFrom("healthy", "cooling", "disabled" as const),
  coolingUntil: fc.integer({ min: 0, max: 2_000_000 }),
  latencyMs: fc.integer({ min: 0, max: 5000 }),
}) as fc.Arbitrary<PoolMember>;

// Snapshots are per region, but a member is judged by its own region: a mis-filed member
// (say an old snapshot written before a region change) must still be kept from EU buyers.
const pools = fc.array(fc.record({ region: fc.constantFrom(...REGIONS), members: fc.array(member, { maxLength: 8 }) }), { maxLength: 4 })
  .map((ps) => ps.map((p): PoolSnapshot => ({ provider: "openai", region: p.region, tier: "standard", updatedAt: 0, members: p.members })));
const country = fc.oneof(fc.constantFrom(...EU_COUNTRIES), fc.constantFrom("US", "GB", "CH", "NO", "JP", "BR"), fc.constant(null));

describe("routing (pure)", () => {
  it("PR21: an EU buyer is never offered a non-EU key (property over random pools)", () => {
    fc.assert(
      fc.property(pools, fc.constantFrom(...EU_COUNTRIES), fc.option(fc.integer({ min: 0, max: 100_000 })), fc.integer({ min: 0, max: 2_000_000 }), (snaps, c, maxPrice, now) => {
        const regions = buyerRegions(c);
        const order = attemptOrder(eligible(snaps, { method: "POST", path: "/v1/chat/completions", regions, maxPrice, now }), () => 0, Math.random, 10);
        for (const k of order) expect(k.region).toBe("eu");
      }),
      { numRuns: 500 },
    );
  });

  it("PR15: candidates respect region, state, cooling and the price cap; the order has no repeats", () => {
    fc.assert(
      fc.property(pools, country, fc.option(fc.integer({ min: 0, max: 100_000 })), fc.integer({ min: 0, max: 2_000_000 }), (snaps, c, maxPrice, now) => {
        const regions = buyerRegions(c);
        const cands = eligible(snaps, { method: "POST", path: "/v1/chat/completions", regions, maxPrice, now });
        for (const k of cands) {
          expect(regions).toContain(k.region);
          expect(k.state).not.toBe("disabled");
          if (k.state === "cooling") expect(k.coolingUntil).toBeLessThanOrEqual(now);
          if (maxPrice !== null) expect(k.price).toBeLessThanOrEqual(maxPrice);
        }
        const order = attemptOrder(cands, () => 0, Math.random, 3);
        expect(new Set(order).size).toBe(order.length);
        expect(order.length).toBe(Math.min(3, cands.length));
      }),
      { numRuns: 500 },
    );
  });

  it("PR15: prepared candidates (large pools) choose among exactly the keys eligible() allows, within the price limit, without repeats", () => {
    const big = fc.array(fc.record({ region: fc.constantFrom(...REGIONS), members: fc.array(member, { minLength: 20, maxLength: 120 }) }), { minLength: 1, maxLength: 3 })
      .map((ps) => ps.map((p): PoolSnapshot => ({ provider: "openai", region: p.region, tier: "standard", updatedAt: 0, members: p.members })));
    fc.assert(
      fc.property(big, country, fc.option(fc.integer({ min: 0, max: 100_000 })), fc.integer({ min: 0, max: 2_000_000 }), (snaps, c, limit, now) => {
        const regions = buyerRegions(c);
        const base = { method: "POST", path: "/v1/chat/completions", regions, now };
        const prepared = new RouteCandidates(snaps, base);
        const allowed = eligible(snaps, { ...base, maxPrice: limit });
        const within = prepared.within(limit);
        expect(within.map((k) => k.keyId).sort()).toEqual(allowed.map((k) => k.keyId).sort());
        // Cheapest first: the quote is the first.
        for (let i = 1; i < within.length; i++) expect(within[i]!.price).toBeGreaterThanOrEqual(within[i - 1]!.price);
        const load = (id: string) => id.charCodeAt(5) % 3;
        const order = prepared.order(limit, load, Math.random, 3);
        expect(order.length).toBe(Math.min(3, allowed.length));
        expect(new Set(order).size).toBe(order.length);
        for (const k of order) expect(within).toContain(k);
        // A cooling key's pause ending is the moment the preparation expires.
        for (const m of snaps.flatMap((s) => s.members)) {
          if (m.state === "cooling" && m.coolingUntil > now && regions.includes(m.region)) expect(prepared.until).toBeLessThanOrEqual(m.coolingUntil);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("power of two choices prefers the cheaper, healthier, less loaded key", () => {
    const base = { home: "default", region: "us", tier: "standard", routePrices: [], state: "healthy", coolingUntil: 0, latencyMs: 0 } as const;
    const cheap = { ...base, keyId: "k_cheap", priceMicros: 100, price: 100, health: 1 };
    const dear = { ...base, keyId: "k_dear", priceMicros: 1000, price: 1000, health: 1 };
    expect(attemptOrder([cheap, dear], () => 0, Math.random, 2).map((k) => k.keyId)).toEqual(["k_cheap", "k_dear"]);
    const sick = { ...cheap, health: 0.05 };
    expect(attemptOrder([sick, dear], () => 0, Math.random, 2)[0]!.keyId).toBe("k_dear");
    expect(attemptOrder([cheap, dear], (id) => (id === "k_cheap" ? 100 : 0), Math.random, 2)[0]!.keyId).toBe("k_dear");
  });
});

describe("routing (through the Worker)", () => {
  beforeEach(async () => {
    await resetDemo();
    await removeAllKeys();
  });

  it("PR21: EU buyers reach only EU keys, or get no_eu_key_available (property over random pools)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ region: fc.constantFrom(...REGIONS), tier: fc.constantFrom(...TIERS) }), { minLength: 1, maxLength: 4 }),
        fc.constantFrom(...EU_COUNTRIES),
        fc.constantFrom(...TIERS),
        async (keys, c, tier) => {
          await removeAllKeys();
          await resetDemo();
          const made = [];
          for (const k of keys) made.push({ ...(await addKey({ config: { region: k.region as Region, tier: k.tier } })), ...k });
          const res = await chat({ headers: { "cf-ipcountry": c, "cn2-tier": tier } });
          const body = await res.text();
          // A key asking for premium serves in standard until its record earns premium (new keys here).
          const servable = made.filter((k) => k.region === "eu" && (k.tier === "premium" ? "standard" : k.tier) === tier);
          if (servable.length === 0) {
            expect(res.status).toBe(503);
            expect(JSON.parse(body).error.code).toBe("no_eu_key_available");
            expect(await demoLog()).toHaveLength(0);
          } else {
            expect(res.status, body).toBe(200);
            const log = await demoLog();
            const creds = new Set(servable.map((k) => k.credential));
            for (const entry of log) expect(creds.has(entry.credential)).toBe(true);
          }
        },
      ),
      { numRuns: 12 },
    );
  }, 60_000);

  it("PR15: the buyer's tier and price cap choose among keys; non-EU buyers may use any region", async () => {
    const economy = await addKey({ config: { tier: "economy", region: "us", priceMicros: 300 } });
    const premium = await addKey({ config: { tier: "premium", region: "eu", priceMicros: 5000 } });
    await earnPremium(premium.keyId, "eu");
    const standard = await addKey({ config: { tier: "standard", region: "asia", priceMicros: 2000 } });
    const servedBy = async (headers: Record<string, string>) => {
      await resetDemo();
      const res = await chat({ headers });
      await res.text();
      return { status: res.status, credential: (await demoLog())[0]?.credential };
    };
    expect(await servedBy({ "cn2-tier": "economy", "cf-ipcountry": "US" })).toEqual({ status: 200, credential: economy.credential });
    expect(await servedBy({ "cn2-tier": "premium", "cf-ipcountry": "US" })).toEqual({ status: 200, credential: premium.credential });
    expect(await servedBy({ "cf-ipcountry": "JP" })).toEqual({ status: 200, credential: standard.credential });
    expect(await servedBy({ "cf-ipcountry": "DE" })).toMatchObject({ status: 503 });
    const capped = await chat({ headers: { "cn2-tier": "premium", "cn2-max-price": "4999" } });
    expect(capped.status).toBe(422);
    expect(((await capped.json()) as { error: { code: string } }).error.code).toBe("price_cap_too_low");
    const ok = await chat({ headers: { "cn2-tier": "premium", "cn2-max-price": "5000" } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("cn2-price-micros")).toBe("5000");
  });

  it("a pool snapshot read once is served from isolate memory, without KV, until POOL_CACHE_MS passes", async () => {
    const { keyId } = await addKey({ config: { region: "us" } });
    const withTtl = (ms: number) => ({ ...(env as unknown as Env), POOL_CACHE_MS: String(ms) });
    // A TTL of 0 always reads KV (and refreshes the isolate's copy).
    expect(cachedPools(withTtl(0), "openai", ["us"], "standard")).toBeNull();
    const read = await readPools(withTtl(0), "openai", ["us"], "standard");
    expect(read.flatMap((s) => s.members.map((m) => m.keyId))).toContain(keyId);
    // Within the TTL the same snapshots come from memory, with no promise and no KV read.
    expect(cachedPools(withTtl(60_000), "openai", ["us"], "standard")).toEqual(read);
    // Past it (a moment given, not waited for), the caller must go to KV again.
    expect(cachedPools(withTtl(60_000), "openai", ["us"], "standard", Date.now() + 60_001)).toBeNull();
  });

  it("requests that find a pool expired together share one KV read and get one snapshot object (no read per request in flight)", async () => {
    await addKey({ config: { region: "eu" } });
    const base = env as unknown as Env;
    let reads = 0;
    const counting = (ttl: string): Env => ({
      ...base, POOL_CACHE_MS: ttl,
      POOLS: { ...base.POOLS, get: (...args: Parameters<KVNamespace["get"]>) => (reads++, (base.POOLS.get as (...a: unknown[]) => unknown)(...args)) } as unknown as KVNamespace,
    });
    // Expire the isolate's copy (a TTL of 0 reads and stores it afresh), then 50 at once with a real TTL.
    await readPools(counting("0"), "openai", ["eu"], "standard");
    reads = 0;
    const stale = counting("1");
    await new Promise((r) => setTimeout(r, 5)); // past the 1 ms TTL
    const all = await Promise.all(Array.from({ length: 50 }, () => readPools(stale, "openai", ["eu"], "standard")));
    expect(reads).toBe(1);
    expect(new Set(all.map((snaps) => snaps[0])).size).toBe(1);
    // With POOL_CACHE_MS 0 every request still reads for itself.
    reads = 0;
    await Promise.all(Array.from({ length: 5 }, () => readPools(counting("0"), "openai", ["eu"], "standard")));
    expect(reads).toBe(5);
  });

  it("a region or tier edit moves the key between pools before the next request", async () => {
    // A key's home is fixed at creation, and an EU-tagged key must live in the EU: an EU
    // key may be re-tagged and back, a key made elsewhere cannot become EU-tagged.
    const { keyId } = await addKey({ config: { region: "eu" } });
    expect((await chat({ headers: { "cf-ipcountry": "FR" } })).status).toBe(200);
    const toUs = await api(`/api/keys/${keyId}`, { method: "PATCH", json: { region: "us" } });
    expect(toUs.status).toBe(200);
    expect((await chat({ headers: { "cf-ipcountry": "FR" } })).status).toBe(503);
    expect((await chat({ headers: { "cf-ipcountry": "US" } })).status).toBe(200);
    const eu = (await (await api("/ops/pools/openai/eu/standard")).json()) as { pool: { members: unknown[] } };
    expect(eu.pool.members).toHaveLength(0);
    const back = await api(`/api/keys/${keyId}`, { method: "PATCH", json: { region: "eu", tier: "premium" } });
    expect(back.status).toBe(200);
    // Asked-for premium is earned (tiers.test.ts): until then the key serves EU buyers in standard.
    expect((await chat({ headers: { "cf-ipcountry": "FR", "cn2-tier": "premium" } })).status).toBe(503);
    expect((await chat({ headers: { "cf-ipcountry": "FR" } })).status).toBe(200);
    await earnPremium(keyId, "eu");
    expect((await chat({ headers: { "cf-ipcountry": "FR", "cn2-tier": "premium" } })).status).toBe(200);
    const us = (await (await api("/ops/pools/openai/us/standard")).json()) as { pool: { members: unknown[] } };
    expect(us.pool.members).toHaveLength(0);
    const elsewhere = await addKey({ config: { region: "us" } });
    const refused = await api(`/api/keys/${elsewhere.keyId}`, { method: "PATCH", json: { region: "eu" } });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: { code: string; message: string } }).error.message).toMatch(/EU/);
  });
});
