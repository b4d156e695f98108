// `npm run bench`: what does cn2's proxy add on top of the upstream call, next to
// Portkey's gateway doing the same job? Same machine, same fake upstream, same request.
//
//   npm run bench                       readable table on stdout, progress on stderr
//   npm run bench -- --json             one JSON object per line per (system, concurrency)
//   npm run bench -- --profile          also time probe Workers that isolate the costs
//                                       (Worker hop, Durable Object hop, SQL, streaming)
//   npm run bench -- --cpu-profile F    also profile the cn2 isolate under load (V8, F.cpuprofile)
//   npm run bench -- --cpu-profile-paid F   the same under paid load (highest --concurrency up to 10, a buyer per connection)
//   npm run bench -- --tmpfs-storage    Durable Object SQLite files on /dev/shm (no disk sync)
//   npm run bench -- --miniflare-outbound  keep Miniflare's outbound helper worker in front of
//                                       every upstream call (a local-only hop; see bench/workerd.ts)
//   options: --duration 6 --rounds 2 --warmup 1.5 --concurrency 1,10,50 --only cn2,portkey
//   cn2-dashboards: cn2 at c=50 with five live seller dashboards (WebSockets to the serving
//   keys' seller room) connected: the cost of the key objects' live pushes
//            --wait-quiet 60 (wait up to 60 s for the shared machine to calm down first)
//   docs/bench.md explains what is measured and how to read it.
//
// Processes (2 cores here, so each gets its own event loop):
//   this process   autocannon (the load generator) and Miniflare's control side
//   child          tools/demo-upstream.ts, the fake OpenAI API every system calls
//   child          tools/database.ts serve --memory: Postgres (PGlite) behind cn2's Hyperdrive
//                  binding, for seller sign-in, key rows and the earnings flush
//   workerd        the cn2 Worker bundle via Miniflare's API (no wrangler dev proxy)
//   child          Portkey's gateway (node start-server.js), pinned to 127.0.0.1
// Everything listens on 127.0.0.1; every run is time-bounded; children die with us.
import { mkdtempSync, readFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { setPriority } from "node:os";
import { upstreamBaseUrls } from "../tools/demo-upstream.ts";
import { connect } from "../tools/database.ts";
import { generateDevSigningKey } from "../core/dev-signing-key.ts";
import { encryptCredential, generateVaultKey } from "../core/vault.ts";
import { newKeyId } from "../core/key-id.ts";
import { GAP_INTERVALS, profileWhile, summarize, writeProfile } from "./cpu-profile.ts";
import { failures, load, merge, type RunStats, type Target } from "./load.ts";
import { HOST, freePort, installCleanup, log, removeDirOnExit, shutdown, spawnNode, waitForPort } from "./processes.ts";
import { fundedBuyers, loadClients, mergePaid, type ClientLoad, type PaidStats } from "./paid.ts";
import { openDashboards } from "./dashboards.ts";
import { PROBE_WORKER, profileTargets } from "./probe.ts";
import { startWorker } from "./workerd.ts";

const ROOT = join(import.meta.dirname, "..");
const REPLY = "Hello from the cn2 demo upstream, a deterministic reply.";
const BODY = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
const KEYS = 3;

const { values: args } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    duration: { type: "string", default: "6" },
    rounds: { type: "string", default: "2" },
    warmup: { type: "string", default: "1.5" },
    concurrency: { type: "string", default: "1,10,50" },
    only: { type: "string" },
    "tmpfs-storage": { type: "boolean", default: false },
    "cpu-profile": { type: "string" },
    "cpu-profile-paid": { type: "string" },
    "wait-quiet": { type: "string", default: "0" },
    var: { type: "string", multiple: true, default: [] },
    "miniflare-outbound": { type: "boolean", default: false },
    "upstream-delay": { type: "string", default: "0" },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  process.stdout.write(
    "npm run bench [-- --json] [--profile] [--duration 6] [--rounds 2] [--warmup 1.5] [--concurrency 1,10,50]\n" +
      "              [--only cn2,probe:do] [--tmpfs-storage] [--cpu-profile /tmp/cn2.cpuprofile] [--cpu-profile-paid F] [--wait-quiet 60]\n" +
      "              [--var NAME=VALUE ...]   (a Worker var over wrangler.toml's, e.g. --var PERSIST_MS=0)\n" +
      "              [--miniflare-outbound]   (upstream calls through Miniflare's outbound helper worker, as in wrangler dev)\n" +
      "              [--upstream-delay MS]    (the demo upstream waits MS before every answer, a provider's time to first byte)\n",
  );
  process.exit(0);
}
const DURATION = boundedNumber(args.duration, 1, 60, "--duration");
const WARMUP = boundedNumber(args.warmup, 0, 30, "--warmup");
const WAIT_QUIET = boundedNumber(args["wait-quiet"], 0, 600, "--wait-quiet");
/** `--upstream-delay MS`: every system's upstream answers after MS (tools/demo-upstream.ts --delay-ms). */
const UPSTREAM_DELAY = boundedNumber(args["upstream-delay"], 0, 10_000, "--upstream-delay");
const ROUNDS = Math.round(boundedNumber(args.rounds, 1, 10, "--rounds"));
/** `--var NAME=VALUE`: override a wrangler.toml var for an experiment (printed in the header). */
const VAR_OVERRIDES = Object.fromEntries(
  args.var.map((pair) => {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(pair);
    if (!m) throw new Error(`--var takes NAME=VALUE, got "${pair}"`);
    return [m[1]!, m[2]!];
  }),
);
const CONCURRENCY = args.concurrency.split(",").map((c) => boundedNumber(c, 1, 1000, "--concurrency"));

