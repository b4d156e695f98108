// `npm run bench:commit-lane`: what one Durable Object storage commit costs in local
// workerd, apart from cn2 (issue 14). A tiny Worker forwards each request to a
// SQLite-backed object that either writes one row (so the request ends in a commit, and
// the output gate holds its answer until that commit is durable) or only reads. Closed
// loops at concurrency 1 and 50 spread over 1, 2, 5, 20 and 50 objects measure requests/s
// and workerd's CPU time per request (Linux /proc). Each request writes in its own event,
// so every write is a commit of its own: these rows show the ceiling of commits per
// second, and whether separate objects commit side by side or one after another.
//
//   npm run bench:commit-lane [-- --json --requests 3000 --tmpfs]
//
// Storage is on disk by default (a temp dir), on /dev/shm with --tmpfs.
import { mkdtempSync } from "node:fs";
import { Agent, request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadMiniflare } from "./workerd.ts";
import { descendantCpuMs, HOST, removeDirOnExit } from "./processes.ts";

const { values: args } = parseArgs({
  options: { json: { type: "boolean", default: false }, requests: { type: "string", default: "3000" }, tmpfs: { type: "boolean", default: false } },
});
const REQUESTS = Number(args.requests);

const SCRIPT = `
import { DurableObject } from "cloudflare:workers";
export class Lane extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)");
  }
  async fetch(request) {
    if (new URL(request.url).pathname === "/write") this.ctx.storage.sql.exec("INSERT INTO t (v) VALUES (?)", "x".repeat(100));
    return new Response("ok");
  }
}
export default {
  fetch(request, env) {
    const object = new URL(request.url).searchParams.get("o") ?? "0";
    return env.LANE.get(env.LANE.idFromName(object)).fetch(request);
  },
};`;

const storage = args.tmpfs ? mkdtempSync("/dev/shm/cn2-commit-lane-") : mkdtempSync(join(tmpdir(), "cn2-commit-lane-"));
removeDirOnExit(storage);
const { mod } = await loadMiniflare();
const mf = new mod.Miniflare(mod.convertV4MiniflareOptions({
  host: HOST,
  port: 0,
  workers: [{
    name: "lane", modules: true, script: SCRIPT, compatibilityDate: "2026-11-01",
    durableObjects: { LANE: { className: "Lane", useSQLite: true } },
    unsafeDirectSockets: [{ host: HOST, port: 0 }],
  }],
  resourcePersistencePath: storage,
}));
const base = (await mf.unsafeGetDirectURL("lane")).href.replace(/\/$/, "");
const agent = new Agent({ keepAlive: true, maxSockets: 64 });

function get(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    httpRequest(`${base}${path}`, { agent }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
    }).on("error", reject).end();
  });
}

interface Row { kind: "write" | "read"; concurrency: number; objects: number; rps: number; workerdCpuUs: number | null }

async function run(kind: Row["kind"], concurrency: number, objects: number, round: number): Promise<Row> {
  const path = (loop: number) => `/${kind}?o=r${round}-${loop % objects}`;
  for (let loop = 0; loop < objects; loop++) await get(path(loop)); // create the objects first
  let left = Math.min(200, REQUESTS);
  const loops = () => Promise.all(Array.from({ length: concurrency }, async (_, loop) => {
    while (left-- > 0) await get(path(loop));
  }));
  await loops(); // warm-up
  left = REQUESTS;
  const cpu0 = descendantCpuMs("workerd");
  const t0 = performance.now();
  await loops();
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = descendantCpuMs("workerd");
  return { kind, concurrency, objects, rps: REQUESTS / seconds, workerdCpuUs: cpu0 === null || cpu1 === null ? null : ((cpu1 - cpu0) * 1000) / REQUESTS };
}

const plan: [Row["kind"], number, number][] = [
  ["read", 1, 1], ["write", 1, 1],
  ["read", 50, 50], ["write", 50, 1], ["write", 50, 2], ["write", 50, 5], ["write", 50, 20], ["write", 50, 50],
];
const rows: Row[] = [];
for (const round of [0, 1]) for (const [kind, c, objects] of plan) rows.push(await run(kind, c, objects, round));
await mf.dispose();

const second = rows.slice(plan.length); // the first round warms workerd up; both are printed
if (args.json) {
  for (const r of rows) process.stdout.write(JSON.stringify({ system: "commit-lane", kind: r.kind, concurrency: r.concurrency, objects: r.objects, rps: Math.round(r.rps), workerd_cpu_us_per_request: r.workerdCpuUs === null ? null : Math.round(r.workerdCpuUs) }) + "\n");
} else {
  console.log(`commit lane: local workerd, Durable Object storage ${args.tmpfs ? "on /dev/shm" : "on disk"}, ${REQUESTS} requests per row, two rounds`);
  console.log("kind   conc  objects   req/s (round 1 / 2)   workerd CPU per request (us)");
  for (const [i, r] of rows.slice(0, plan.length).entries()) {
    const s = second[i]!;
    const cpu = (x: number | null) => (x === null ? "n/a" : String(Math.round(x)));
    console.log(`${r.kind.padEnd(6)} ${String(r.concurrency).padStart(4)}  ${String(r.objects).padStart(7)}   ${String(Math.round(r.rps)).padStart(6)} / ${String(Math.round(s.rps)).padEnd(6)}        ${cpu(r.workerdCpuUs)} / ${cpu(s.workerdCpuUs)}`);
  }
}
