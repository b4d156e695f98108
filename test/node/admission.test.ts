// P3, P4: a key's admission decision on its own (objects/seller-key/admission.ts), each
// refusal in the order the key object applies them, and a property: whatever the input,
// an admitted request fits every limit the key has.
import fc from "fast-check";
import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { admit, type AdmissionInput } from "../../objects/seller-key/admission.ts";
import * as h from "../../objects/seller-key/health.ts";
import { KeyConfigSchema } from "../../schema/wire.ts";

const NOW = 1_700_000_000_000;
const config = v.parse(KeyConfigSchema, { provider: "openai", priceMicros: 1000, requestsPerMinute: 3, maxConcurrent: 2, region: "us", dailyBudgetMicros: 5000, monthlyBudgetMicros: 8000 });
const base: AdmissionInput = {
  config, defaultRoutes: ["POST /v1/chat/completions"], health: h.initialHealth(), probeInFlight: false,
  inFlight: 0, inWindow: 0, oldestHit: undefined, spentDay: 0, spentMonth: 0, paid: 1000,
  method: "POST", path: "/v1/chat/completions", now: NOW,
};
const cooling = h.onRateLimited(h.initialHealth(), "10", NOW);

describe("admission", () => {
  it("admits a request that fits, at the key's price", () => {
    expect(admit(base)).toEqual({ ok: true, price: 1000, probe: false });
  });

  it("PR17: refuses in order: paused, health, route, concurrency, rate, price, budget", () => {
    const code = (over: Partial<AdmissionInput>) => {
      const r = admit({ ...base, ...over });
      return r.ok ? "ok" : r.code;
    };
    expect(code({ config: { ...config, status: "paused" }, health: cooling })).toBe("key_paused");
    expect(code({ health: h.disabled(h.initialHealth(), "upstream_401") })).toBe("key_disabled");
    expect(code({ health: cooling, path: "/v1/nope" })).toBe("key_cooling");
    expect(code({ path: "/v1/embeddings", inFlight: 2 })).toBe("route_not_allowed");
    expect(code({ inFlight: 2, inWindow: 3 })).toBe("concurrency_limit");
    expect(code({ inWindow: 3, oldestHit: NOW - 1_000, paid: 1 })).toBe("rate_limited");
    expect(code({ paid: 999, spentDay: 5000 })).toBe("price_above_paid");
    expect(code({ spentDay: 4001 })).toBe("budget_exhausted");
    expect(code({ spentMonth: 7001 })).toBe("budget_exhausted");
    // An operator's unpaid call (paid 0) is not refused for price.
    expect(code({ paid: 0 })).toBe("ok");
  });

  it("retry-after: the rate limit frees up when the oldest hit leaves the minute; cooling when it ends", () => {
    expect(admit({ ...base, inWindow: 3, oldestHit: NOW - 58_500 })).toMatchObject({ ok: false, retryAfterSeconds: 2 });
    expect(admit({ ...base, health: cooling })).toMatchObject({ ok: false, code: "key_cooling", retryAfterSeconds: 10 });
  });

  it("a cooled-down key takes one probe at a time", () => {
    const later = NOW + 10_000;
    expect(admit({ ...base, health: cooling, now: later })).toEqual({ ok: true, price: 1000, probe: true });
    expect(admit({ ...base, health: cooling, now: later, probeInFlight: true })).toMatchObject({ ok: false, code: "key_cooling" });
  });

  it("per-route prices and the key's own allow-list apply", () => {
    const priced = { ...config, allowedRoutes: ["POST /v1/embeddings"], routePrices: [{ route: "POST /v1/embeddings", priceMicros: 200 }] };
    expect(admit({ ...base, config: priced, path: "/v1/embeddings" })).toEqual({ ok: true, price: 200, probe: false });
    expect(admit({ ...base, config: priced })).toMatchObject({ ok: false, code: "route_not_allowed" });
  });

  it("property: an admitted request fits concurrency, rate, price and both budgets", () => {
    fc.assert(
      fc.property(
        fc.record({ inFlight: fc.nat(4), inWindow: fc.nat(5), spentDay: fc.nat(7000), spentMonth: fc.nat(9000), paid: fc.nat(2000) }),
        (over) => {
          const r = admit({ ...base, ...over, oldestHit: NOW - 1 });
          if (!r.ok) return;
          expect(over.inFlight).toBeLessThan(config.maxConcurrent);
          expect(over.inWindow).toBeLessThan(config.requestsPerMinute);
          if (over.paid > 0) expect(r.price).toBeLessThanOrEqual(over.paid);
          expect(over.spentDay + r.price).toBeLessThanOrEqual(config.dailyBudgetMicros!);
          expect(over.spentMonth + r.price).toBeLessThanOrEqual(config.monthlyBudgetMicros!);
        },
      ),
      { seed: 9, numRuns: 500 },
    );
  });
});