function boundedNumber(raw: string, min: number, max: number, name: string): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${name} must be a number in [${min}, ${max}]`);
  return n;
}

const ONLY = args.only ? new Set(["direct", ...args.only.split(",")]) : null;
const wanted = (system: string) => ONLY === null || ONLY.has(system);
/** Live seller dashboards connected during the cn2-dashboards run, and its concurrency (issue 11). */
const DASHBOARDS = 5;
const DASHBOARD_CONCURRENCY = 50;

const randomHex = (bytes: number) => Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
const verify = (body: string) => body.includes(REPLY);

interface Row {
  system: string;
  concurrency: number;
  /** No upstream call behind it (health checks): no "added" figure. */
  local: boolean;
  stats: RunStats;
}

/** The paid path at one concurrency, beside the unpaid cn2 figures at the same one. */
interface PaidRow {
  /** cn2-paid, or cn2-clients: the same client processes unpaid. */
  system: string;
  stats: PaidStats;
  /** The autocannon cn2 row at the same concurrency. */
  unpaid: RunStats | undefined;
}
/** Pool size of the cn2-10k-keys row (issue 14). */
const MARKET_KEYS = 10_000;
interface MarketRow { small: RunStats; large: RunStats; warm: number; snapshotBytes: number; parseMs: number; snapshotRpcMs: number; seedSeconds: number }
/** Buyers in the many-buyers paid rows (issue 14). */
const PAID_BUYERS = 50;

async function main() {
  installCleanup();
  if (WAIT_QUIET > 0) await waitQuiet(WAIT_QUIET);
  const loadBefore = loadavg()[0]!;
  const pressureBefore = cpuPressure();
  const machine = `${cpus().length} CPU(s), Node ${process.version}`;
  log(`${machine}, load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}, CPU pressure ${pressureBefore ?? "n/a"}%`);
  const busy = pressureBefore !== null ? pressureBefore > 20 : loadBefore > cpus().length / 2;
  if (busy) log(`!! the machine is already busy (CPU pressure ${pressureBefore ?? "n/a"}%, 1-min load ${loadBefore.toFixed(2)} on ${cpus().length} CPUs): expect noisy figures`);

  // 1. The fake upstream, its own process.
  const upstream = spawnNode("demo upstream", [join(ROOT, "tools/demo-upstream.ts"), "--port", "0", "--host", HOST, "--delay-ms", String(UPSTREAM_DELAY)]);
  const upstreamUrl = (await upstream.waitForLine(/listening on (http:\/\/\S+)/, 15_000))[1]!;
  const bases = upstreamBaseUrls(upstreamUrl);
  log(`demo upstream at ${upstreamUrl} (pid ${upstream.proc.pid})${UPSTREAM_DELAY > 0 ? `, answering after ${UPSTREAM_DELAY} ms` : ""}`);

  // 2. Postgres for the Worker (PGlite, migrated, in memory), its own process.
  const db = spawnNode("database", [join(ROOT, "tools/database.ts"), "serve", "--memory", "--port", "0"]);
  const databaseUrl = (await db.waitForLine(/serving on (postgres:\/\/\S+)/, 60_000))[1]!;
  // It stands for a remote Supabase: it runs at the lowest CPU priority, so its work (the
  // earnings flush's inserts) uses idle CPU rather than the cores the systems measured
  // share; cn2's own side of the flush still runs in workerd and is measured.
  if (db.proc.pid) setPriority(db.proc.pid, 19);
  log(`database at ${databaseUrl.replace(/\/\/[^@]*@/, "//")} (pid ${db.proc.pid}, nice 19)`);

  // 3. cn2 in workerd, seeded with three keys by a seller signed in through the dev sign-in.
  const opsToken = randomHex(24);
  const proxyToken = randomHex(24);
  const vault = await generateVaultKey("bench-1");
  const devKey = await generateDevSigningKey("bench");
  const inspectorPort = args["cpu-profile"] || args["cpu-profile-paid"] ? await freePort() : undefined;
  const worker = await startWorker({
    directOutbound: !args["miniflare-outbound"],
    inspectorPort,
    databaseUrl,
    bindings: {
      // Development, opted into (core/environment.ts): the demo upstream, the faucet, the dev sign-in.
      CN2_DEV: "1",
      OPS_TOKEN: opsToken,
      PROXY_TOKEN: proxyToken,
      VAULT_PRIVATE_KEYS: JSON.stringify([vault.privateKey]),
      UPSTREAM_BASE_URLS: JSON.stringify(bases),
      // POOL_CACHE_MS and POOL_DEBOUNCE_MS keep wrangler.toml's values (production's):
      // health publishes under load then cost what they would deployed.
      UPSTREAM_TIMEOUT_MS: "10000",
      // The paid path (bench/paid.ts): challenges keyed by a throwaway secret, credit from the dev faucet.
      MPP_SECRET_KEY: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"),
      DEV_FAUCET: "1",
      // Seller accounts: the dev sign-in with a throwaway key.
      AUTH_DEV_SIGNING_KEY: JSON.stringify(devKey.privateJwk),
      AUTH_JWKS: JSON.stringify(devKey.jwks),
      ...VAR_OVERRIDES,
    },
    storageDir: args["tmpfs-storage"] ? tmpfsDir() : undefined,
    extra: args.profile ? [PROBE_WORKER(bases.openai, `sk-demo-bench-probe-${randomHex(4)}`)] : [],
  });
  log(`cn2 in workerd at ${worker.url} (Miniflare ${worker.miniflareVersion}, direct socket, ${args["miniflare-outbound"] ? "outbound helper worker kept" : "direct outbound"})`);
  const { ids: keyIds, seller } = await seedKeys(worker.url, opsToken, vault.publicKey);
  log(`seeded ${keyIds.length} openai keys: ${keyIds.join(", ")}`);

  // 4. Portkey's gateway, its own process, loopback only.
  const portkeyPort = await freePort();
  if (wanted("portkey")) {
    const portkey = spawnNode(
      "portkey gateway",
      ["--import", join(ROOT, "bench/loopback.ts"), join(ROOT, "node_modules/@portkey-ai/gateway/build/start-server.js"), `--port=${portkeyPort}`, "--headless"],
      { NODE_ENV: "production" },
    );
    await waitForPort(portkeyPort, 20_000, portkey);
    log(`portkey gateway at http://${HOST}:${portkeyPort} (pid ${portkey.proc.pid})`);
  }

  const systems: Record<string, Target> = {
    direct: {
      url: `${bases.openai}/v1/chat/completions`,
      headers: { "content-type": "application/json", authorization: `Bearer sk-demo-bench-direct-${randomHex(4)}` },
      body: BODY,
      verify,
    },
    cn2: {
      url: `${worker.url}/openai/v1/chat/completions`,
      headers: { "content-type": "application/json", "cn2-proxy-token": proxyToken },
      body: BODY,
      verify,
    },
    portkey: {
      url: `http://${HOST}:${portkeyPort}/v1/chat/completions`,
      headers: {
        "content-type": "application/json",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": `${bases.openai}/v1`,
        authorization: `Bearer sk-demo-bench-portkey-${randomHex(4)}`,
      },
      body: BODY,
      verify,
    },
  };
  // cn2 again, with DASHBOARDS live dashboards connected to the keys' seller (issue 11).
  systems["cn2-dashboards"] = { ...systems.cn2! };
  if (args.profile && worker.extra.probe) Object.assign(systems, profileTargets(worker.extra.probe, worker.url, BODY, verify));

  for (const name of Object.keys(systems)) if (!wanted(name)) delete systems[name];

  // 5. One request each before any timing: a broken setup fails here, clearly. cn2 first
  // waits for its pool snapshot to reach KV (written after POOL_DEBOUNCE_MS).
  if (systems.cn2) await waitForPool(systems.cn2);
  for (const [name, target] of Object.entries(systems)) await smoke(name, target);
  log(`smoke requests answered correctly by: ${Object.keys(systems).join(", ")}`);

  // 6. The runs. Per concurrency, every system warms up, then the systems take turns in
  // ROUNDS rounds of DURATION/ROUNDS seconds each, so a burst of load from elsewhere on a
  // shared machine lands on all of them rather than on one.
  const rows: Row[] = [];
  // waitForPool's first 200 and the smoke request (and cn2-dashboards' smoke request).
  let cn2Answered = systems["cn2-dashboards"] ? 3 : 2;
  let cn2Runs = 0;
  const counted = (system: string, r: RunStats) => {
    if (system !== "cn2" && system !== "cn2-dashboards") return;
    cn2Answered += r.ok;
    cn2Runs++;
  };
  const warmupFailures: string[] = [];
  const names = Object.keys(systems);
  const slice = DURATION / ROUNDS;
  const estimate = CONCURRENCY.length * names.length * (WARMUP + DURATION + 0.2 * (ROUNDS + 1));
  log(`${CONCURRENCY.length * names.length} measurements (${WARMUP} s warm-up, ${ROUNDS} x ${slice} s): about ${Math.ceil(estimate / 10) * 10} s`);
  let dashboardMessages = 0;
  /** A run of `system`; cn2-dashboards runs with the dashboards connected, and only at DASHBOARD_CONCURRENCY. */
  const run = async (system: string, target: Target, concurrency: number, seconds: number) => {
    if (system !== "cn2-dashboards") return load(target, concurrency, seconds);
    const dashboards = await openDashboards(worker.url, seller, DASHBOARDS);
    try {
      return await load(target, concurrency, seconds);
    } finally {
      dashboardMessages += dashboards.messages();
      await dashboards.close();
    }
  };
  for (const concurrency of CONCURRENCY) {
    const here = Object.fromEntries(Object.entries(systems).filter(([system]) => system !== "cn2-dashboards" || concurrency === DASHBOARD_CONCURRENCY));
    const rounds = new Map<string, RunStats[]>(Object.keys(here).map((n) => [n, []]));
    for (const [system, target] of Object.entries(here)) {
      if (WARMUP === 0) continue;
      const w = await run(system, target, concurrency, WARMUP);
      counted(system, w);
      if (failures(w) > 0) {
        warmupFailures.push(`warm-up of ${system} at c=${concurrency}: ${describeFailures(w)}`);
        log(`!! ${warmupFailures.at(-1)}`);
      }
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const [system, target] of Object.entries(here)) {
        const r = await run(system, target, concurrency, slice);
        counted(system, r);
        rounds.get(system)!.push(r);
      }
    }
    for (const [system, target] of Object.entries(here)) {
      const stats = merge(rounds.get(system)!);
      rows.push({ system, concurrency, local: target.local === true, stats });
      log(`${system.padEnd(14)} c=${String(concurrency).padEnd(3)} p50 ${fmt(stats.p50)} ms  p99 ${fmt(stats.p99)} ms  ${Math.round(stats.rps)} req/s${failures(stats) ? `  FAILURES: ${describeFailures(stats)}` : ""}`);
    }
  }

  if (inspectorPort && args["cpu-profile"] && systems.cn2) {
    const concurrency = Math.max(...CONCURRENCY);
    const target = systems.cn2;
    cn2Answered += await cpuProfile(inspectorPort, args["cpu-profile"], `unpaid, c=${concurrency}`, async () => (await load(target, concurrency, DURATION)).ok);
    cn2Runs++;
  }

  // 6b. Routing as the market grows (issue 14): the 3-key pool, then the same pool with
  // MARKET_KEYS members, at the highest concurrency, back to back. Before the paid rows:
  // what paid traffic leaves behind (tabs closing, keys reporting draws 30 s later,
  // REPORT_AFTER_MS) would land in these unpaid runs, the 10,000-key ones most.
  let market: MarketRow | null = null;
  if (systems.cn2 && wanted("cn2-10k-keys")) {
    market = await marketRun(worker, systems.cn2, Math.max(...CONCURRENCY));
    cn2Answered += market.small.ok + market.large.ok + market.warm;
    cn2Runs += 3 * (1 + ROUNDS); // a warm-up and ROUNDS rounds, with 3 keys, 10,000, then 3 again
  }

  // 6c. The paid path as buyers meet it (bench/paid.ts): paying clients in child processes,
  // one buyer and PAID_BUYERS buyers, beside the same clients unpaid (proxy token) and the
  // autocannon rows above, per concurrency. Rows take turns like the systems above.
  const paidRows: PaidRow[] = [];
  if (systems.cn2 && wanted("cn2-paid")) {
    const buyers = await fundedBuyers(worker.url, PAID_BUYERS, 100_000_000);
    const base = { baseUrl: worker.url, path: "/openai/v1/chat/completions", body: BODY, reply: REPLY };
    for (const concurrency of CONCURRENCY) {
      const kinds: [string, ClientLoad][] = [
        ["cn2-clients", { ...base, concurrency, buyers: [], proxyToken, warmup: WARMUP, seconds: 0 }],
        ["cn2-paid", { ...base, concurrency, buyers: buyers.slice(0, 1), warmup: WARMUP, seconds: 0 }],
        ...(concurrency > 1 ? [["cn2-paid", { ...base, concurrency, buyers, warmup: WARMUP, seconds: 0 }] as [string, ClientLoad]] : []),
      ];
      const runs = kinds.map(() => [] as PaidStats[]);
      for (let round = 0; round < ROUNDS; round++) {
        for (const [i, [, load]] of kinds.entries()) {
          runs[i]!.push(await loadClients({ ...load, warmup: round === 0 ? WARMUP : 0.2, seconds: DURATION / ROUNDS }));
        }
      }
      const unpaid = rows.find((r) => r.system === "cn2" && r.concurrency === concurrency)?.stats;
      for (const [i, [system]] of kinds.entries()) {
        const stats = mergePaid(runs[i]!);
        // Paid and unpaid answers are served by the same keys: they belong in the books check below.
        cn2Answered += runs[i]!.reduce((n, r) => n + r.served, 0);
        cn2Runs += 2 * ROUNDS;
        paidRows.push({ system, stats, unpaid });
        log(`${system.padEnd(14)} c=${String(concurrency).padEnd(3)} buyers ${String(stats.buyers).padEnd(3)} p50 ${fmt(stats.p50)} ms  p99 ${fmt(stats.p99)} ms  ${Math.round(stats.rps)} req/s  CPU/request: workerd ${cpuUs(stats.workerdCpuUs)}, clients ${cpuUs(stats.clientCpuUs)}${stats.failures ? `  FAILURES: ${stats.failures} ${stats.samples.join(" | ")}` : ""}`);
      }
    }
  }

  if (inspectorPort && args["cpu-profile-paid"] && systems.cn2) {
    // The paid path at the highest --concurrency (at most 10), one buyer per connection:
    // where the isolate's time goes per paid request.
    const concurrency = Math.min(10, Math.max(...CONCURRENCY));
    const buyers = await fundedBuyers(worker.url, concurrency, 100_000_000);
    const load = { baseUrl: worker.url, path: "/openai/v1/chat/completions", body: BODY, reply: REPLY, concurrency, buyers, warmup: 0.5, seconds: DURATION };
    cn2Answered += await cpuProfile(inspectorPort, args["cpu-profile-paid"], `paid, c=${concurrency}, ${concurrency} buyer(s)`, async () => (await loadClients(load)).served);
    cn2Runs += 2;
  }

  // 7. Cross-check with cn2's own books: every good answer was served by a key (runs cut
  // in-flight requests at their end, so the keys may have served up to c more per run).
  const served = await servedCount(worker.url, opsToken, keyIds, databaseUrl, cn2Answered);
  const slack = cn2Runs * Math.max(...CONCURRENCY);
  const booksOk = !systems.cn2 || (served.total >= cn2Answered && served.total - cn2Answered <= slack);
  if (systems.cn2) {
    log(`cn2 keys report ${served.total} served (${served.perKey.join(" + ")}), the load generator counted ${cn2Answered} good answers${booksOk ? "" : "  <-- MISMATCH"}`);
    for (const line of served.details) log(`  ${line}`);
  }

  const withDashboards = rows.find((r) => r.system === "cn2-dashboards");
  const plain = rows.find((r) => r.system === "cn2" && r.concurrency === DASHBOARD_CONCURRENCY);
  if (withDashboards && plain) {
    log(`cn2 with ${DASHBOARDS} live dashboards at c=${DASHBOARD_CONCURRENCY}: ${(withDashboards.stats.rps / plain.stats.rps).toFixed(3)}x the requests/s without (target >= 0.95); the dashboards received ${dashboardMessages} messages`);
    if (dashboardMessages === 0) log("!! the dashboards received no message: they were not live");
  }
  if (market) {
    const { small, large, snapshotBytes, parseMs, snapshotRpcMs, seedSeconds } = market;
    log(`routing with ${MARKET_KEYS.toLocaleString("en")} keys in the pool: ${Math.round(large.rps)} req/s against ${Math.round(small.rps)} with ${KEYS} (${(large.rps / small.rps).toFixed(3)}x, target >= 0.95), ` +
      `p50 ${fmt(large.p50)} vs ${fmt(small.p50)} ms, p99 ${fmt(large.p99)} vs ${fmt(small.p99)} ms; snapshot ${(snapshotBytes / 1e6).toFixed(2)} MB in KV, ` +
      `${fmt(parseMs)} ms to parse (Node, the router's refresh every POOL_CACHE_MS), ${fmt(snapshotRpcMs)} ms to get it from the pool object (built, then sent over RPC to the bench); seeded in ${seedSeconds.toFixed(1)} s; the 3-key runs are before and after the 10,000-key ones`);
  }
  if (args.json) {
    printJson(rows, { dashboards: DASHBOARDS, dashboardMessages });
    if (market) {
      for (const [system, st] of [["cn2-3-keys", market.small], ["cn2-10k-keys", market.large]] as const) {
        process.stdout.write(JSON.stringify({
          system, concurrency: st.concurrency, keys: system === "cn2-10k-keys" ? MARKET_KEYS : KEYS, p50_ms: round(st.p50), p99_ms: round(st.p99), rps: Math.round(st.rps),
          ...(system === "cn2-10k-keys" ? { rps_vs_3_keys: round(market.large.rps / market.small.rps), snapshot_bytes: market.snapshotBytes, snapshot_parse_ms: round(market.parseMs), snapshot_build_ms: round(market.snapshotRpcMs) } : {}),
          failures: failures(st),
        }) + "\n");
      }
    }
    for (const { system, stats, unpaid } of paidRows) {
      const clients = paidRows.find((r) => r.system === "cn2-clients" && r.stats.concurrency === stats.concurrency)?.stats;
      process.stdout.write(JSON.stringify({
        system, concurrency: stats.concurrency, buyers: stats.buyers, p50_ms: round(stats.p50), p99_ms: round(stats.p99), rps: Math.round(stats.rps),
        ...(system === "cn2-paid" ? {
          sent_with_pass: stats.sent.pass, sent_signed: stats.sent.signed, sent_unpaid: stats.sent.unpaid,
          rps_vs_unpaid: unpaid ? round(stats.rps / unpaid.rps) : null,
          rps_vs_unpaid_clients: clients ? round(stats.rps / clients.rps) : null,
          added_vs_unpaid_p50_ms: unpaid ? round(stats.p50 - unpaid.p50) : null,
          added_vs_unpaid_clients_p50_ms: clients ? round(stats.p50 - clients.p50) : null,
        } : {}),
        workerd_cpu_us_per_request: stats.workerdCpuUs === null ? null : Math.round(stats.workerdCpuUs),
        client_cpu_us_per_request: stats.clientCpuUs === null ? null : Math.round(stats.clientCpuUs),
        failures: stats.failures,
      }) + "\n");
    }
  }
  const conditions = `1-min load average ${loadBefore.toFixed(2)} before, ${loadavg()[0]!.toFixed(2)} after; CPU pressure (some, avg10) ${pressureBefore ?? "n/a"}% before, ${cpuPressure() ?? "n/a"}% after`;
  if (args.json) process.stderr.write(`[bench] ${conditions}\n`);
  else {
    printTable(rows, { machine: `${machine}; ${conditions}`, miniflare: worker.miniflareVersion });
    if (paidRows.length > 0) {
      const lines = ["", "paid path (paying clients in child processes: credential, verification, wallet debit) vs unpaid, same run:",
        "  'clients' = the same client processes unpaid (proxy token); 'autocannon' = the cn2 row above"];
      for (const { system, stats, unpaid } of paidRows) {
        if (system !== "cn2-paid") continue;
        const clients = paidRows.find((r) => r.system === "cn2-clients" && r.stats.concurrency === stats.concurrency)?.stats;
        const vs = (other: { p50: number; rps: number } | undefined, name: string) =>
          other ? `${(stats.rps / other.rps).toFixed(2)}x ${name} req/s, p50 ${stats.p50 - other.p50 >= 0 ? "+" : ""}${fmt(stats.p50 - other.p50)} ms` : "";
        lines.push(`  c=${String(stats.concurrency).padEnd(3)} buyers ${String(stats.buyers).padEnd(3)} p50 ${fmt(stats.p50)} ms  p99 ${fmt(stats.p99)} ms  ${Math.round(stats.rps)} req/s  ` +
          `(${vs(clients, "clients")}; ${vs(unpaid, "autocannon")})  failures ${stats.failures}`);
        lines.push(`         CPU per request: workerd ${cpuUs(stats.workerdCpuUs)} (unpaid clients: ${cpuUs(clients?.workerdCpuUs ?? null)}), ` +
          `paying clients ${cpuUs(stats.clientCpuUs)} (unpaid: ${cpuUs(clients?.clientCpuUs ?? null)})`);
        lines.push(`         requests sent: ${stats.sent.pass} with a pass, ${stats.sent.signed} signed, ${stats.sent.unpaid} without payment (answered 402)`);
      }
      process.stdout.write(lines.join("\n") + "\n");
    }
  }

  const failed = rows.filter((r) => failures(r.stats) > 0);
  const paidFailed = paidRows.filter((r) => r.stats.failures > 0);
  if (failed.length > 0 || paidFailed.length > 0 || warmupFailures.length > 0 || !booksOk) {
    const lines = [
      "",
      "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
      "!!! THIS RUN HAD ERRORS: the figures above are not trustworthy",
      ...failed.map((r) => `!!! ${r.system} c=${r.concurrency}: ${describeFailures(r.stats)}\n${r.stats.samples.map((s) => `!!!     ${s}`).join("\n")}`),
      ...warmupFailures.map((w) => `!!! ${w}`),
      ...paidFailed.map((r) => `!!! ${r.system} c=${r.stats.concurrency} buyers ${r.stats.buyers}: ${r.stats.failures} failed: ${r.stats.samples.join(" | ")}`),
      ...(booksOk ? [] : [`!!! cn2 served ${served.total} requests but the load generator counted ${cn2Answered} good answers`]),
      "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
    ];
    process.stderr.write(lines.join("\n") + "\n");
    process.exitCode = 1;
  }
}

