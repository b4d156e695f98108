// The layers point one way (README "Layout"): schema/ <- core/ <- objects/ <- worker/, and
// the clients (buyer/, tools/, bench/, dashboard/) use only schema/ and core/. This test
// reads every relative import of the TypeScript sources (static, dynamic, type-only and
// re-exports) and fails on an import that points up a floor, on a client that reaches into
// objects/ or worker/, and on any import circle between folders.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");
const FLOORS = { schema: 0, core: 1, objects: 2, worker: 3 } as const;
/** Which other clients each client may use: buyer/ is a published package and uses none. */
const CLIENTS: Record<string, readonly string[]> = { buyer: [], dashboard: [], tools: ["buyer"], bench: ["buyer", "tools"] };
const TOP = [...Object.keys(FLOORS), ...Object.keys(CLIENTS)];
const SKIP = new Set(["node_modules", "dist", ".data"]);

function sources(dir: string): string[] {
  let out: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    if (SKIP.has(name)) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out = out.concat(sources(path));
    else if (/\.(ts|tsx|mts)$/.test(name) && !name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

const IMPORT = /(?:from\s+|import\s*\(\s*|import\s+)["'](\.{1,2}\/[^"']+)["']/g;

export interface Edge {
  from: string;
  to: string;
}

/** Every relative import between the project's own files, as repo-relative paths. */
export function importEdges(root = ROOT): Edge[] {
  const edges: Edge[] = [];
  for (const top of TOP) {
    for (const file of sources(join(root, top))) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(IMPORT)) {
        edges.push({ from: relative(root, file), to: relative(root, resolve(dirname(file), m[1]!)) });
      }
    }
  }
  return edges;
}

const topOf = (path: string) => path.split("/")[0]!;

/** Why an import breaks the layer rule, or null when it may stand. */
export function layerViolation({ from, to }: Edge): string | null {
  const a = topOf(from);
  const b = topOf(to);
  if (a === b) return null;
  if (a in FLOORS) {
    if (!(b in FLOORS)) return `${a}/ imports the client ${b}/`;
    const up = FLOORS[b as keyof typeof FLOORS] > FLOORS[a as keyof typeof FLOORS];
    return up ? `${a}/ imports the higher floor ${b}/` : null;
  }
  if (b === "schema" || b === "core") return null;
  if (b in FLOORS) return `the client ${a}/ imports ${b}/ (clients use schema/ and core/ only)`;
  return CLIENTS[a]?.includes(b) ? null : `the client ${a}/ imports the client ${b}/`;
}

/** Folder-level import circles (strongly connected components of more than one folder). */
export function folderCycles(edges: Edge[]): string[][] {
  const graph = new Map<string, Set<string>>();
  for (const { from, to } of edges) {
    const a = dirname(from);
    const b = dirname(to);
    if (a === b) continue;
    if (!graph.has(a)) graph.set(a, new Set());
    if (!graph.has(b)) graph.set(b, new Set());
    graph.get(a)!.add(b);
  }
  // Tarjan's algorithm.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) cycles.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return cycles;
}

describe("layers", () => {
  const edges = importEdges();

  it("reads the project's imports", () => {
    // A reader that found nothing would pass every rule below.
    expect(edges.length).toBeGreaterThan(200);
    expect(edges.some((e) => e.from === "worker/index.ts" && e.to === "worker/router.ts")).toBe(true);
  });

  it("no import points up a floor, and clients use only schema/ and core/", () => {
    const bad = edges.flatMap((e) => {
      const why = layerViolation(e);
      return why ? [`${e.from} -> ${e.to}: ${why}`] : [];
    });
    expect(bad).toEqual([]);
  });

  it("no import circle between folders", () => {
    expect(folderCycles(edges)).toEqual([]);
  });

  it("the rules catch what they forbid", () => {
    expect(layerViolation({ from: "objects/pool-index/pool-index.ts", to: "worker/env.ts" })).toMatch(/higher floor/);
    expect(layerViolation({ from: "buyer/keys.ts", to: "worker/payments/did.ts" })).toMatch(/client buyer/);
    expect(layerViolation({ from: "tools/dev.ts", to: "objects/seller-key/stub.ts" })).toMatch(/client tools/);
    expect(layerViolation({ from: "core/http.ts", to: "schema/wire.ts" })).toBeNull();
    expect(folderCycles([{ from: "worker/a/x.ts", to: "worker/b/y.ts" }, { from: "worker/b/y.ts", to: "worker/a/z.ts" }])).toEqual([["worker/a", "worker/b"]]);
  });
});
