// The cn2 Worker in workerd without wrangler's dev proxy: wrangler bundles it exactly as
// it would deploy it (`wrangler deploy --dry-run --outdir`), then Miniflare's API runs
// the bundle with the bindings from wrangler.toml (SQLite-backed Durable Objects, KV,
// vars) plus the bench's secrets. Load goes to a direct socket on the user Worker
// (`unsafeDirectSockets`), which skips Miniflare's entry worker as well.
//
// Miniflare: the copy inside wrangler's own dependency tree (5.x, same workerd as
// wrangler). Its constructor takes the new Miniflare 5 shape (`workers: [{ config }]`);
// the Miniflare 4 ("V4") shape is still accepted through `convertV4MiniflareOptions`,
// which is what this module uses: it is the documented, stable shape.
//
// Outbound fetches: Miniflare routes every user Worker's `fetch()` through a helper worker
// of its own ("outbound:N", which strips CF-Connecting-IP and emulates cf.image), one more
// in-process Worker hop per upstream call that a deployed Worker does not make. With
// `directOutbound` (the bench's default) a load hook edits that one assignment in
// Miniflare's bundle as it is loaded, so user Workers fetch through workerd's "internet"
// network service as Miniflare defines it (public and private addresses): the path a
// deployed Worker takes. Nothing else changes; the edit fails loudly if the line moved.
import { ensureDashboardBuilt } from "../tools/dashboard-build.ts";
import { mkdtempSync } from "node:fs";
import { createRequire, registerHooks } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { HOST, log, onShutdown, removeDirOnExit, runNode } from "./processes.ts";

const ROOT = join(import.meta.dirname, "..");

interface MiniflareInstance {
  ready: Promise<URL>;
  unsafeGetDirectURL(workerName?: string, entrypoint?: string): Promise<URL>;
  getDurableObjectNamespace(binding: string, workerName?: string): Promise<DurableObjectNamespace>;
  getKVNamespace(binding: string, workerName?: string): Promise<KVNamespace>;
  dispose(): Promise<void>;
}
interface MiniflareModule {
  Miniflare: new (opts: unknown) => MiniflareInstance;
  convertV4MiniflareOptions(opts: unknown): unknown;
}

const INTERCEPTED = "globalOutbound: { name: getOutboundInterceptorName(workerIndex) },";
const DIRECT = 'globalOutbound: { name: "internet" },';
let loaded: { directOutbound: boolean } | undefined;

/** Where wrangler's own Miniflare lives, and its version. */
export function miniflareEntry(): { path: string; version: string } {
  const fromWrangler = createRequire(join(ROOT, "node_modules/wrangler/package.json"));
  return { path: fromWrangler.resolve("miniflare"), version: (fromWrangler("miniflare/package.json") as { version: string }).version };
}

/** Miniflare's bundle with user Workers' outbound fetches sent straight to the network; throws if the line moved. */
export function withDirectOutbound(source: string, version: string): string {
  if (source.split(INTERCEPTED).length !== 2) throw new Error(`bench: Miniflare ${version} no longer has the outbound helper line this bench edits (bench/workerd.ts)`);
  return source.replace(INTERCEPTED, DIRECT);
}

/** Miniflare from wrangler's dependency tree; `directOutbound`: without its outbound helper hop. */
export async function loadMiniflare(opts: { directOutbound?: boolean } = {}): Promise<{ mod: MiniflareModule; version: string; path: string }> {
  const directOutbound = opts.directOutbound ?? false;
  const { path, version } = miniflareEntry();
  const href = pathToFileURL(path).href;
  if (loaded && loaded.directOutbound !== directOutbound) throw new Error("Miniflare is already loaded with the other outbound path in this process");
  if (!loaded && directOutbound) {
    registerHooks({
      load(url, context, nextLoad) {
        const result = nextLoad(url, context);
        return url === href ? { ...result, source: withDirectOutbound(String(result.source), version) } : result;
      },
    });
  }
  loaded = { directOutbound };
  return { mod: (await import(href)) as MiniflareModule, version, path };
}