/** A CPU time per request, in microseconds, for the paid rows' lines. */
const cpuUs = (us: number | null) => (us === null ? "n/a" : `${Math.round(us)} us`);

/** Linux PSI: share of the last 10 s in which some runnable task waited for a CPU. */
function cpuPressure(): number | null {
  try {
    const m = /some avg10=([\d.]+)/.exec(readFileSync("/proc/pressure/cpu", "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** On a shared machine: wait (bounded) until other work leaves the CPUs mostly idle. */
async function waitQuiet(maxSeconds: number) {
  const deadline = Date.now() + maxSeconds * 1000;
  for (;;) {
    const p = cpuPressure();
    if (p === null || p < 20) return;
    if (Date.now() > deadline) return log(`!! still busy after ${maxSeconds} s (CPU pressure ${p}%): running anyway`);
    await new Promise((r) => setTimeout(r, 2_000));
  }
}

/** Storage on tmpfs: SQLite commits then cost no disk sync (to tell sync cost from CPU). */
function tmpfsDir(): string {
  const dir = mkdtempSync("/dev/shm/cn2-bench-");
  removeDirOnExit(dir);
  return dir;
}

/** One more cn2 run at the highest concurrency, with workerd's CPU profiler on. */
async function cpuProfile(port: number, path: string, label: string, run: () => Promise<number>): Promise<number> {
  let served = 0;
  const profile = await profileWhile(port, "cn2", async () => {
    served = await run();
  });
  writeProfile(path, profile);
  const { costs, totalMs, idleMs, gapMs } = summarize(profile);
  const busy = totalMs - idleMs;
  const perReq = served > 0 ? (busy * 1000) / served : NaN;
  const lines = [
    `CPU profile of the cn2 isolate (router + Durable Objects), ${label}, ${served} requests: ` +
      `${busy.toFixed(0)} ms busy of ${totalMs.toFixed(0)} ms sampled, ${perReq.toFixed(0)} us of JS-thread time per request` +
      (gapMs >= 1 ? ` (${gapMs.toFixed(0)} ms without samples left out: longer than ${GAP_INTERVALS} sampling intervals)` : "") +
      `. Written to ${path}` +
      (profile.heap ? `; V8 heap after the run: ${profile.heap.usedMb.toFixed(1)} MB used of ${profile.heap.totalMb.toFixed(1)} MB` : "") +
      (profile.allocatedBytes !== undefined && served > 0 ? `; allocated about ${(profile.allocatedBytes / served / 1024).toFixed(1)} KB per request (V8 sampling heap profiler, garbage included)` : ""),
    "  by inclusive time (us per request, self in brackets):",
    ...costs
      .filter((c) => !c.name.startsWith("(root)"))
      .sort((a, b) => b.totalMs - a.totalMs)
      .slice(0, 30)
      .map((c) => `    ${((c.totalMs * 1000) / served).toFixed(1).padStart(7)}  [${((c.selfMs * 1000) / served).toFixed(1).padStart(6)}]  ${c.name}`),
    "  by self time:",
    ...costs
      .sort((a, b) => b.selfMs - a.selfMs)
      .slice(0, 20)
      .map((c) => `    ${((c.selfMs * 1000) / served).toFixed(1).padStart(7)}  ${c.name}`),
    ...(profile.allocatedBy && served > 0
      ? ["  allocated by (bytes per request):", ...profile.allocatedBy.slice(0, 15).map(([name, bytes]) => `    ${(bytes / served).toFixed(0).padStart(7)}  ${name}`)]
      : []),
    ...(profile.liveBy
      ? [
          `  live after the run (heap snapshot, after a full GC: what each full GC marks), ${(profile.liveBy.reduce((n, [, b]) => n + b, 0) / 1048576).toFixed(1)} MB, by kind (KB):`,
          ...profile.liveBy.slice(0, 20).map(([kind, bytes]) => `    ${(bytes / 1024).toFixed(0).padStart(7)}  ${kind}`),
        ]
      : []),
  ];
  process.stderr.write(lines.join("\n") + "\n");
  return served;
}

/**
 * The routing row: the seeded keys' pool at `concurrency`, then MARKET_KEYS - KEYS more
 * members written straight into the pool object (PoolIndex.upsert, what a key object
 * calls), then the same run again. The added members are healthy and in the same pool
 * but priced above the seeded keys, and both runs cap the price at the seeded keys'
 * (`cn2-max-price`), so every request still goes to a key that exists: the pool's size
 * is in every step (the snapshot in KV, its refresh in the router, the candidates'
 * preparation), the upstream calls are the same.
 */
async function marketRun(worker: Awaited<ReturnType<typeof startWorker>>, cn2: Target, concurrency: number): Promise<MarketRow> {
  const capped = { ...cn2, headers: { ...cn2.headers, "cn2-max-price": "1000" } };
  const slice = DURATION / ROUNDS;
  let warm = (await load(capped, concurrency, WARMUP)).ok;
  const smallRuns: RunStats[] = [];
  for (let r = 0; r < ROUNDS; r++) smallRuns.push(await load(capped, concurrency, slice));
  const name = "openai:us:standard";
  const ns = await worker.durableObjectNamespace("POOL_INDEX");
  const pool = ns.get(ns.idFromName(name)) as unknown as { upsert(name: string, m: unknown): Promise<void>; remove(name: string, keyId: string): Promise<void>; snapshotJson(name: string): Promise<string> };
  const marketKeyId = (n: number) => `k_market${String(n).padStart(8, "0")}`;
  const started = performance.now();
  const extra = MARKET_KEYS - KEYS;
  for (let i = 0; i < extra; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, extra - i) }, (_, j) => pool.upsert(name, {
      keyId: marketKeyId(i + j), home: "default", region: "us", tier: "standard",
      priceMicros: 2000, routePrices: [], health: 0.9 + ((i + j) % 10) / 100, state: "healthy", coolingUntil: 0, latencyMs: 50 + ((i + j) % 200),
    })));
  }
  const seedSeconds = (performance.now() - started) / 1000;
  const t = performance.now();
  // What the pool object does on each debounced change: build the snapshot KV stores.
  const text = await pool.snapshotJson(name);
  const snapshotRpcMs = performance.now() - t;
  const p0 = performance.now();
  const snap = JSON.parse(text) as { members: unknown[] };
  const parseMs = performance.now() - p0;
  if (snap.members.length !== MARKET_KEYS) throw new Error(`the pool has ${snap.members.length} members, expected ${MARKET_KEYS}`);
  // The router must see each snapshot before a measured run: the pool object writes it to
  // KV (debounced), each router isolate re-reads KV after POOL_CACHE_MS.
  const kv = await worker.kvNamespace("POOLS");
  const published = async (members: number) => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const stored = await kv.get<{ members: unknown[] }>(`pool:${name}`, "json");
      if (stored?.members.length === members) break;
      if (Date.now() > deadline) throw new Error(`the ${members}-member snapshot did not reach KV within 60 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await new Promise((r) => setTimeout(r, Number(worker.vars.POOL_CACHE_MS ?? 3000) + 500));
  };
  await published(MARKET_KEYS);
  warm += (await load(capped, concurrency, WARMUP)).ok;
  const largeRuns: RunStats[] = [];
  for (let r = 0; r < ROUNDS; r++) largeRuns.push(await load(capped, concurrency, slice));
  // Back to 3 keys and the same again: the 10,000-key runs are compared with the 3-key runs
  // before and after them, so drift over the bench (tables growing, a flush) cancels out.
  for (let i = 0; i < extra; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, extra - i) }, (_, j) => pool.remove(name, marketKeyId(i + j))));
  }
  await published(KEYS);
  warm += (await load(capped, concurrency, WARMUP)).ok;
  for (let r = 0; r < ROUNDS; r++) smallRuns.push(await load(capped, concurrency, slice));
  return { small: merge(smallRuns), large: merge(largeRuns), warm, snapshotBytes: text.length, parseMs, snapshotRpcMs, seedSeconds };
}

/** A seller (dev sign-in) lists KEYS openai keys through the seller API, as the CLI would. */
async function seedKeys(base: string, opsToken: string, publicKey: { kid: string; jwk: JsonWebKey }): Promise<{ ids: string[]; seller: { id: string; token: string } }> {
  const signIn = await fetch(`${base}/auth/dev/sign-in`, {
    method: "POST",
    headers: { "content-type": "application/json", "cn2-csrf": "1" },
    body: JSON.stringify({ email: `bench-${randomHex(6)}@example.test` }),
    signal: AbortSignal.timeout(20_000),
  });
  if (signIn.status !== 200) throw new Error(`dev sign-in: ${signIn.status} ${await signIn.text()}`);
  const { token, seller } = (await signIn.json()) as { token: string; seller: { id: string } };
  const sellerId = seller.id;
  const ids: string[] = [];
  for (let i = 0; i < KEYS; i++) {
    const keyId = await newKeyId(sellerId); // derived for this seller (core/key-id.ts)
    const envelope = await encryptCredential(`sk-demo-bench-${i}-${randomHex(8)}`, publicKey, { sellerId, keyId });
    const config = { provider: "openai", priceMicros: 1000, requestsPerMinute: 100_000, maxConcurrent: 10_000, region: "us", tier: "standard" };
    const res = await fetch(`${base}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ keyId, sellerId, envelope, config }),
      signal: AbortSignal.timeout(20_000),
    });
    if (res.status !== 201) throw new Error(`seeding key ${keyId}: ${res.status} ${await res.text()}`);
    ids.push(keyId);
  }
  const pool = await fetch(`${base}/ops/pools/openai/us/standard`, { headers: { authorization: `Bearer ${opsToken}` }, signal: AbortSignal.timeout(10_000) });
  const members = ((await pool.json()) as { pool?: { members?: unknown[] } }).pool?.members?.length ?? 0;
  if (members !== KEYS) throw new Error(`pool openai/us/standard lists ${members} keys after seeding, expected ${KEYS}`);
  return { ids, seller: { id: sellerId, token } };
}

