// bench/gc-trace.ts (npm run bench:gc): V8's --trace-gc-nvp lines, as the bench passes
// workerd's log through, summed per isolate.
import { describe, expect, it } from "vitest";
import { gcByIsolate } from "../../bench/gc-trace.ts";

/** One trace line as workerd logs it (V8's own prefix, then the JSON record). */
const line = (isolate: string, at: number, gc: Record<string, unknown>) =>
  `[workerd log] [4242:${isolate}:0] ${String(at).padStart(8)} ms: GC: ${JSON.stringify(gc)}`;

const MB = 1_000_000;
const scavenge = (old0: number, old1: number, over: Record<string, unknown> = {}) => ({
  pause: 2, gc: "s", reason: "allocation failure", allocated: 4 * MB, promoted: 0.5 * MB,
  start_old_gen_consumed_size: old0, end_old_gen_consumed_size: old1, start_global_consumed_size: old0 + 3 * MB, scavenge: 1.9, ...over,
});

describe("gc-trace", () => {
  it("sums each busy isolate's collections: pauses by kind, the share of a full pause in V8's phase timers, old-space growth outside collections", () => {
    const a = "0xaaaa";
    const text = [
      "[bench] unrelated output",
      line(a, 100, scavenge(20 * MB, 20.5 * MB)),
      line(a, 300, scavenge(22.5 * MB, 23 * MB)), // 2 MB grew outside collections since the last one ended
      line("0xbbbb", 310, scavenge(1 * MB, 1 * MB)), // a start-up isolate: too few to show
      line(a, 500, scavenge(24 * MB, 24.5 * MB, { pause: 6 })), // 1 MB more
      `[workerd log] [4242:${a}:0]      550 ms: GC: {"pause":3,"gc":"s"`, // cut by the log's folding
      line(a, 700, {
        pause: 120, gc: "mc", reason: "allocation limit", allocated: 3 * MB, promoted: 0,
        start_old_gen_consumed_size: 27.5 * MB, end_old_gen_consumed_size: 21 * MB, start_global_consumed_size: 37.5 * MB,
        // Top-level phases add up to 20 ms; nested scopes (mark.*) are inside mark's 12.
        mark: 12, "mark.embedder_tracing": 4, "mark.full_closure_parallel": 11, clear: 3, evacuate: 2, sweep: 1, "heap.epilogue": 2,
      }),
      line(a, 900, scavenge(21.5 * MB, 22 * MB)),
      line("0xbbbb", 910, scavenge(1 * MB, 1 * MB)),
    ].join("\n");

    const isolates = gcByIsolate(text, 5);
    expect(isolates.map((i) => i.isolate)).toEqual([a]);
    const [iso] = isolates;
    expect(iso!.spanMs).toBe(800);
    expect(Object.fromEntries(iso!.byKind)).toEqual({
      s: { count: 4, pauseMs: 12, maxMs: 6 },
      mc: { count: 1, pauseMs: 120, maxMs: 120 },
    });
    // Between collections: allocated from the second on; promoted by the one before each.
    expect(iso!.allocated).toBe(4 * MB + 4 * MB + 3 * MB + 4 * MB);
    expect(iso!.promoted).toBe(0.5 * MB * 3 + 0);
    // 2 + 1 + 3 (24.5 -> 27.5) + 0.5 (21 -> 21.5)
    expect(iso!.oldGrowthOutside).toBeCloseTo(6.5 * MB);
    expect(iso!.embedderMax).toBe(10 * MB);
    expect(iso!.full).toHaveLength(1);
    expect(iso!.full[0]!.at).toBe(700);
    expect(iso!.full[0]!.inPhasesMs).toBe(20);

    // With a lower bar the start-up isolate shows too; with none met, nothing does.
    expect(gcByIsolate(text, 2).map((i) => i.isolate)).toEqual([a, "0xbbbb"]);
    expect(gcByIsolate("no trace here", 1)).toEqual([]);
  });
});
