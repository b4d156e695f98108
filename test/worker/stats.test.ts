// M2, PR20: the public marketplace statistics (GET /api/stats) through the Worker's real
// entry. Sellers and keys are made through the seller API; request metadata is seeded into
// public.request_log with known latencies and statuses, so every figure is checked against
// one computed by hand; and real proxied traffic, flushed by the key objects' alarm, shows
// up in the counts. The database is shared by the run's test files, so this file lists its
// keys in region "global", which no other suite uses, and reads only its own cells.
import { env } from "cloudflare:workers";
import { runDurableObjectAlarm } from "cloudflare:test";
import * as v from "valibot";
import { beforeAll, describe, expect, it } from "vitest";
import type { Env } from "../../core/env.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { MarketStatsSchema, type MarketStats, type StatsCell } from "../../schema/stats.ts";
import { addKey, as, call, chat, ownerDb, signIn, type TestSeller } from "./helpers.ts";

const e = env as unknown as Env;
const STATS_URL = "https://cn2.test/api/stats";

/** The statistics as computed now: the minute's cached answer is dropped first. */
async function freshStats(): Promise<{ res: Response; text: string; stats: MarketStats }> {
  await caches.default.delete(STATS_URL);
  return cachedStats();
}

/** The statistics as the route answers them (from the cache within the minute). */
async function cachedStats(path = "/api/stats"): Promise<{ res: Response; text: string; stats: MarketStats }> {
  const res = await call(path);
  expect(res.status).toBe(200);
  const text = await res.text();
  // Exactly the published shape: a field the schema does not name fails here.
  const stats = v.parse(MarketStatsSchema, JSON.parse(text));
  return { res, text, stats };
}

const cellOf = (stats: MarketStats, provider: string, tier: string): StatsCell | undefined =>
  stats.cells.find((c) => c.provider === provider && c.region === "global" && c.tier === tier);
const windowOf = (cell: StatsCell | undefined, name: string) => cell?.windows.find((w) => w.window === name);

let counter = 0;
const requestId = () => `req_stats${Date.now().toString(36)}${(counter++).toString(36).padStart(6, "0")}`;

interface Row {
  keyId: string;
  /** Minutes before now. */
  ago: number;
  status: number;
  outcome?: "served" | "upstream_error" | "stream_cut" | "client_abort";
  ttfb: number;
  duration?: number | null;
}

/** Request metadata as a key object's flush writes it, with known figures. */
async function seed(rows: Row[]) {
  await ownerDb(async (sql) => {
    for (const r of rows) {
      await sql`
        insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, duration_ms, status, amount_micros, outcome)
        select ${requestId()}, k.key_id, k.provider, '/v1/chat/completions', 'POST', now() - make_interval(secs => ${r.ago * 60}),
               ${r.ttfb}, ${r.duration ?? null}, ${r.status}, 0, ${r.outcome ?? "served"}
          from public.keys k where k.key_id = ${r.keyId}`;
    }
  });
}

const optOut = (s: TestSeller, out: boolean) => as(s, "/api/stats-opt-out", { method: "POST", json: { optOut: out } });

// Sellers s1..s3 take part; s4 objected to statistics (POST /api/stats-opt-out) and lists
// the cheapest key, with the fastest traffic, in the same cell.
let s1: TestSeller, s2: TestSeller, s3: TestSeller, s4: TestSeller;
const keys: Record<string, string> = {};

