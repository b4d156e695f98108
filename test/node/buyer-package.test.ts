// B7: the buyer client as a package any project can install. `npm pack` in buyer/ (whose
// prepack builds dist/), the tarball installed with the official `openai` and
// `@anthropic-ai/sdk` into a throwaway project outside the repository, and the snippets of
// buyer/README.md (the root README's copies must match them) run there with plain `node`
// against a real local cn2: the deployable Worker bundle in workerd, started as
// test/node/e2e-openai.test.ts starts it, the demo upstream for the providers, the dev faucet
// for credit and the fake Stripe for the card top-up. One stack for every snippet.
//
// Installing needs the packages: from npm's cache when it holds them (`--offline`), else
// from the registry (`--prefer-offline`). The SDK versions are the repo's own, so a warm
// cache is enough.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as v from "valibot";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type RunningWorker } from "../../bench/workerd.ts";
import { encryptCredential, generateVaultKey } from "../../core/vault.ts";
import { KeyConfigSchema, type KeyConfigInput } from "../../schema/wire.ts";
import { startDemoUpstream, upstreamBaseUrls, type DemoUpstream } from "../../tools/demo-upstream.ts";
import { TEST_STRIPE, startFakeStripe, type FakeStripe } from "../fake-stripe.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const BUYER_DIR = join(ROOT, "buyer");
const REPLY = "Hello from the cn2 demo upstream, a deterministic reply.";
const OPENAI_PRICE = 2000;
const ANTHROPIC_PRICE = 2500;
/** The SDKs at the versions the repo itself tests with (and so has in npm's cache). */
const SDKS = ["openai", "@anthropic-ai/sdk"] as const;

interface Run { stdout: string; stderr: string }

type Env = Record<string, string | undefined>;

/** Run a program; reject with its output when it fails. */
function run(file: string, args: string[], opts: { cwd: string; env: Env; timeoutMs?: number }): Promise<Run> {
  return new Promise((done, fail) => {
    execFile(file, args, { cwd: opts.cwd, env: opts.env as NodeJS.ProcessEnv, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) fail(new Error(`${file} ${args.join(" ")} (in ${opts.cwd}) failed: ${err.message}\n${stdout}\n${stderr}`));
      else done({ stdout, stderr });
    });
  });
}

/** npm as a user runs it: none of the npm_* settings of the `npm test` that may be running this file. */
function npmEnv(): Env {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(npm_|INIT_CWD$|NODE_OPTIONS$|NODE_PATH$)/i.test(k)));
}

/** Plain `node` in the buyer's project: no flags, no loaders, nothing of vitest's. */
const nodeEnv = (extra: Env): Env => ({ PATH: process.env.PATH, HOME: process.env.HOME ?? tmpdir(), ...extra });

/** The snippets a README marks with `<!-- snippet: name.mjs -->` right above a fenced block. */
function readmeSnippets(markdown: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of markdown.matchAll(/<!-- snippet: ([\w.-]+\.mjs) -->\n```js\n([\s\S]*?)```\n/g)) {
    if (out.has(m[1]!)) throw new Error(`snippet ${m[1]} appears twice`);
    out.set(m[1]!, m[2]!);
  }
  return out;
}

async function installedVersion(pkg: string): Promise<string> {
  return (JSON.parse(await readFile(join(ROOT, "node_modules", pkg, "package.json"), "utf8")) as { version: string }).version;
}

/** npm install from the cache alone when it can; else the registry. */
async function npmInstall(cwd: string, specs: string[]): Promise<string> {
  const errors: string[] = [];
  for (const mode of ["--offline", "--prefer-offline"]) {
    try {
      await run("npm", ["install", mode, "--no-audit", "--no-fund", "--loglevel=error", ...specs], { cwd, env: npmEnv(), timeoutMs: 300_000 });
      return mode;
    } catch (err) {
      errors.push((err as Error).message.slice(-2000));
    }
  }
  throw new Error(`npm install failed both from the cache and from the registry:\n${errors.join("\n---\n")}`);
}

interface Packed { filename: string; size: number; files: { path: string }[] }