/** Seeding publishes the pool after POOL_DEBOUNCE_MS; a router that looked too early caches "empty" for POOL_CACHE_MS. */
async function waitForPool(cn2: Target) {
  const deadline = Date.now() + 15_000;
  await new Promise((r) => setTimeout(r, 800));
  for (;;) {
    const res = await fetch(cn2.url, { method: "POST", headers: cn2.headers, body: cn2.body, signal: AbortSignal.timeout(10_000) });
    const text = await res.text();
    if (res.status === 200) return;
    if (Date.now() > deadline || !text.includes("no_key_available")) throw new Error(`cn2 does not serve after seeding: ${res.status} ${text.slice(0, 300)}`);
    await new Promise((r) => setTimeout(r, 1_000));
  }
}

async function smoke(name: string, target: Target) {
  const method = target.method ?? "POST";
  const res = await fetch(target.url, { method, headers: target.headers, body: method === "GET" ? undefined : target.body, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  if (res.status !== 200 || !target.verify(text)) throw new Error(`smoke request to ${name} (${target.url}) answered ${res.status}: ${text.slice(0, 500)}`);
}

/**
 * What the keys say they served: one request_meta row per served request, in the key
 * object until its earnings flush (EARNINGS_FLUSH_MS) moves it to Postgres request_log.
 * A flush in progress holds rows in neither for a moment, so this is read again (bounded)
 * until it reaches `expected`.
 */
async function servedCount(base: string, opsToken: string, keyIds: string[], databaseUrl: string, expected: number) {
  const sql = connect(databaseUrl, { max: 1 });
  try {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const perKey: number[] = [];
      const details: string[] = [];
      const flushedRows = await sql<{ key_id: string; n: string }[]>`
        select key_id, count(*) as n from public.request_log
        where key_id = any(${keyIds}) and status between 200 and 299 group by key_id`;
      const flushed = new Map(flushedRows.map((r) => [r.key_id, Number(r.n)]));
      for (const id of keyIds) {
        const res = await fetch(`${base}/ops/keys/${id}`, { headers: { authorization: `Bearer ${opsToken}` }, signal: AbortSignal.timeout(10_000) });
        const k = ((await res.json()) as {
          key?: { limiter?: { windowCount?: number }; bufferedMetadata?: number; health?: { state?: string; latencyMs?: number } };
        }).key;
        const buffered = k?.bufferedMetadata ?? 0;
        const inDb = flushed.get(id) ?? 0;
        perKey.push(buffered + inDb);
        details.push(
          `${id}: ${inDb} requests flushed to Postgres + ${buffered} buffered in the object; limiter window ${k?.limiter?.windowCount} rows; health ${k?.health?.state} (${k?.health?.latencyMs} ms EWMA)`,
        );
      }
      const total = perKey.reduce((a, b) => a + b, 0);
      if (total >= expected || Date.now() > deadline) return { total, perKey, details };
      await new Promise((r) => setTimeout(r, 1_000));
    }
  } finally {
    await sql.end({ timeout: 2 });
  }
}

// ---- output ----------------------------------------------------------------------------

const fmt = (ms: number) => (Number.isFinite(ms) ? ms.toFixed(ms < 10 ? 2 : 1) : "-");
const describeFailures = (s: RunStats) =>
  `non-2xx ${s.non2xx} ${JSON.stringify(s.statuses)}, errors ${s.errors} (timeouts ${s.timeouts}), bad bodies ${Math.max(0, s.mismatches - s.non2xx)}`;

function added(rows: Row[], r: Row) {
  const base = rows.find((x) => x.system === "direct" && x.concurrency === r.concurrency);
  if (!base || r.system === "direct" || r.local) return null;
  return { p50: r.stats.p50 - base.stats.p50, p99: r.stats.p99 - base.stats.p99 };
}

function printJson(rows: Row[], live: { dashboards: number; dashboardMessages: number }) {
  for (const r of rows) {
    const a = added(rows, r);
    const s = r.stats;
    const out = {
      system: r.system,
      concurrency: r.concurrency,
      p50_ms: round(s.p50),
      p99_ms: round(s.p99),
      rps: Math.round(s.rps),
      ...(a ? { added_p50_ms: round(a.p50), added_p99_ms: round(a.p99) } : {}),
      p90_ms: round(s.p90),
      mean_ms: round(s.mean),
      requests: s.ok,
      seconds: Math.round(s.seconds * 100) / 100,
      non2xx: s.non2xx,
      errors: s.errors,
      bad_bodies: Math.max(0, s.mismatches - s.non2xx),
      ...(r.system === "cn2-dashboards" ? { dashboards: live.dashboards, dashboard_messages: live.dashboardMessages, vs_cn2_rps: vsCn2(rows, r) } : {}),
    };
    process.stdout.write(JSON.stringify(out) + "\n");
  }
}

/** requests/s of a row against cn2's at the same concurrency. */
function vsCn2(rows: Row[], r: Row): number | null {
  const cn2 = rows.find((x) => x.system === "cn2" && x.concurrency === r.concurrency);
  return cn2 ? Math.round((r.stats.rps / cn2.stats.rps) * 1000) / 1000 : null;
}

const round = (x: number) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : null);

