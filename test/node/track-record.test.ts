// P2: a key's track record (calls, failures, downtime over the last day) and the tier it
// earns. Pure functions (objects/seller-key/track-record.ts); the key object's use of them is in
// test/worker/tiers.test.ts.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TIERS } from "../../schema/wire.ts";
import {
  PREMIUM_BARS, WINDOW_MS, cameUp, emptyTrackRecord, recordCall, recordLateFailure, servingTier, summarize, wentDown,
} from "../../objects/seller-key/track-record.ts";

const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);

describe("track record", () => {
  it("counts calls and the key's own failures, a cut stream included", () => {
    const t = emptyTrackRecord();
    for (let i = 0; i < 98; i++) recordCall(t, T0 + i * 1000, true);
    recordCall(t, T0 + 99_000, false);
    recordLateFailure(t, T0 + 100_000);
    expect(summarize(t, T0 + 101_000, T0 - HOUR)).toMatchObject({ calls: 99, successRate: 97 / 99, uptime: 1 });
  });

  it("forgets what is older than a day, and never keeps more than 25 hourly buckets", () => {
    const t = emptyTrackRecord();
    for (let h = 0; h < 30; h++) recordCall(t, T0 + h * HOUR, h >= 10);
    expect(t.buckets.length).toBeLessThanOrEqual(25);
    const s = summarize(t, T0 + 29 * HOUR + 1, T0);
    // Hours 5..29 count (the hour that began a day ago counts whole): 5 failures, 20 successes.
    expect(s.calls).toBe(25);
    expect(s.successRate).toBe(20 / 25);
    expect(summarize(t, T0 + 60 * HOUR, T0).calls).toBe(0);
  });

  it("uptime is the share of the observed time in service, an outage still going on included", () => {
    const t = emptyTrackRecord();
    // A key 10 hours old, out of service for 1 hour, then again for the last 30 minutes.
    wentDown(t, T0 + 2 * HOUR);
    cameUp(t, T0 + 3 * HOUR);
    wentDown(t, T0 + 9.5 * HOUR);
    const s = summarize(t, T0 + 10 * HOUR, T0);
    expect(s.observedMs).toBe(10 * HOUR);
    expect(s.uptime).toBeCloseTo(1 - 1.5 / 10, 10);
    // wentDown twice does not restart the outage.
    wentDown(t, T0 + 9.9 * HOUR);
    expect(summarize(t, T0 + 10 * HOUR, T0).uptime).toBeCloseTo(0.85, 10);
    // An old key is judged over the last day only.
    cameUp(t, T0 + 10 * HOUR);
    expect(summarize(t, T0 + 100 * HOUR, T0 - 1000 * HOUR).uptime).toBe(1);
  });
});

describe("serving tier", () => {
  const summary = fc.record({
    calls: fc.integer({ min: 0, max: 1000 }),
    successRate: fc.double({ min: 0, max: 1, noNaN: true }),
    uptime: fc.double({ min: 0, max: 1, noNaN: true }),
    observedMs: fc.integer({ min: 1, max: WINDOW_MS }),
  });

  it("P2: premium only for a key that asked for it and whose record clears the bars; other tiers are the seller's (property)", () => {
    fc.assert(
      fc.property(fc.constantFrom(...TIERS), fc.constantFrom(...TIERS), summary, fc.integer({ min: 1, max: 500 }), (asked, current, s, min) => {
        const tier = servingTier(asked, current, s, min);
        if (asked !== "premium") {
          expect(tier).toBe(asked);
          return;
        }
        expect(["premium", "standard"]).toContain(tier);
        if (tier === "premium") {
          const bar = current === "premium" ? PREMIUM_BARS.keep : PREMIUM_BARS.earn;
          expect(s.calls).toBeGreaterThanOrEqual(min);
          expect(s.successRate).toBeGreaterThanOrEqual(bar.successRate);
          expect(s.uptime).toBeGreaterThanOrEqual(bar.uptime);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("P2: earned at 99 % / 99.5 %, kept down to 98 % / 99 %, so a key does not flap at the edge", () => {
    const at = (successRate: number, uptime = 1, calls = 200) => ({ calls, successRate, uptime, observedMs: WINDOW_MS });
    expect(servingTier("premium", "standard", at(0.99), 200)).toBe("premium");
    expect(servingTier("premium", "standard", at(0.985), 200)).toBe("standard");
    expect(servingTier("premium", "premium", at(0.985), 200)).toBe("premium");
    expect(servingTier("premium", "premium", at(0.979), 200)).toBe("standard");
    expect(servingTier("premium", "standard", at(1, 0.994), 200)).toBe("standard");
    expect(servingTier("premium", "premium", at(1, 0.991), 200)).toBe("premium");
    expect(servingTier("premium", "premium", at(1, 0.989), 200)).toBe("standard");
    // Too few calls in the last day: not measured, so not premium.
    expect(servingTier("premium", "premium", at(1, 1, 199), 200)).toBe("standard");
  });
});