interface WranglerConfig {
  [field: string]: unknown;
  name: string;
  compatibility_date: string;
  compatibility_flags: string[];
  vars: Record<string, unknown>;
  durable_objects: { bindings: { name: string; class_name: string }[] };
  kv_namespaces: { binding: string; id?: string }[];
  hyperdrive: { binding: string; localConnectionString?: string }[];
  queues: {
    producers?: { binding: string; queue: string }[];
    consumers?: { queue: string; max_batch_size?: number; max_batch_timeout?: number; max_retries?: number; dead_letter_queue?: string }[];
  };
  migrations: { new_sqlite_classes?: string[] }[];
}

/** A non-empty list, or an object holding one (e.g. queues: {producers: [], consumers: []} is empty). */
const hasEntries = (v: unknown): boolean =>
  Array.isArray(v) ? v.length > 0 : typeof v === "string" ? v !== "" : v !== null && typeof v === "object" && Object.values(v).some(hasEntries);

export async function readWranglerConfig(): Promise<WranglerConfig> {
  const { unstable_readConfig } = (await import("wrangler")) as unknown as {
    unstable_readConfig(args: { config: string }): WranglerConfig;
  };
  return unstable_readConfig({ config: join(ROOT, "wrangler.toml") });
}

/** `wrangler deploy --dry-run --outdir <tmp>`: the deployable bundle, nothing uploaded. */
export async function bundleWorker(): Promise<string> {
  // wrangler.toml's [assets] must exist to bundle: build the dashboard once if it is missing.
  await ensureDashboardBuilt();
  const outdir = mkdtempSync(join(tmpdir(), "cn2-bench-"));
  removeDirOnExit(outdir);
  const started = performance.now();
  await runNode(
    "wrangler build",
    [join(ROOT, "node_modules/wrangler/bin/wrangler.js"), "deploy", "--dry-run", "--outdir", outdir, "--config", join(ROOT, "wrangler.toml")],
    { WRANGLER_SEND_METRICS: "false", CI: "1", NO_COLOR: "1" },
    120_000,
  );
  log(`bundled the Worker with wrangler in ${Math.round(performance.now() - started)} ms -> ${outdir}/index.js`);
  return outdir;
}

export interface ExtraWorker {
  name: string;
  /** ES module source. */
  source: string;
  durableObjects?: Record<string, string>;
  kvNamespaces?: Record<string, string>;
  bindings?: Record<string, string>;
}

export interface RunningWorker {
  /** Direct URL of the cn2 Worker (no Miniflare entry worker, no wrangler proxy). */
  url: string;
  /** Direct URLs of extra workers (profiling probes), by name. */
  extra: Record<string, string>;
  miniflareVersion: string;
  /** A Durable Object namespace of the cn2 Worker, for seeding from outside. */
  durableObjectNamespace(binding: string): Promise<DurableObjectNamespace>;
  /** A KV namespace of the cn2 Worker, read from outside. */
  kvNamespace(binding: string): Promise<KVNamespace>;
  /** The Worker's vars as it runs (wrangler.toml's with the bench's overrides). */
  vars: Record<string, string>;
  dispose(): Promise<void>;
}

