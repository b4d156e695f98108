// What V8's collector did in workerd during a bench run, per isolate: collections by kind
// and their pauses, how much of a full collection's pause V8's own phase timers account for,
// and where the old generation's growth came from (docs/bench.md, "Eighth pass").
//
//   CN2_BENCH_WORKERD_LOG=all MINIFLARE_WORKERD_V8_FLAGS="--trace-gc --trace-gc-nvp" \
//     npm run bench -- --only cn2 --concurrency 50 --duration 8 --rounds 1 2> /tmp/gc.txt
//   npm run bench:gc -- /tmp/gc.txt
//
// With --trace-gc-nvp, V8 prints one JSON line per collection; the bench passes workerd's
// log lines through (`[workerd log] [pid:isolate:id] <ms> ms: GC: {...}`). Isolates with
// fewer than --min collections (start-up isolates) are left out.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** One --trace-gc-nvp record (the fields used here). */
export interface Gc {
  gc: string;
  pause: number;
  reason: string;
  allocated: number;
  promoted: number;
  start_old_gen_consumed_size: number;
  end_old_gen_consumed_size: number;
  start_global_consumed_size: number;
  [phase: string]: number | string | boolean;
}

/** A full collection's top-level phases (V8's GCTracer scopes); the rest of its pause is outside them. */
const TOP_PHASES = [
  "heap.prologue", "heap.epilogue", "heap.external.prologue", "heap.external.epilogue", "heap.external.weak_global_handles",
  "heap.embedder_tracing_epilogue", "complete.sweep_array_buffers", "prologue", "mark", "clear", "evacuate", "sweep", "finish", "epilogue",
];

export interface IsolateGc {
  isolate: string;
  /** ms from the isolate's start: its first collection to its last. */
  spanMs: number;
  byKind: Map<string, { count: number; pauseMs: number; maxMs: number }>;
  /** Bytes allocated between collections (V8's `allocated`), promoted, and the old generation's growth outside collections. */
  allocated: number;
  promoted: number;
  oldGrowthOutside: number;
  /** The largest C++ (embedder) heap seen at a collection's start. */
  embedderMax: number;
  full: { at: number; gc: Gc; inPhasesMs: number }[];
}

/** The collections of each isolate with at least `min` of them, in a bench output holding --trace-gc-nvp lines. */
export function gcByIsolate(text: string, min = 5): IsolateGc[] {
  const byIsolate = new Map<string, { at: number; gc: Gc }[]>();
  for (const line of text.split("\n")) {
    const m = /\[\d+:(0x[0-9a-f]+):\d+\]\s+(\d+) ms: GC: (\{.*\})\s*$/.exec(line);
    if (!m) continue;
    let gc: Gc;
    try {
      gc = JSON.parse(m[3]!) as Gc;
    } catch {
      continue; // a line cut by the log's folding
    }
    const list = byIsolate.get(m[1]!) ?? [];
    list.push({ at: Number(m[2]), gc });
    byIsolate.set(m[1]!, list);
  }
  const out: IsolateGc[] = [];
  for (const [isolate, list] of byIsolate) {
    if (list.length < min) continue;
    const byKind = new Map<string, { count: number; pauseMs: number; maxMs: number }>();
    for (const { gc } of list) {
      const k = byKind.get(gc.gc) ?? { count: 0, pauseMs: 0, maxMs: 0 };
      k.count++;
      k.pauseMs += gc.pause;
      k.maxMs = Math.max(k.maxMs, gc.pause);
      byKind.set(gc.gc, k);
    }
    // Old-generation growth between collections that promotion does not explain: objects
    // allocated straight into old space (by V8, or by the embedder through its API).
    let allocated = 0, promoted = 0, oldGrowthOutside = 0, embedderMax = 0;
    for (let i = 0; i < list.length; i++) {
      const now = list[i]!.gc;
      embedderMax = Math.max(embedderMax, now.start_global_consumed_size - now.start_old_gen_consumed_size);
      if (i === 0) continue;
      const before = list[i - 1]!.gc;
      allocated += now.allocated;
      promoted += before.promoted;
      oldGrowthOutside += Math.max(0, now.start_old_gen_consumed_size - before.end_old_gen_consumed_size);
    }
    const full = list
      .filter(({ gc }) => gc.gc !== "s")
      .map(({ at, gc }) => ({ at, gc, inPhasesMs: TOP_PHASES.reduce((sum, p) => sum + (typeof gc[p] === "number" ? (gc[p] as number) : 0), 0) }));
    out.push({ isolate, spanMs: list[list.length - 1]!.at - list[0]!.at, byKind, allocated, promoted, oldGrowthOutside, embedderMax, full });
  }
  return out;
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
const KINDS: Record<string, string> = { s: "scavenge", ms: "mark-sweep", mc: "mark-compact", mmc: "minor mark-compact" };

function print(iso: IsolateGc) {
  const seconds = iso.spanMs / 1000;
  console.log(`isolate ${iso.isolate}: ${[...iso.byKind.values()].reduce((n, k) => n + k.count, 0)} collections over ${seconds.toFixed(1)} s`);
  for (const [kind, k] of iso.byKind) {
    console.log(`  ${(KINDS[kind] ?? kind).padEnd(14)} ${String(k.count).padStart(4)}  pause total ${k.pauseMs.toFixed(0).padStart(6)} ms  max ${k.maxMs.toFixed(1).padStart(6)} ms`);
  }
  console.log(
    `  allocated ${mb(iso.allocated)} MB between collections (${mb(iso.allocated / Math.max(seconds, 0.001))} MB/s); ` +
      `old generation grew ${mb(iso.oldGrowthOutside)} MB outside collections, besides ${mb(iso.promoted)} MB promoted; embedder (C++) heap up to ${mb(iso.embedderMax)} MB`,
  );
  for (const { at, gc, inPhasesMs } of iso.full) {
    console.log(
      `  ${String(at).padStart(7)} ms  ${(KINDS[gc.gc] ?? gc.gc).padEnd(12)} pause ${gc.pause.toFixed(1).padStart(6)} ms, ${inPhasesMs.toFixed(1)} ms of it in V8's phase timers ` +
        `(mark ${Number(gc.mark ?? 0).toFixed(1)}, of which embedder tracing ${Number(gc["mark.embedder_tracing"] ?? 0).toFixed(1)}); ` +
        `${gc.reason}; old generation ${mb(gc.start_old_gen_consumed_size)} -> ${mb(gc.end_old_gen_consumed_size)} MB, embedder heap ${mb(gc.start_global_consumed_size - gc.start_old_gen_consumed_size)} MB`,
    );
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { positionals, values } = parseArgs({ allowPositionals: true, options: { min: { type: "string", default: "5" } } });
  const [file] = positionals;
  if (!file) {
    console.error("usage: npm run bench:gc -- BENCH_OUTPUT_WITH_TRACE_GC_NVP [--min 5]");
    process.exit(2);
  }
  const isolates = gcByIsolate(readFileSync(file, "utf8"), Number(values.min));
  if (isolates.length === 0) {
    console.error(`no isolate with ${values.min}+ collections in ${file}: was the bench run with MINIFLARE_WORKERD_V8_FLAGS="--trace-gc --trace-gc-nvp" and CN2_BENCH_WORKERD_LOG=all?`);
    process.exit(1);
  }
  for (const iso of isolates) print(iso);
}
