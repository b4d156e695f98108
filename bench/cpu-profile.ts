// `npm run bench -- --cpu-profile <file>`: a V8 CPU profile of the cn2 isolate (router and
// Durable Objects share it in workerd) while load runs, taken through workerd's own
// inspector (Miniflare's `inspectorPort`, 127.0.0.1). Writes a .cpuprofile for DevTools
// and returns the functions that cost most, by self and by inclusive time, the bytes allocated
// per request, and what stays live after the load (a heap snapshot).
// Time a thread spends blocked outside JavaScript (an fsync, a socket) is not sampled.
import { writeFileSync } from "node:fs";
import { HOST } from "./processes.ts";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FunctionCost {
  name: string;
  selfMs: number;
  totalMs: number;
}

/** Connect to workerd's inspector target for `workerName` and profile while `during` runs. */
interface HeapNode {
  callFrame: CallFrame;
  selfSize: number;
  children?: HeapNode[];
}

/** Bytes a sampling heap profile estimates were allocated (V8 scales each sample's size), in all and by allocating function. */
function sampledBytes(node: HeapNode, by = new Map<string, number>()): { total: number; by: Map<string, number> } {
  let total = node.selfSize;
  if (node.selfSize > 0) {
    const f = node.callFrame;
    const name = `${f.functionName || "(anonymous)"}${f.url ? ` ${f.url.split("/").pop()}:${f.lineNumber + 1}` : ""}`;
    by.set(name, (by.get(name) ?? 0) + node.selfSize);
  }
  for (const child of node.children ?? []) total += sampledBytes(child, by).total;
  return { total, by };
}

export interface Profiled extends CpuProfile {
  heap?: { usedMb: number; totalMb: number };
  /** Bytes allocated while `during` ran, garbage included (V8's sampling heap profiler), if the runtime supports it. */
  allocatedBytes?: number;
  /** The same by allocating function, largest first. */
  allocatedBy?: [string, number][];
  /** What stays live after the load (a heap snapshot, taken after a full GC): bytes by kind, largest first. */
  liveBy?: [string, number][];
}

/**
 * A heap snapshot's nodes summed by kind: objects and native objects by constructor name,
 * everything else (code, strings, arrays, closures...) by V8's node type. This is what a
 * full collection has to mark, so what its pause grows with.
 */
function liveBytes(snapshot: { snapshot: { meta: { node_fields: string[]; node_types: [string[]] } }; nodes: number[]; strings: string[] }): Map<string, number> {
  const fields = snapshot.snapshot.meta.node_fields;
  const types = snapshot.snapshot.meta.node_types[0];
  const [typeAt, nameAt, sizeAt] = ["type", "name", "self_size"].map((f) => fields.indexOf(f));
  const by = new Map<string, number>();
  for (let i = 0; i < snapshot.nodes.length; i += fields.length) {
    const type = types[snapshot.nodes[i + typeAt!]!]!;
    const name = snapshot.strings[snapshot.nodes[i + nameAt!]!]!;
    const size = snapshot.nodes[i + sizeAt!]!;
    // A single string past 256 KB is named for what it starts with (a script's source, say).
    const kind = type === "object" || type === "native" ? `${type} ${name.slice(0, 60)}` : type === "string" && size > 262_144 ? `string "${name.slice(0, 40).replace(/\s+/g, " ")}…"` : type;
    by.set(kind, (by.get(kind) ?? 0) + size);
  }
  return by;
}

