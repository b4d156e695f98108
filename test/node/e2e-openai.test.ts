// End to end (B1, P1, PR8): the official `openai` SDK, paying through `createPayingFetch`,
// streams a chat completion from the running cn2 Worker. The Worker is the deployable
// bundle running in workerd through Miniflare's API, started exactly as the bench starts
// it (bench/workerd.ts `startWorker`), with the demo upstream on loopback. One key is seeded on its SellerKey object, the buyer is
// funded through the dev faucet, and nothing but HTTP reaches the Worker after that.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { Receipt } from "mppx";
import * as v from "valibot";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type RunningWorker } from "../../bench/workerd.ts";
import { createPayingFetch, generateBuyerKey, getBalance, requestFaucet, serializeBuyerKey } from "../../buyer/index.ts";
import { KeyConfigSchema } from "../../schema/wire.ts";
import { startDemoUpstream, upstreamBaseUrls, type DemoUpstream } from "../../tools/demo-upstream.ts";
import { encryptCredential, generateVaultKey } from "../../core/vault.ts";

const REPLY = "Hello from the cn2 demo upstream, a deterministic reply.";
const OPS_TOKEN = `e2e-${crypto.randomUUID()}`;
const PRICE = 2000;

let dir: string;
let upstream: DemoUpstream | undefined;
let worker: RunningWorker | undefined;
let baseUrl: string;
let keyId: string;
let credential: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "cn2-e2e-"));
  const vault = await generateVaultKey("e2e-1");
  upstream = await startDemoUpstream({ port: 0 });
  worker = await startWorker({
    storageDir: join(dir, "state"),
    bindings: {
      CN2_DEV: "1",
      OPS_TOKEN,
      VAULT_PRIVATE_KEYS: JSON.stringify([vault.privateKey]),
      MPP_SECRET_KEY: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex"),
      DEV_FAUCET: "1",
      UPSTREAM_BASE_URLS: JSON.stringify(upstreamBaseUrls(upstream.url)),
      POOL_CACHE_MS: "0",
      POOL_DEBOUNCE_MS: "0",
    },
  });
  baseUrl = worker.url;

  // One seller key, made on its object exactly as the seller API does after its checks.
  keyId = `k_e2e${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  credential = `sk-demo-${keyId}`;
  const sellerId = crypto.randomUUID();
  const envelope = await encryptCredential(credential, vault.publicKey, { sellerId, keyId });
  const ns = await worker.durableObjectNamespace("SELLER_KEY");
  const stub = ns.get(ns.idFromName(keyId)) as unknown as { create(input: unknown, home: string): Promise<{ ok: boolean; code?: string }> };
  const config_ = v.parse(KeyConfigSchema, { provider: "openai", priceMicros: PRICE, requestsPerMinute: 600, maxConcurrent: 8, region: "us" });
  const created = await stub.create({ keyId, sellerId, envelope, config: config_ }, "default");
  expect(created.ok, `seeding the key: ${created.code}`).toBe(true);
}, 120_000);

afterAll(async () => {
  await worker?.dispose().catch(() => {});
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
