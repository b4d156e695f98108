// Where cn2's tail latency goes: lines up the bench's slow answers (CN2_BENCH_SLOW_LOG)
// with `perf record` samples of workerd's main thread, and says what that thread was doing
// while a whole burst of answers waited (docs/bench.md, "Where the p99 goes").
//
//   CN2_BENCH_SLOW_LOG=/tmp/slow.txt npm run bench -- --only cn2 --concurrency 50 --duration 8 &
//   perf record -F 499 -g -k CLOCK_REALTIME -o /tmp/perf.data -p "$(pgrep -f 'workerd serve' | head -1)" -- sleep 45
//   perf script -i /tmp/perf.data -F tid,time,ip,sym,dso > /tmp/perf.txt
//   npm run bench:stalls -- /tmp/slow.txt /tmp/perf.txt [--burst 25]
//
// A stall is a 100 ms span in which at least --burst answers ended slow: every connection
// waited on the same thing. Its window runs from its slowest answer's start to its end.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { positionals, values } = parseArgs({ allowPositionals: true, options: { burst: { type: "string", default: "25" } } });
const [slowFile, perfFile] = positionals;
if (!slowFile || !perfFile) {
  console.error("usage: npm run bench:stalls -- SLOW_LOG PERF_SCRIPT_TEXT [--burst 25]");
  process.exit(2);
}

/** What a sample's stack says the thread was doing; GC's own phases first. */
function kind(stack: string): string {
  if (/CallGCEpilogueCallbacks|maybeDeferDestruction|RefToDelete/.test(stack)) return "GC: destroying native objects (Request, Response, Headers)";
  if (/Scavenge|MinorGC/.test(stack)) return "GC: minor (scavenge)";
  if (/MarkCompact|cppgc|Sweeper|IncrementalMarking|MarkingVisitor/.test(stack)) return "GC: major (mark-compact)";
  if (/sqlite/i.test(stack)) return "SQLite";
  if (/perf-\d+\.map|Builtins_|Interpreter/.test(stack)) return "JavaScript";
  return "workerd native (HTTP, RPC, streams)";
}

// perf script: a "tid time:" line, then one stack frame per indented line, then a blank line.
const samples: { tid: number; at: number; kind: string }[] = [];
let head: { tid: number; at: number } | null = null;
let frames: string[] = [];
for (const line of readFileSync(perfFile, "utf8").split("\n")) {
  if (line.trim() === "") {
    if (head) samples.push({ ...head, kind: kind(frames.join(" ")) });
    head = null;
    frames = [];
  } else if (!/^\s/.test(line)) {
    const [tid, time] = line.trim().split(/\s+/);
    head = { tid: Number(tid), at: Number.parseFloat(time!) * 1000 };
  } else frames.push(line.trim());
}
if (head) samples.push({ ...head, kind: kind(frames.join(" ")) });
if (samples.length === 0) throw new Error(`no samples in ${perfFile}`);

// workerd's main thread is the one sampled most.
const perTid = new Map<number, number>();
for (const s of samples) perTid.set(s.tid, (perTid.get(s.tid) ?? 0) + 1);
const mainTid = [...perTid].sort((a, b) => b[1] - a[1])[0]![0];
const main = samples.filter((s) => s.tid === mainTid);

const share = (list: typeof main) => {
  const counts = new Map<string, number>();
  for (const s of list) counts.set(s.kind, (counts.get(s.kind) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${((100 * n) / list.length).toFixed(0)}%`).join(", ");
};
console.log(`main thread ${mainTid}: ${main.length} samples; overall: ${share(main)}`);

const slow = readFileSync(slowFile, "utf8").trim().split("\n").filter(Boolean).map((l) => {
  const [end, ms] = l.split(" ").map(Number);
  return { end: end!, ms: ms! };
});
const buckets = new Map<number, { end: number; ms: number }[]>();
for (const a of slow) {
  const b = Math.floor(a.end / 100);
  const list = buckets.get(b);
  if (list) list.push(a);
  else buckets.set(b, [a]);
}
const first = main[0]!.at;
const last = main[main.length - 1]!.at;
for (const [, answers] of [...buckets].sort((a, b) => a[0] - b[0])) {
  if (answers.length < Number(values.burst)) continue;
  const worst = answers.reduce((a, b) => (b.ms > a.ms ? b : a));
  const from = worst.end - worst.ms;
  const to = Math.max(...answers.map((a) => a.end));
  if (to < first || from > last) continue; // outside the recording
  const inside = main.filter((s) => s.at >= from && s.at <= to);
  console.log(`stall ending ${new Date(to).toISOString()}: ${answers.length} answers up to ${worst.ms.toFixed(0)} ms; ${inside.length} samples: ${inside.length ? share(inside) : "none (thread off CPU)"}`);
}