export async function profileWhile(inspectorPort: number, workerName: string, during: () => Promise<void>): Promise<Profiled> {
  const list = (await (await fetch(`http://${HOST}:${inspectorPort}/json`, { signal: AbortSignal.timeout(5_000) })).json()) as {
    id: string;
    title?: string;
    webSocketDebuggerUrl: string;
  }[];
  const target = list.find((t) => t.id === `core:user:${workerName}` || t.webSocketDebuggerUrl.endsWith(`/core:user:${workerName}`));
  if (!target) throw new Error(`no inspector target for worker ${workerName} (have: ${list.map((t) => t.id).join(", ")})`);
  const ws = new WebSocket(target.webSocketDebuggerUrl.replace("localhost", HOST));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("inspector connection timed out")), 5_000);
    ws.addEventListener("open", () => (clearTimeout(timer), resolve()), { once: true });
    ws.addEventListener("error", () => (clearTimeout(timer), reject(new Error("inspector connection failed"))), { once: true });
  });
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  const chunks: string[] = [];
  ws.addEventListener("message", (event) => {
    const msg = JSON.parse(String(event.data)) as { id?: number; method?: string; params?: { chunk?: string }; result?: unknown; error?: { message: string } };
    if (msg.method === "HeapProfiler.addHeapSnapshotChunk") chunks.push(msg.params?.chunk ?? "");
    if (msg.id === undefined) return;
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.error) p.reject(new Error(msg.error.message));
    else p.resolve(msg.result);
  });
  const send = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<unknown>((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`inspector ${method} timed out`));
      }, 30_000);
      pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      ws.send(JSON.stringify({ id, method, params }));
    });
  try {
    await send("Profiler.enable");
    await send("Profiler.setSamplingInterval", { interval: 200 });
    // Allocation volume: objects a GC already collected count too (what drives GC pauses).
    const sampling = await send("HeapProfiler.enable")
      .then(() => send("HeapProfiler.startSampling", { samplingInterval: 16_384, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true }))
      .then(() => true, () => false);
    await send("Profiler.start");
    await during();
    const { profile } = (await send("Profiler.stop")) as { profile: CpuProfile };
    const allocated = sampling ? ((await send("HeapProfiler.stopSampling").catch(() => null)) as { profile: { head: HeapNode } } | null) : null;
    // The isolate's V8 heap right after the load: long GC pauses come with a big old space.
    const heap = (await send("Runtime.getHeapUsage").catch(() => null)) as { usedSize: number; totalSize: number } | null;
    const live = await send("HeapProfiler.takeHeapSnapshot", { reportProgress: false }).then(
      () => [...liveBytes(JSON.parse(chunks.join("")))].sort((a, b) => b[1] - a[1]),
      () => null,
    );
    return {
      ...(live ? { liveBy: live } : {}),
      ...profile,
      ...(heap ? { heap: { usedMb: heap.usedSize / 1048576, totalMb: heap.totalSize / 1048576 } } : {}),
      ...(allocated ? (({ total, by }) => ({ allocatedBytes: total, allocatedBy: [...by].sort((a, b) => b[1] - a[1]) }))(sampledBytes(allocated.profile.head)) : {}),
    };
  } finally {
    ws.close();
  }
}

const label = (f: CallFrame) => {
  const name = f.functionName || "(anonymous)";
  if (!f.url) return name;
  const file = f.url.split("/").pop();
  return `${name} ${file}:${f.lineNumber + 1}`;
};

/** A sample counts for at most this many median sampling intervals (see summarize). */
export const GAP_INTERVALS = 10;

/**
 * Self and inclusive milliseconds per function (recursion counted once per sample). A
 * sample stands for the time until the next one, but at most GAP_INTERVALS median
 * intervals: the profiler sometimes takes no sample for a long stretch (the thread blocked
 * outside JavaScript, the sampler descheduled on a busy machine), and that whole stretch
 * would otherwise be charged to whatever frame the next sample happened to follow (one
 * second once, to a schema check). The rest is `gapMs`, reported apart.
 */
export function summarize(profile: CpuProfile): { costs: FunctionCost[]; totalMs: number; idleMs: number; gapMs: number } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const sorted = profile.timeDeltas.filter((d) => d > 0).sort((x, y) => x - y);
  const capMs = sorted.length > 0 ? (GAP_INTERVALS * sorted[sorted.length >> 1]!) / 1000 : Number.POSITIVE_INFINITY;
  let totalMs = 0;
  let idleMs = 0;
  let gapMs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    let ms = (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
    if (ms > capMs) {
      gapMs += ms - capMs;
      ms = capMs;
    }
    const node = byId.get(profile.samples[i]!);
    if (!node) continue;
    totalMs += ms;
    const leaf = label(node.callFrame);
    if (node.callFrame.functionName === "(idle)") {
      idleMs += ms;
      continue;
    }
    self.set(leaf, (self.get(leaf) ?? 0) + ms);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const l = label(byId.get(id)!.callFrame);
      if (seen.has(l)) continue;
      seen.add(l);
      total.set(l, (total.get(l) ?? 0) + ms);
    }
  }
  const costs = [...total.entries()].map(([name, totalMs]) => ({ name, selfMs: self.get(name) ?? 0, totalMs }));
  return { costs, totalMs, idleMs, gapMs };
}

export function writeProfile(path: string, profile: CpuProfile) {
  writeFileSync(path, JSON.stringify(profile));
}
