// P4: the health state machine on its own, including its bounds.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import * as h from "../../objects/seller-key/health.ts";

const NOW = 1_700_000_000_000;

describe("key health", () => {
  it("three failures in a row open the circuit; a successful probe closes it", () => {
    let s = h.initialHealth();
    s = h.onFailure(s, "server_error", NOW, false);
    s = h.onFailure(s, "timeout", NOW, false);
    expect(s.state).toBe("healthy");
    s = h.onFailure(s, "server_error", NOW, false);
    expect(s.state).toBe("cooling");
    expect(s.coolingUntil).toBe(NOW + 5_000);
    expect(h.admits(s, NOW + 4_999)).toBe("no");
    expect(h.admits(s, NOW + 5_000)).toBe("probe");
    s = h.onSuccess(s, 120);
    expect(s).toMatchObject({ state: "healthy", consecutiveFailures: 0, coolingUntil: 0 });
  });

  it("a failed probe doubles the backoff, up to five minutes", () => {
    let s = h.onFailure(h.onFailure(h.onFailure(h.initialHealth(), "network", NOW, false), "network", NOW, false), "network", NOW, false);
    const waits: number[] = [];
    for (let i = 0; i < 10; i++) {
      s = h.onFailure(s, "server_error", NOW, true);
      waits.push(s.coolingUntil - NOW);
    }
    expect(waits.slice(0, 4)).toEqual([10_000, 20_000, 40_000, 80_000]);
    expect(Math.max(...waits)).toBe(300_000);
  });

  it("429 honours Retry-After in seconds or as a date, bounded to an hour", () => {
    expect(h.onRateLimited(h.initialHealth(), "7", NOW).coolingUntil).toBe(NOW + 7_000);
    expect(h.onRateLimited(h.initialHealth(), new Date(NOW + 12_000).toUTCString(), NOW).coolingUntil).toBe(NOW + 12_000);
    expect(h.onRateLimited(h.initialHealth(), "999999", NOW).coolingUntil).toBe(NOW + 3_600_000);
    expect(h.onRateLimited(h.initialHealth(), "soon", NOW).coolingUntil).toBe(NOW + 30_000);
    expect(h.onRateLimited(h.initialHealth(), null, NOW).state).toBe("cooling");
  });

  it("disabled stays disabled until re-enabled, whatever else happens", () => {
    const off = h.disabled(h.initialHealth(), "upstream_401");
    expect(h.admits(off, NOW + 1e9)).toBe("no");
    expect(h.onSuccess(off, 10).state).toBe("disabled");
    expect(h.onRateLimited(off, "1", NOW).state).toBe("disabled");
    expect(h.onFailure(off, "timeout", NOW, true).state).toBe("disabled");
    expect(h.score(off)).toBe(0);
    expect(h.reenabled(off).state).toBe("healthy");
  });

  it("the score stays within 0..1 for any sequence of outcomes", () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant("ok" as const), latency: fc.integer({ min: 0, max: 60_000 }) }),
      fc.record({ kind: fc.constantFrom("server_error", "timeout", "network", "stream_cut" as const), probe: fc.boolean() }),
      fc.record({ kind: fc.constant("429" as const), retry: fc.option(fc.string()) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        let s = h.initialHealth();
        for (const st of steps) {
          if (st.kind === "ok") s = h.onSuccess(s, st.latency);
          else if (st.kind === "429") s = h.onRateLimited(s, st.retry, NOW);
          else s = h.onFailure(s, st.kind, NOW, st.probe);
          const score = h.score(s);
          expect(score).toBeGreaterThanOrEqual(0);
          expect(score).toBeLessThanOrEqual(1);
          expect(s.coolingUntil - NOW).toBeLessThanOrEqual(3_600_000);
        }
      }),
    );
  });
});
