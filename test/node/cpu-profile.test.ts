// bench/cpu-profile.ts: the per-function summary of a V8 CPU profile, on a synthetic one.
import { describe, expect, it } from "vitest";
import { GAP_INTERVALS, summarize, type CpuProfile } from "../../bench/cpu-profile.ts";

const frame = (functionName: string, lineNumber = 0) => ({ functionName, url: functionName.startsWith("(") ? "" : "index.js", lineNumber, columnNumber: 0 });

/** root -> handler -> check, and root -> (idle). */
const nodes = [
  { id: 1, callFrame: frame("(root)"), children: [2, 4] },
  { id: 2, callFrame: frame("handler", 9), children: [3] },
  { id: 3, callFrame: frame("check", 19) },
  { id: 4, callFrame: frame("(idle)") },
];

describe("cpu-profile summarize", () => {
  it("charges each sample the time to the next one, at most GAP_INTERVALS median intervals; a long stretch without samples is reported apart, not given to the frame before it", () => {
    // 100 us between samples, except one second of silence after a sample in `check`.
    const samples = [2, 3, 3, 2, 4, 2, 3, 2, 2];
    const timeDeltas = [0, 100, 100, 100, 100, 100, 100, 1_000_000 + 100, 100];
    const profile: CpuProfile = { nodes, startTime: 0, endTime: 2_000_000, samples, timeDeltas };
    const { costs, totalMs, idleMs, gapMs } = summarize(profile);
    const cap = (GAP_INTERVALS * 100) / 1000;
    const of = (name: string) => costs.find((c) => c.name.startsWith(name))!;
    // Sample 6 (`check`) is followed by the silence: it counts for the cap, not a second.
    expect(of("check").selfMs).toBeCloseTo(0.1 + 0.1 + cap, 6);
    expect(of("handler").selfMs).toBeCloseTo(0.1 * 5, 6);
    expect(of("handler").totalMs).toBeCloseTo(of("handler").selfMs + of("check").selfMs, 6);
    expect(idleMs).toBeCloseTo(0.1, 6);
    expect(gapMs).toBeCloseTo(1_000.1 - cap, 6);
    expect(totalMs).toBeCloseTo(of("handler").totalMs + idleMs, 6);
  });

  it("a profile without gaps is summed as it stands", () => {
    const samples = [2, 3, 4];
    const { costs, gapMs, totalMs } = summarize({ nodes, startTime: 0, endTime: 300, samples, timeDeltas: [0, 100, 100] });
    expect(gapMs).toBe(0);
    expect(totalMs).toBeCloseTo(0.3, 6);
    expect(costs.find((c) => c.name.startsWith("check"))!.selfMs).toBeCloseTo(0.1, 6);
  });
});
