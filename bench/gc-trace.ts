// What V8's collector did in workerd during a bench run, per isolate: collections by kind
// and their pauses, how much of a full collection's pause V8's own phase timers account for,
// and where the old generation's growth came from (docs/bench.md, "Where the p99 goes").
//
//   CN2_BENCH_WORKERD_LOG=all MINIFLARE_WORKERD_V8_FLAGS="--trace-gc --trace-gc-nvp" \
//     npm run bench -- --only cn2 --concurrency 50 --duration 8 --rounds 1 2> /tmp/gc.txt
//   npm run bench:gc -- /tmp/gc.txt
//
// With --trace-gc-nvp, V8 prints one JSON line per collection; the bench passes workerd's
// log lines through (`[workerd log] [pid:isolate:id] <ms> ms: GC: {...}`). Isolates with
// fewer than --min collections (start-up isolates) are left out.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { positionals, values } = parseArgs({ allowPositionals: true, options: { min: { type: "string", default: "5" } } });
const [file] = positionals;
if (!file) {
  console.error("usage: npm run bench:gc -- BENCH_OUTPUT_WITH_TRACE_GC_NVP [--min 5]");
  process.exit(2);
}

/** One --trace-gc-nvp record (the fields used here). */
interface Gc {
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

const byIsolate = new Map<string, { at: number; gc: Gc }[]>();
for (const line of readFileSync(file, "utf8").split("\n")) {
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

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
const kinds: Record<string, string> = { s: "scavenge", ms: "mark-sweep", mc: "mark-compact", mmc: "minor mark-compact" };
let shown = 0;
for (const [isolate, list] of byIsolate) {
  if (list.length < Number(values.min)) continue;
  shown++;
  const span = (list[list.length - 1]!.at - list[0]!.at) / 1000;
  console.log(`isolate ${isolate}: ${list.length} collections over ${span.toFixed(1)} s`);
  for (const kind of new Set(list.map((x) => x.gc.gc))) {
    const pauses = list.filter((x) => x.gc.gc === kind).map((x) => x.gc.pause);
    const total = pauses.reduce((a, b) => a + b, 0);
    console.log(`  ${(kinds[kind] ?? kind).padEnd(14)} ${String(pauses.length).padStart(4)}  pause total ${total.toFixed(0).padStart(6)} ms  max ${Math.max(...pauses).toFixed(1).padStart(6)} ms`);
  }
  // Old-generation growth between collections that promotion does not explain: objects
  // allocated straight into old space (by V8 or by the embedder through its API).
  let promoted = 0, direct = 0, embedder = 0, young = 0;
  for (let i = 1; i < list.length; i++) {
    const before = list[i - 1]!.gc, now = list[i]!.gc;
    young += now.allocated;
    promoted += before.promoted;
    direct += Math.max(0, now.start_old_gen_consumed_size - before.end_old_gen_consumed_size);
    embedder = Math.max(embedder, now.start_global_consumed_size - now.start_old_gen_consumed_size);
  }
  console.log(`  allocated ${mb(young)} MB between collections (${mb(young / Math.max(span, 0.001))} MB/s); old generation grew ${mb(direct)} MB outside collections, besides ${mb(promoted)} MB promoted; embedder (C++) heap up to ${mb(embedder)} MB`);
  for (const { at, gc } of list) {
    if (gc.gc === "s") continue;
    const inPhases = TOP_PHASES.reduce((sum, p) => sum + (typeof gc[p] === "number" ? (gc[p] as number) : 0), 0);
    console.log(
      `  ${String(at).padStart(7)} ms  ${(kinds[gc.gc] ?? gc.gc).padEnd(12)} pause ${gc.pause.toFixed(1).padStart(6)} ms, ${inPhases.toFixed(1)} ms of it in V8's phase timers (mark ${Number(gc.mark ?? 0).toFixed(1)}, of which embedder tracing ${Number(gc["mark.embedder_tracing"] ?? 0).toFixed(1)}); ` +
        `${gc.reason}; old generation ${mb(gc.start_old_gen_consumed_size)} -> ${mb(gc.end_old_gen_consumed_size)} MB, embedder heap ${mb(gc.start_global_consumed_size - gc.start_old_gen_consumed_size)} MB`,
    );
  }
}
if (shown === 0) {
  console.error(`no isolate with ${values.min}+ collections in ${file}: was the bench run with MINIFLARE_WORKERD_V8_FLAGS="--trace-gc --trace-gc-nvp" and CN2_BENCH_WORKERD_LOG=all?`);
  process.exit(1);
}
