// End to end (B1, P1, PR8): the official `openai` SDK, paying through `createPayingFetch`,
// streams a chat completion from the running cn2 Worker. The Worker is the deployable
// bundle (`wrangler deploy --dry-run`) running in workerd through Miniflare's API, the way
// bench/workerd.ts runs it (its Miniflare and wrangler config readers are reused), with
// the demo upstream on loopback. One key is seeded on its SellerKey object, the buyer is
// funded through the dev faucet, and nothing but HTTP reaches the Worker after that.
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { Receipt } from "mppx";
import * as v from "valibot";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadMiniflare, readWranglerConfig } from "../../bench/workerd.ts";
import { createPayingFetch, generateBuyerKey, getBalance, requestFaucet, serializeBuyerKey } from "../../buyer/index.ts";
import { KeyConfigSchema } from "../../schema/wire.ts";
import { REPO_ROOT } from "../../tools/api-client.ts";
import { startDemoUpstream, upstreamBaseUrls, type DemoUpstream } from "../../tools/demo-upstream.ts";
import { encryptCredential, generateVaultKey } from "../../worker/vault.ts";

const REPLY = "Hello from the cn2 demo upstream, a deterministic reply.";
const OPS_TOKEN = `e2e-${crypto.randomUUID()}`;
const PRICE = 2000;

interface Miniflare {
  ready: Promise<URL>;
  unsafeGetDirectURL(workerName?: string): Promise<URL>;
  getDurableObjectNamespace(binding: string, workerName?: string): Promise<DurableObjectNamespace>;
  dispose(): Promise<void>;
}

let dir: string;
let upstream: DemoUpstream | undefined;
let mf: Miniflare | undefined;
let baseUrl: string;
let keyId: string;
let credential: string;