describe("public marketplace statistics", () => {
  beforeAll(async () => {
    [s1, s2, s3, s4] = await Promise.all([signIn("stats-one"), signIn("stats-two"), signIn("stats-three"), signIn("stats-four")]);
    for (const [i, s] of [s1, s2, s3, s4].entries()) {
      const named = await as(s, "/api/me", { method: "PATCH", json: { displayName: `Stats Seller ${i + 1} Ltd` } });
      expect(named.status).toBe(200);
    }
    expect((await optOut(s4, true)).status).toBe(200);
    const add = async (name: string, seller: TestSeller, config: Record<string, unknown>) => {
      keys[name] = (await addKey({ seller, config: { region: "global", ...config } })).keyId;
    };
    // openai / global / standard: five active keys of four sellers, one paused key.
    await add("a1", s1, { priceMicros: 1000 });
    await add("a1b", s1, { priceMicros: 2000 });
    await add("a2", s2, { priceMicros: 1500 });
    await add("a3", s3, { priceMicros: 4000 });
    await add("a3paused", s3, { priceMicros: 9000 });
    await add("a4", s4, { priceMicros: 100 });
    expect((await as(s3, `/api/keys/${keys.a3paused}/pause`, { method: "POST" })).status).toBe(200);
    // openai / global / economy: two sellers only.
    await add("b1", s1, { priceMicros: 500, tier: "economy" });
    await add("b2", s2, { priceMicros: 700, tier: "economy" });
    // groq / global / standard: three sellers, for real traffic.
    await add("g1", s1, { provider: "groq", priceMicros: 800 });
    await add("g2", s2, { provider: "groq", priceMicros: 900 });
    await add("g3", s3, { provider: "groq", priceMicros: 1000 });

    await seed([
      // s1: a success half a minute ago; a success and a 500 10 min ago.
      { keyId: keys.a1!, ago: 0.5, status: 200, ttfb: 100, duration: 1000 },
      { keyId: keys.a1!, ago: 10, status: 200, ttfb: 200, duration: 2000 },
      { keyId: keys.a1!, ago: 10, status: 500, outcome: "upstream_error", ttfb: 300 },
      // s2: a success a minute ago; a 429 and a buyer's own 400 20 min ago.
      { keyId: keys.a2!, ago: 1, status: 200, ttfb: 150, duration: 1500 },
      { keyId: keys.a2!, ago: 20, status: 429, outcome: "upstream_error", ttfb: 50 },
      { keyId: keys.a2!, ago: 20, status: 400, ttfb: 80, duration: 90 },
      // s3: a cut stream 15 min ago, a buyer who went away 25 min ago, a success 2 h ago, and
      // 3 days ago a success of the key that is paused now (still this cell's history).
      { keyId: keys.a3!, ago: 15, status: 200, outcome: "stream_cut", ttfb: 120 },
      { keyId: keys.a3!, ago: 25, status: 499, outcome: "client_abort", ttfb: 10 },
      { keyId: keys.a3!, ago: 120, status: 200, ttfb: 400, duration: 4000 },
      { keyId: keys.a3paused!, ago: 3 * 24 * 60, status: 200, ttfb: 600, duration: 6000 },
      // s4 (opted out): three fast successes half a minute ago and a failure 2 days ago.
      { keyId: keys.a4!, ago: 0.5, status: 200, ttfb: 2, duration: 3 },
      { keyId: keys.a4!, ago: 0.5, status: 200, ttfb: 2, duration: 3 },
      { keyId: keys.a4!, ago: 0.5, status: 200, ttfb: 2, duration: 3 },
      { keyId: keys.a4!, ago: 2 * 24 * 60, status: 500, outcome: "upstream_error", ttfb: 5 },
      // The economy cell: both of its sellers served.
      { keyId: keys.b1!, ago: 4, status: 200, ttfb: 70, duration: 700 },
      { keyId: keys.b2!, ago: 4, status: 200, ttfb: 75, duration: 750 },
      // The groq cell: one success per seller half a minute ago.
      { keyId: keys.g1!, ago: 0.5, status: 200, ttfb: 10, duration: 20 },
      { keyId: keys.g2!, ago: 0.5, status: 200, ttfb: 10, duration: 20 },
      { keyId: keys.g3!, ago: 0.5, status: 200, ttfb: 10, duration: 20 },
    ]);
  });

  it("answers without a session, cacheable for a minute at the edge", async () => {
    const { res, stats } = await freshStats();
    expect(res.headers.get("cache-control")).toBe("public, max-age=60, s-maxage=60");
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("strict-transport-security")).toMatch(/max-age=\d+/);
    expect(stats.minSellers).toBe(3);
    expect(cellOf(stats, "openai", "standard")).toBeDefined();
  });

  it("figures per provider, region, tier and window match the hand-computed ones (opted-out seller left out)", async () => {
    const { stats } = await freshStats();
    // Active keys of sellers who did not object: a1, a1b, a2, a3 (a3paused is paused, a4's seller objected).
    // Prices 1000, 1500, 2000, 4000: median (1500 + 2000) / 2.
    expect(cellOf(stats, "openai", "standard")).toEqual({
      provider: "openai", region: "global", tier: "standard", suppressed: false,
      activeKeys: 4,
      priceMicros: { min: 1000, median: 1750, max: 4000 },
      windows: [
        // Last 5 minutes: only s1 and s2 served (s4's calls do not count): suppressed.
        { window: "5m", suppressed: true, requests: null, successRate: null, uptime: null, latencyMs: null, ttfbMs: null },
        // Last 30 minutes, s1..s3 (the client abort left out): 7 attempts, 3 successes (3/7 = 0.4286).
        // Uptime: the 429 counts on neither side; the 500 and the cut stream are failures; the
        // 400 is an answer: (6 - 2) / 6 = 0.6667.
        // Latency of the successes 1000, 1500, 2000: p50 1500, p90 1500 + 0.8 * 500 = 1900, p99 1500 + 0.98 * 500 = 1990.
        // Their time to first byte 100, 150, 200: p50 150, p90 190, p99 199.
        { window: "30m", suppressed: false, requests: 7, successRate: 0.4286, uptime: 0.6667, latencyMs: { p50: 1500, p90: 1900, p99: 1990 }, ttfbMs: { p50: 150, p90: 190, p99: 199 } },
        // Last day adds s3's success 2 h ago: 8 attempts, 4 successes; uptime 5 / 7 = 0.7143.
        // Latency 1000, 1500, 2000, 4000: p50 1750, p90 2000 + 0.7 * 2000 = 3400, p99 2000 + 0.97 * 2000 = 3940.
        // TTFB 100, 150, 200, 400: p50 175, p90 340, p99 394.
        { window: "1d", suppressed: false, requests: 8, successRate: 0.5, uptime: 0.7143, latencyMs: { p50: 1750, p90: 3400, p99: 3940 }, ttfbMs: { p50: 175, p90: 340, p99: 394 } },
        // Last week adds the paused key's success 3 days ago: 9 attempts, 5 successes (0.5556); uptime 6 / 8.
        // Latency 1000..6000: p50 2000, p90 4000 + 0.6 * 2000 = 5200, p99 4000 + 0.96 * 2000 = 5920.
        // TTFB 100..600: p50 200, p90 520, p99 592.
        { window: "7d", suppressed: false, requests: 9, successRate: 0.5556, uptime: 0.75, latencyMs: { p50: 2000, p90: 5200, p99: 5920 }, ttfbMs: { p50: 200, p90: 520, p99: 592 } },
      ],
    });
  });

  it("PR20: a cell with fewer than 3 distinct sellers is suppressed (present, every figure null)", async () => {
    const { stats } = await freshStats();
    const economy = cellOf(stats, "openai", "economy");
    expect(economy).toEqual({
      provider: "openai", region: "global", tier: "economy", suppressed: true, activeKeys: null, priceMicros: null,
      windows: ["5m", "30m", "1d", "7d"].map((window) => ({ window, suppressed: true, requests: null, successRate: null, uptime: null, latencyMs: null, ttfbMs: null })),
    });
    // Two keys of one seller do not make two sellers: a third key of s1 keeps it suppressed.
    const extra = await addKey({ seller: s1, config: { region: "global", tier: "economy", priceMicros: 600 } });
    keys.bExtra = extra.keyId;
    expect(cellOf((await freshStats()).stats, "openai", "economy")?.suppressed).toBe(true);
    // A third seller lifts it.
    keys.b3 = (await addKey({ seller: s3, config: { region: "global", tier: "economy", priceMicros: 650 } })).keyId;
    const lifted = cellOf((await freshStats()).stats, "openai", "economy");
    expect(lifted).toMatchObject({ suppressed: false, activeKeys: 4, priceMicros: { min: 500, median: 625, max: 700 } });
    // Its traffic so far came from two sellers: every window stays suppressed.
    expect(lifted!.windows.every((w) => w.suppressed && w.requests === null)).toBe(true);
    expect((await as(s1, `/api/keys/${extra.keyId}`, { method: "DELETE" })).status).toBe(200);
  });

  it("PR25 PR20: an objecting seller's key is in no figure; rejoining puts it back", async () => {
    const without = cellOf((await freshStats()).stats, "openai", "standard");
    expect(without?.activeKeys).toBe(4);
    // s4 withdraws the objection: its key and calls count again, and make a third seller in
    // the last 5 minutes.
    expect(await (await optOut(s4, false)).json()).toEqual({ statsOptOut: false });
    const joined = cellOf((await freshStats()).stats, "openai", "standard");
    expect(joined).toMatchObject({ activeKeys: 5, priceMicros: { min: 100, median: 1500, max: 4000 } });
    // 5 min: s1's 100/1000, s2's 150/1500 and s4's three 2/3 (ttfb/latency): 5 successes.
    // Latency 3, 3, 3, 1000, 1500: p50 3, p90 1000 + 0.6 * 500 = 1300, p99 1000 + 0.96 * 500 = 1480.
    // TTFB 2, 2, 2, 100, 150: p50 2, p90 130, p99 148.
    expect(windowOf(joined, "5m")).toEqual({
      window: "5m", suppressed: false, requests: 5, successRate: 1, uptime: 1,
      latencyMs: { p50: 3, p90: 1300, p99: 1480 }, ttfbMs: { p50: 2, p90: 130, p99: 148 },
    });
    // The week: 9 attempts before, s4's 4 more.
    expect(windowOf(joined, "7d")).toMatchObject({ requests: 13 });
    // s4 objects again (the route's default): every figure is as before, to the digit.
    expect(await (await as(s4, "/api/stats-opt-out", { method: "POST" })).json()).toEqual({ statsOptOut: true });
    expect(cellOf((await freshStats()).stats, "openai", "standard")).toEqual(without);
  });

  it("PR20: no field identifies a seller or a key", async () => {
    // s4 rejoins for this scan, so its data is in the answer too.
    await optOut(s4, false);
    const { text, stats } = await freshStats();
    expect(cellOf(stats, "openai", "standard")?.activeKeys).toBe(5);
    const sellers = [s1, s2, s3, s4];
    const identifiers = [
      ...sellers.flatMap((s, i) => [s.id, s.email, `Stats Seller ${i + 1} Ltd`, s.token]),
      ...Object.values(keys),
    ];
    const requestIds = await ownerDb(async (sql) =>
      (await sql<{ request_id: string }[]>`select request_id from public.request_log where key_id in ${sql(Object.values(keys))}`).map((r) => r.request_id));
    expect(requestIds.length).toBeGreaterThan(10);
    for (const id of [...identifiers, ...requestIds]) {
      expect(text).not.toContain(id);
      expect(text.toLowerCase()).not.toContain(id.toLowerCase());
    }
    // Nor anything shaped like one: no UUID, key id, request id or e-mail address at all.
    expect(text).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i);
    expect(text).not.toMatch(/k_[a-z0-9]{12}/);
    expect(text).not.toMatch(/req_[A-Za-z0-9]{16}/);
    expect(text).not.toContain("@");
    // Every string in the answer is one of the published vocabularies (or the time it was made).
    const strings: string[] = [];
    JSON.parse(text, (_k, value) => {
      if (typeof value === "string") strings.push(value);
      return value;
    });
    const vocabulary = new Set(["openai", "anthropic", "google", "groq", "eu", "us", "asia", "global", "standard", "premium", "economy", "5m", "30m", "1d", "7d"]);
    expect(strings.filter((s) => !vocabulary.has(s) && !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(s))).toEqual([]);
    await optOut(s4, true);
  });

  it("repeated calls within the minute are answered from the cache, not from Postgres", async () => {
    const first = await freshStats();
    const cached = await cachedStats("/api/stats?cache-buster=1");
    expect(cached.stats).toEqual(first.stats);
    expect(cached.res.headers.get("strict-transport-security")).toMatch(/max-age=\d+/);
    // New traffic reaches Postgres, yet the minute's answer stands...
    await seed([{ keyId: keys.g1!, ago: 1, status: 200, ttfb: 10, duration: 20 }]);
    const again = await cachedStats();
    expect(again.stats.generatedAt).toBe(first.stats.generatedAt);
    expect(windowOf(cellOf(again.stats, "groq", "standard"), "5m")?.requests).toBe(windowOf(cellOf(first.stats, "groq", "standard"), "5m")?.requests);
    // ...until the cached answer is gone.
    const later = await freshStats();
    expect(later.stats.generatedAt).not.toBe(first.stats.generatedAt);
    expect(windowOf(cellOf(later.stats, "groq", "standard"), "5m")?.requests).toBe(windowOf(cellOf(first.stats, "groq", "standard"), "5m")!.requests! + 1);
  });

  it("real proxied traffic, flushed by the key objects' alarm, shows up in the counts", async () => {
    const before = windowOf(cellOf((await freshStats()).stats, "groq", "standard"), "5m");
    expect(before?.suppressed).toBe(false);
    const served = 6;
    for (let i = 0; i < served; i++) {
      const res = await chat({ provider: "groq", stream: i % 2 === 1 });
      expect(res.status).toBe(200);
      await res.text();
    }
    // Not in Postgres yet: the key objects keep it until their flush alarm.
    expect(windowOf(cellOf((await freshStats()).stats, "groq", "standard"), "5m")?.requests).toBe(before!.requests);
    const groq = [keys.g1!, keys.g2!, keys.g3!];
    let flushed = 0;
    for (const keyId of groq) if (await runDurableObjectAlarm(keyStub(e, keyId, "default"))) flushed++;
    expect(flushed).toBeGreaterThan(0);
    const after = windowOf(cellOf((await freshStats()).stats, "groq", "standard"), "5m");
    expect(after).toMatchObject({ suppressed: false, requests: before!.requests! + served, successRate: 1, uptime: 1 });
    // Every proxied row carries both times, streamed ones included: the last byte never before the first.
    const rows = await ownerDb((sql) => sql<{ latency_ms: number; duration_ms: number | null }[]>`
      select latency_ms, duration_ms from public.request_log where key_id in ${sql(groq)} and request_id not like 'req_stats%'`);
    expect(rows).toHaveLength(served);
    for (const r of rows) {
      expect(r.duration_ms).not.toBeNull();
      expect(r.duration_ms!).toBeGreaterThanOrEqual(r.latency_ms);
    }
  });
});