function printTable(rows: Row[], meta: { machine: string; miniflare: string }) {
  const out: string[] = [];
  out.push("");
  out.push(`cn2 proxy bench: POST /v1/chat/completions (non-streaming), ${DURATION} s per system and concurrency (${ROUNDS} interleaved rounds) after ${WARMUP} s warm-up`);
  out.push(`${meta.machine}; cn2 in workerd via Miniflare ${meta.miniflare} (no wrangler dev proxy; upstream calls ${args["miniflare-outbound"] ? "through Miniflare's outbound helper worker" : "straight to workerd's network, as deployed"})`);
  if (UPSTREAM_DELAY > 0) out.push(`the upstream waits ${UPSTREAM_DELAY} ms before every answer (--upstream-delay)`);
  if (Object.keys(VAR_OVERRIDES).length > 0) out.push(`vars over wrangler.toml's: ${Object.entries(VAR_OVERRIDES).map(([k, v]) => `${k}=${v}`).join(" ")}`);
  out.push("latency in ms (client side, sub-ms resolution); added = minus direct upstream at the same concurrency");
  out.push("");
  const head = ["conc", "system", "p50", "p99", "req/s", "added p50", "added p99", "failures"];
  const table: string[][] = [head];
  for (const r of rows) {
    const a = added(rows, r);
    table.push([
      String(r.concurrency),
      r.system,
      fmt(r.stats.p50),
      fmt(r.stats.p99),
      String(Math.round(r.stats.rps)),
      a ? signed(a.p50) : "-",
      a ? signed(a.p99) : "-",
      String(failures(r.stats)),
    ]);
  }
  const widths = head.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const [i, row] of table.entries()) {
    out.push(row.map((cell, j) => (j === 1 ? cell.padEnd(widths[j]!) : cell.padStart(widths[j]!))).join("  "));
    if (i === 0) out.push(widths.map((w) => "-".repeat(w)).join("  "));
  }
  out.push("");
  out.push("cn2 vs Portkey:");
  for (const c of CONCURRENCY) {
    const cn2 = rows.find((r) => r.system === "cn2" && r.concurrency === c);
    const pk = rows.find((r) => r.system === "portkey" && r.concurrency === c);
    if (!cn2 || !pk) continue;
    const a = added(rows, cn2)!;
    const b = added(rows, pk)!;
    out.push(
      `  c=${String(c).padEnd(3)} added p50 ${signed(a.p50)} vs ${signed(b.p50)} ms (${ratio(a.p50, b.p50)}), ` +
        `added p99 ${signed(a.p99)} vs ${signed(b.p99)} ms (${ratio(a.p99, b.p99)}), ` +
        `req/s ${Math.round(cn2.stats.rps)} vs ${Math.round(pk.stats.rps)} (${ratio(cn2.stats.rps, pk.stats.rps)})`,
    );
  }
  process.stdout.write(out.join("\n") + "\n");
}

const signed = (x: number) => (x >= 0 ? "+" : "") + fmt(x);
const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a) ? `${(a / b).toFixed(2)}x` : "n/a");

try {
  await main();
} catch (err) {
  process.stderr.write(`\n!!! bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
} finally {
  await shutdown();
}
// Miniflare and undici may keep handles open; everything is stopped, so leave now.
process.exit(process.exitCode ?? 0);
