// M3: the ops inspection summary (tools/inspect.ts) puts the fields operators look at first
// in readable lines above the JSON; P2: where a key serves and the record behind it.
import { describe, expect, it } from "vitest";
import type { KeyInspection } from "../../schema/wire.ts";
import { summarizeJobs, summarizeKey, summarizePayouts, type OpsJob, type OpsPayout } from "../../tools/inspect.ts";

const inspection: KeyInspection = {
  keyId: "k_inspect0000001", sellerId: "8318f563-a631-54b3-8ab5-9722a8736a06", home: "default", createdAt: 0,
  config: {
    provider: "openai", priceMicros: 1000, routePrices: [], requestsPerMinute: 60, maxConcurrent: 5,
    dailyBudgetMicros: null, monthlyBudgetMicros: null, allowedRoutes: [], region: "us", tier: "premium", status: "active",
  },
  health: { state: "healthy", score: 0.95, latencyMs: 120, coolingUntil: 0, reason: null },
  servingTier: "standard",
  trackRecord: { calls: 12, successRate: 11 / 12, uptime: 1, observedMs: 3_600_000 },
  limiter: { windowCount: 3, requestsPerMinute: 60 },
  inFlight: 1, maxConcurrent: 5,
  spend: { dayMicros: 3000, monthMicros: 9000 },
  earnings: { unflushedMicros: 2700, feeMicros: 300, servedCount: 3 },
  bufferedMetadata: 3, credentialLoaded: true, events: [],
};

describe("ops key summary", () => {
  it("shows the tier a key serves in beside the one asked for, with the last day's record", () => {
    const text = summarizeKey(inspection);
    expect(text).toContain("tier      serving standard (asked premium)  last day: 12 calls, 91.7 % ok, 100.00 % up");
    expect(text).toContain("limiter   3/60 requests this minute");
    expect(text).not.toContain("sk-");
  });

  it("a key whose object did not give a record says so without inventing one", () => {
    expect(summarizeKey({ ...inspection, servingTier: null, trackRecord: null })).toContain("tier      serving ? (asked premium)\n");
  });
});

describe("ops payout summary", () => {
  const base: OpsPayout = {
    id: "0b8f6c1e-7a2d-4c1b-9f3e-2d5a6b7c8d9e", sellerId: "8318f563-a631-54b3-8ab5-9722a8736a06", method: "stripe_connect",
    destination: "acct_1Test000000000", amountMicros: 12_340_000, amountUnits: 1234, status: "failed", externalRef: null,
    failureCode: "stripe.insufficient_funds", retryOf: null, requestedAt: "2026-12-02T01:00:00.000Z", sentAt: null,
  };

  it("puts status, amount, destination and the failure on one line per payout", () => {
    const text = summarizePayouts([base]);
    expect(text).toContain("failed");
    expect(text).toContain("$12.340000");
    expect(text).toContain("acct_1Test000000000");
    expect(text).toContain("failed: stripe.insufficient_funds");
  });

  it("flags a sent payout with no recorded transfer, the case ops must check by hand", () => {
    expect(summarizePayouts([{ ...base, status: "sent", failureCode: null, method: "usdc_tempo", destination: "0x52908400098527886E0F7030069857D2E4169EE7" }]))
      .toContain("NO TRANSFER RECORDED");
    expect(summarizePayouts([])).toBe("no payouts");
  });
});

describe("ops jobs summary (M1)", () => {
  const ok: OpsJob = {
    job: "retention", crons: ["30 3 * * *"], purpose: "raw metadata 30 days, aggregates 1 year",
    last: {
      status: "ok", startedAt: "2026-12-02T03:30:00.000Z", finishedAt: "2026-12-02T03:30:01.250Z", counts: { request_log: 12, request_log_hourly: 0 },
      error: null, lastOkAt: "2026-12-02T03:30:01.250Z", watermark: null, runs: 4, failures: 0,
    },
  };

  it("shows each job's cron, how its last run ended and what it counted", () => {
    const text = summarizeJobs([ok]);
    expect(text).toContain("retention");
    expect(text).toContain("30 3 * * *");
    expect(text).toContain("ok  2026-12-02T03:30:00.000Z in 1250 ms");
    expect(text).toContain("request_log=12 request_log_hourly=0");
    expect(text).toContain("runs 4, failed 0");
  });

  it("puts a failure, its reason and the last success in view; a job that never ran says so", () => {
    const failed: OpsJob = { ...ok, job: "earnings_flush", crons: ["5 * * * *"], last: { ...ok.last!, status: "failed", error: "2 key(s) did not flush: db_unavailable", lastOkAt: "2026-12-01T05:05:00.000Z", failures: 1 } };
    const text = summarizeJobs([failed, { job: "rollup", crons: ["5 * * * *"], purpose: "hourly aggregation", last: null }]);
    expect(text).toContain("FAILED");
    expect(text).toContain("error: 2 key(s) did not flush: db_unavailable");
    expect(text).toContain("last ok 2026-12-01T05:05:00.000Z");
    expect(text).toMatch(/rollup\s+5 \* \* \* \*\s+never ran/);
  });
});