export async function startWorker(opts: {
  bindings: Record<string, string>;
  extra?: ExtraWorker[];
  /** Directory for Durable Object/KV storage files; default: Miniflare's temp dir on disk. */
  storageDir?: string;
  /** Open workerd's inspector on this loopback port (for CPU profiles). */
  inspectorPort?: number;
  /** Postgres behind every Hyperdrive binding (else wrangler.toml's localConnectionString). */
  databaseUrl?: string;
  /** Upstream calls straight to workerd's network service, as deployed (see the top of this file). */
  directOutbound?: boolean;
  /** A `bundleWorker()` the caller started earlier (to bundle while it starts other things); else bundled here. */
  bundle?: Promise<string>;
}): Promise<RunningWorker> {
  const [{ mod, version }, config, outdir] = await Promise.all([
    loadMiniflare({ directOutbound: opts.directOutbound }),
    readWranglerConfig(),
    opts.bundle ?? bundleWorker(),
  ]);
  // Binding kinds this runner maps; anything else in wrangler.toml would be missing in workerd.
  const unmapped = [ "r2_buckets", "d1_databases", "services", "analytics_engine_datasets", "send_email", "browser", "ai", "vectorize", "workflows"]
    .filter((kind) => hasEntries(config[kind]));
  if (unmapped.length > 0) log(`!! wrangler.toml has bindings this bench does not map into workerd yet: ${unmapped.join(", ")} (see bench/workerd.ts)`);
  const sqlite = new Set(config.migrations.flatMap((m) => m.new_sqlite_classes ?? []));
  const vars = Object.fromEntries(Object.entries(config.vars).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]));
  const cn2 = {
    name: config.name,
    modules: true,
    modulesRoot: outdir,
    scriptPath: join(outdir, "index.js"),
    compatibilityDate: config.compatibility_date,
    compatibilityFlags: config.compatibility_flags,
    durableObjects: Object.fromEntries(
      config.durable_objects.bindings.map((b) => [b.name, { className: b.class_name, useSQLite: sqlite.has(b.class_name) }]),
    ),
    kvNamespaces: Object.fromEntries(config.kv_namespaces.map((k) => [k.binding, k.id ?? k.binding])),
    bindings: { ...vars, ...opts.bindings },
    // Postgres: seller sign-in and key creation, and the key objects' earnings flush alarm.
    hyperdrives: Object.fromEntries(
      (config.hyperdrive ?? []).flatMap((h) => {
        const url = opts.databaseUrl ?? process.env[`CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_${h.binding}`] ?? h.localConnectionString;
        return url ? [[h.binding, url]] : [];
      }),
    ),
    queueProducers: Object.fromEntries((config.queues?.producers ?? []).map((p) => [p.binding, { queueName: p.queue }])),
    queueConsumers: Object.fromEntries(
      (config.queues?.consumers ?? []).map((c) => [
        c.queue,
        { maxBatchSize: c.max_batch_size, maxBatchTimeout: c.max_batch_timeout, maxRetries: c.max_retries, deadLetterQueue: c.dead_letter_queue },
      ]),
    ),
    unsafeDirectSockets: [{ host: HOST, port: 0 }],
  };
  const extras = (opts.extra ?? []).map((w) => ({
    name: w.name,
    modules: [{ type: "ESModule", path: join(outdir, `${w.name}.js`), contents: w.source }],
    modulesRoot: outdir,
    compatibilityDate: config.compatibility_date,
    compatibilityFlags: config.compatibility_flags,
    durableObjects: Object.fromEntries(Object.entries(w.durableObjects ?? {}).map(([b, cls]) => [b, { className: cls, useSQLite: true }])),
    kvNamespaces: w.kvNamespaces ?? {},
    bindings: w.bindings ?? {},
    unsafeDirectSockets: [{ host: HOST, port: 0 }],
  }));
  const mf = new mod.Miniflare(
    mod.convertV4MiniflareOptions({
      host: HOST,
      port: 0,
      logRequests: false,
      // The Worker's info logs (key.created, ...) would bury the bench's own output; its
      // warnings and errors still show, prefixed. CN2_BENCH_WORKERD_LOG=all shows every
      // line: with MINIFLARE_WORKERD_V8_FLAGS="--trace-gc --trace-gc-nvp", V8's GC trace
      // (bench/gc-trace.ts reads it).
      handleStructuredLogs: ({ level, message }: { level: string; message: string }) => {
        if (level === "error" || level === "warn" || process.env.CN2_BENCH_WORKERD_LOG === "all") process.stderr.write(`[workerd ${level}] ${message}\n`);
      },
      ...(opts.storageDir ? { resourcePersistencePath: opts.storageDir } : {}),
      ...(opts.inspectorPort ? { inspectorPort: opts.inspectorPort, inspectorHost: HOST } : {}),
      workers: [cn2, ...extras],
    }),
  );
  onShutdown(() => mf.dispose());
  await mf.ready;
  const url = (await mf.unsafeGetDirectURL(config.name)).href.replace(/\/$/, "");
  const extra: Record<string, string> = {};
  for (const w of extras) extra[w.name] = (await mf.unsafeGetDirectURL(w.name)).href.replace(/\/$/, "");
  return {
    url,
    extra,
    miniflareVersion: version,
    durableObjectNamespace: (binding) => mf.getDurableObjectNamespace(binding, config.name),
    kvNamespace: (binding) => mf.getKVNamespace(binding, config.name),
    vars: { ...vars, ...opts.bindings },
    dispose: () => mf.dispose(),
  };
}