/** The bundle wrangler would deploy, in our own temporary directory. */
function bundle(outdir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [join(REPO_ROOT, "node_modules/wrangler/bin/wrangler.js"), "deploy", "--dry-run", "--outdir", outdir, "--config", join(REPO_ROOT, "wrangler.toml")],
      { cwd: REPO_ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1", NO_COLOR: "1" }, timeout: 60_000 },
      (err, _stdout, stderr) => (err ? reject(new Error(`wrangler build failed: ${stderr.slice(-2000)}`)) : resolve()),
    );
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cn2-e2e-"));
  const outdir = join(dir, "bundle");
  const [{ mod }, config, vault] = await Promise.all([loadMiniflare(), readWranglerConfig(), generateVaultKey("e2e-1"), bundle(outdir)]);
  upstream = await startDemoUpstream({ port: 0 });

  const sqlite = new Set(config.migrations.flatMap((m) => m.new_sqlite_classes ?? []));
  const vars = Object.fromEntries(Object.entries(config.vars).map(([k, val]) => [k, typeof val === "string" ? val : JSON.stringify(val)]));
  mf = new (mod.Miniflare as unknown as new (o: unknown) => Miniflare)(
    mod.convertV4MiniflareOptions({
      host: "127.0.0.1",
      port: 0,
      logRequests: false,
      handleStructuredLogs: () => {},
      resourcePersistencePath: join(dir, "state"),
      workers: [{
        name: config.name,
        modules: true,
        modulesRoot: outdir,
        scriptPath: join(outdir, "index.js"),
        compatibilityDate: config.compatibility_date,
        compatibilityFlags: config.compatibility_flags,
        durableObjects: Object.fromEntries(config.durable_objects.bindings.map((b) => [b.name, { className: b.class_name, useSQLite: sqlite.has(b.class_name) }])),
        kvNamespaces: Object.fromEntries(config.kv_namespaces.map((k) => [k.binding, k.id ?? k.binding])),
        bindings: {
          ...vars,
          OPS_TOKEN,
          VAULT_PRIVATE_KEYS: JSON.stringify([vault.privateKey]),
          MPP_SECRET_KEY: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex"),
          DEV_FAUCET: "1",
          UPSTREAM_BASE_URLS: JSON.stringify(upstreamBaseUrls(upstream.url)),
          POOL_CACHE_MS: "0",
          POOL_DEBOUNCE_MS: "0",
        },
        // A socket straight on the Worker: no Miniflare entry worker, so no made-up
        // request.cf (whose country would steer EU routing).
        unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
      }],
    }),
  );
  await mf.ready;
  baseUrl = (await mf.unsafeGetDirectURL(config.name)).href.replace(/\/$/, "");

  // One seller key, made on its object exactly as the seller API does after its checks.
  keyId = `k_e2e${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  credential = `sk-demo-${keyId}`;
  const sellerId = crypto.randomUUID();
  const envelope = await encryptCredential(credential, vault.publicKey, { sellerId, keyId });
  const ns = await mf.getDurableObjectNamespace("SELLER_KEY");
  const stub = ns.get(ns.idFromName(keyId)) as unknown as { create(input: unknown, home: string): Promise<{ ok: boolean; code?: string }> };
  const config_ = v.parse(KeyConfigSchema, { provider: "openai", priceMicros: PRICE, requestsPerMinute: 600, maxConcurrent: 8, region: "us" });
  const created = await stub.create({ keyId, sellerId, envelope, config: config_ }, "default");
  expect(created.ok, `seeding the key: ${created.code}`).toBe(true);
}, 120_000);

afterAll(async () => {
  await mf?.dispose().catch(() => {});
  await upstream?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("the official OpenAI SDK against the running Worker", () => {
  it("PR8: a streamed chat completion, paid with prepaid credit through createPayingFetch; the receipt and the balance show it", async () => {
    const key = await generateBuyerKey();
    const funded = await requestFaucet({ baseUrl, buyerId: key.buyerId, amountMicros: 50_000 });
    expect(funded.balanceMicros).toBe(50_000);

    const responses: Response[] = [];
    const payingFetch = createPayingFetch({ baseUrl, privateKey: serializeBuyerKey(key) });
    const openai = new OpenAI({
      baseURL: `${baseUrl}/openai/v1`,
      apiKey: "unused-cn2-is-paid-by-credit",
      maxRetries: 0,
      fetch: async (input, init) => {
        const res = await payingFetch(input, init);
        responses.push(res);
        return res;
      },
    });
    const stream = await openai.chat.completions.create({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "Hello" }] });
    let text = "";
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(REPLY);
    expect(finish).toBe("stop");

    // The SDK saw one (paid) answer; its receipt names the request and the price.
    expect(responses).toHaveLength(1);
    const [res] = responses;
    expect(res!.status).toBe(200);
    expect(res!.headers.get("content-type")).toContain("text/event-stream");
    const receipt = Receipt.fromResponse(res!) as Record<string, unknown>;
    expect(receipt).toMatchObject({ method: "credit", status: "success", amountMicros: PRICE, refunded: false, requestId: res!.headers.get("cn2-request-id") });

    const balance = await getBalance({ baseUrl, privateKey: key });
    expect(balance.balanceMicros).toBe(50_000 - PRICE);
    expect(balance.history.map((h) => [h.kind, h.amountMicros, h.ref])).toEqual([["debit", PRICE, receipt.reference], ["topup", 50_000, expect.any(String)]]);

    // The seller's key earned its price minus the 10% fee.
    const inspected = await fetch(`${baseUrl}/ops/keys/${keyId}`, { headers: { authorization: `Bearer ${OPS_TOKEN}` } });
    expect(inspected.status).toBe(200);
    const { key: view } = (await inspected.json()) as { key: { earnings: { unflushedMicros: number; feeMicros: number; servedCount: number } } };
    expect(view.earnings).toEqual({ unflushedMicros: 1800, feeMicros: 200, servedCount: 1 });

    // The upstream answered once, streamed to the end, to the seller's credential.
    const log = (await (await fetch(`${upstream!.url}/__demo/log`)).json()) as { requests: { credential: string; streamed: boolean; finished: boolean }[] };
    expect(log.requests.filter((r) => r.credential === credential)).toEqual([expect.objectContaining({ streamed: true, finished: true })]);
  }, 60_000);
});