let dir: string;
let project: string;
let packed: Packed;
let upstream: DemoUpstream | undefined;
let stripe: FakeStripe | undefined;
let worker: RunningWorker | undefined;
let baseUrl: string;
const credentials: Record<"openai" | "anthropic", string> = { openai: "", anthropic: "" };

/** Pack buyer/ (prepack builds it) and install the tarball and the SDKs into a fresh project. */
async function packAndInstall(): Promise<void> {
  const packDir = join(dir, "pack");
  await mkdir(packDir);
  const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", packDir], { cwd: BUYER_DIR, env: npmEnv(), timeoutMs: 300_000 });
  packed = (JSON.parse(stdout.slice(stdout.indexOf("["))) as Packed[])[0]!;
  project = join(dir, "project");
  await mkdir(project);
  await writeFile(join(project, "package.json"), JSON.stringify({ name: "cn2-buyer-consumer", private: true, type: "module" }, null, 2));
  const sdks = await Promise.all(SDKS.map(async (name) => `${name}@${await installedVersion(name)}`));
  await npmInstall(project, [join(packDir, packed.filename), ...sdks]);
}

/** The Worker with the dev faucet and a fake Stripe, and one seller key per provider on its object. */
async function startStack(): Promise<void> {
  const vault = await generateVaultKey("buyer-pkg-1");
  upstream = await startDemoUpstream({ port: 0 });
  stripe = await startFakeStripe({ ...TEST_STRIPE });
  worker = await startWorker({
    storageDir: join(dir, "state"),
    bindings: {
      CN2_DEV: "1",
      OPS_TOKEN: `buyer-pkg-${crypto.randomUUID()}`,
      VAULT_PRIVATE_KEYS: JSON.stringify([vault.privateKey]),
      MPP_SECRET_KEY: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex"),
      DEV_FAUCET: "1",
      STRIPE_API_BASE: stripe.url,
      STRIPE_SECRET_KEY: TEST_STRIPE.secretKey,
      STRIPE_WEBHOOK_SECRET: TEST_STRIPE.webhookSecret,
      UPSTREAM_BASE_URLS: JSON.stringify(upstreamBaseUrls(upstream.url)),
      POOL_CACHE_MS: "0",
      POOL_DEBOUNCE_MS: "0",
      // No Postgres here: earnings stay on the key objects instead of retrying a flush.
      EARNINGS_FLUSH_MS: "600000",
    },
  });
  baseUrl = worker.url;
  const ns = await worker.durableObjectNamespace("SELLER_KEY");
  const keys: [keyof typeof credentials, KeyConfigInput][] = [
    ["openai", { provider: "openai", priceMicros: OPENAI_PRICE, requestsPerMinute: 600, maxConcurrent: 8, region: "us" }],
    ["anthropic", { provider: "anthropic", priceMicros: ANTHROPIC_PRICE, requestsPerMinute: 600, maxConcurrent: 8, region: "us" }],
  ];
  for (const [provider, config] of keys) {
    // Made on its object exactly as the seller API does after its checks.
    const keyId = `k_pkg${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
    const sellerId = crypto.randomUUID();
    credentials[provider] = `sk-demo-${keyId}`;
    const envelope = await encryptCredential(credentials[provider], vault.publicKey, { sellerId, keyId });
    const stub = ns.get(ns.idFromName(keyId)) as unknown as { create(input: unknown, home: string): Promise<{ ok: boolean; code?: string }> };
    const created = await stub.create({ keyId, sellerId, envelope, config: v.parse(KeyConfigSchema, config) }, "default");
    expect(created.ok, `seeding the ${provider} key: ${created.code}`).toBe(true);
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cn2-buyer-pkg-"));
  await Promise.all([packAndInstall(), startStack()]);
}, 600_000);

afterAll(async () => {
  await worker?.dispose().catch(() => {});
  await upstream?.close();
  await stripe?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
}, 60_000);

describe("B7: cn2-buyer, packed and installed outside the repository", () => {
  it("the tarball holds the built JavaScript, its declarations, the README and package.json; it depends on mppx and viem only", async () => {
    const paths = packed.files.map((f) => f.path).sort();
    expect(paths).toEqual(expect.arrayContaining(["README.md", "package.json", "dist/buyer/index.js", "dist/buyer/index.d.ts"]));
    expect(paths.filter((p) => !/^(README\.md|package\.json|dist\/[\w/-]+\.(js|d\.ts))$/.test(p))).toEqual([]);
    // Only what the client runs: the marketplace's wire schemas (and valibot with them) stay home.
    expect(paths.filter((p) => p.startsWith("dist/")).map((p) => p.replace(/\.(d\.ts|js)$/, "")).filter((p, i, all) => all.indexOf(p) === i)).toEqual([
      "dist/buyer/index", "dist/buyer/keys", "dist/buyer/pass-mac", "dist/core/credit-method", "dist/core/did", "dist/core/encoding", "dist/core/pass", "dist/schema/headers",
    ]);

    const installed = JSON.parse(await readFile(join(project, "node_modules/cn2-buyer/package.json"), "utf8")) as { dependencies: Record<string, string> };
    expect(Object.keys(installed.dependencies).sort()).toEqual(["mppx", "viem"]);
    const modules = await readdir(join(project, "node_modules"));
    for (const serverOnly of ["valibot", "jose", "stripe", "itty-router", "postgres", "partyserver", "@supabase"]) expect(modules).not.toContain(serverOnly);
  });

  it("the README's snippets, run with plain node in that project, make a key, top it up and buy real answers from both SDKs", async () => {
    const snippets = readmeSnippets(await readFile(join(BUYER_DIR, "README.md"), "utf8"));
    expect([...snippets.keys()].sort()).toEqual(["anthropic.mjs", "balance.mjs", "keygen.mjs", "openai.mjs", "topup-card.mjs", "topup.mjs"]);
    // The root README shows some of them too: the same text, so it cannot drift.
    const copies = readmeSnippets(await readFile(join(ROOT, "README.md"), "utf8"));
    expect(copies.size).toBeGreaterThan(0);
    for (const [name, text] of copies) expect(text, `README.md's ${name}`).toBe(snippets.get(name));
    for (const [name, text] of snippets) await writeFile(join(project, name), text);

    const node = (file: string) => run(process.execPath, [file], { cwd: project, env: nodeEnv({ CN2_URL: baseUrl }) });

    const keygen = await node("keygen.mjs");
    expect(keygen.stdout).toMatch(/^buyer id [0-9a-f]{64}\n$/);
    expect((await stat(join(project, ".buyer-key.json"))).mode & 0o777).toBe(0o600);

    expect((await node("topup.mjs")).stdout).toBe("balance $5.000000\n");

    const openai = await node("openai.mjs");
    expect(openai.stdout).toBe(`${REPLY}\n`);
    const anthropic = await node("anthropic.mjs");
    expect(anthropic.stdout).toBe(`${REPLY}\n`);

    // Card top-ups hand back the (fake) Stripe Checkout page.
    expect((await node("topup-card.mjs")).stdout).toMatch(new RegExp(`^pay here: ${stripe!.url}/pay/cs_test_[0-9a-f]+\\n$`));

    // Paid: each answer was debited at its key's price, newest first, after the faucet's $5.
    const balance = await node("balance.mjs");
    const lines = balance.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe("balance $4.995500, spent today $0.004500");
    expect(lines.slice(1).map((l) => l.split(" ").slice(0, 2).join(" "))).toEqual(["debit $0.002500", "debit $0.002000", "topup $5.000000"]);

    // Each seller's credential served its provider's request once, to the end.
    const log = (await (await fetch(`${upstream!.url}/__demo/log`)).json()) as { requests: { credential: string; provider: string; status: number; finished: boolean }[] };
    for (const provider of ["openai", "anthropic"] as const) {
      expect(log.requests.filter((r) => r.credential === credentials[provider])).toEqual([expect.objectContaining({ provider, status: 200, finished: true })]);
    }
  }, 300_000);
});
