// End to end (B1, P1, PR8): the official `openai` SDK, paying through `createPayingFetch`,
// streams a chat completion from the running cn2 Worker. The Worker is the deployable
// bundle running in workerd through Miniflare's API, started exactly as the bench starts
// it (bench/workerd.ts `startWorker`), with the demo upstream on loopback and an embedded
// Postgres (test/node/stack.ts). A seller signs in and lists one key through the seller
// API, the buyer is funded through the dev faucet, and nothing but HTTP reaches the Worker.
import OpenAI from "openai";
import { Receipt } from "mppx";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPayingFetch, generateBuyerKey, getBalance, requestFaucet, serializeBuyerKey } from "../../buyer/index.ts";
import { startStack, type Stack } from "./stack.ts";

const REPLY = "Hello from the cn2 demo upstream, a deterministic reply.";
const PRICE = 2000;

let stack: Stack;
let baseUrl: string;
let keyId: string;
let credential: string;

beforeAll(async () => {
  stack = await startStack();
  baseUrl = stack.url;
  const seller = await stack.signIn("e2e");
  credential = `sk-demo-e2e-${crypto.randomUUID()}`;
  const key = await stack.addKey(seller, credential, { provider: "openai", priceMicros: PRICE, requestsPerMinute: 600, maxConcurrent: 8, region: "us" });
  keyId = key.keyId;
}, 180_000);

afterAll(async () => {
  await stack?.close();
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
    const inspected = await fetch(`${baseUrl}/ops/keys/${keyId}`, { headers: { authorization: `Bearer ${stack.opsToken}` } });
    expect(inspected.status).toBe(200);
    const { key: view } = (await inspected.json()) as { key: { earnings: { unflushedMicros: number; feeMicros: number; servedCount: number } } };
    expect(view.earnings).toEqual({ unflushedMicros: 1800, feeMicros: 200, servedCount: 1 });

    // The upstream answered once, streamed to the end, to the seller's credential.
    const log = (await (await fetch(`${stack.upstream.url}/__demo/log`)).json()) as { requests: { credential: string; streamed: boolean; finished: boolean }[] };
    expect(log.requests.filter((r) => r.credential === credential)).toEqual([expect.objectContaining({ streamed: true, finished: true })]);
  }, 60_000);
});
