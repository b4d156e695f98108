// The buyer side in Node 22 (B1, PR8): keys and their did:key, and the official OpenAI SDK
// paying through createPayingFetch against the real Worker (the deployable bundle in
// workerd, with the real BuyerWallet and proof store, a key listed through the seller API
// and the demo upstream behind it: test/node/stack.ts); the buyer CLI against it too.
import http from "node:http";
import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { Challenge, Receipt } from "mppx";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buyerIdOf, createPayingFetch, generateBuyerKey, getBalance, loadBuyerKey, microsToUsd, requestFaucet, serializeBuyerKey, usdToMicros, type BuyerKey,
} from "../../buyer/index.ts";
import { parseDid } from "../../core/did.ts";
import { REPO_ROOT } from "../../tools/api-client.ts";
import { startStack, type Stack } from "./stack.ts";

const PRICE = 2000;
/** Tempo (USDC per request) is offered beside credit once a recipient and a token are set. */
const TEMPO_RECIPIENT = "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00";

let stack: Stack;
let baseUrl: string;

beforeAll(async () => {
  stack = await startStack({ bindings: { TEMPO_RECIPIENT, TEMPO_CURRENCY: "0x20c0000000000000000000000000000000000000", TEMPO_TESTNET: "1" } });
  baseUrl = stack.url;
  const seller = await stack.signIn("buyer-suite");
  await stack.addKey(seller, `sk-demo-buyer-suite-${crypto.randomUUID()}`, { provider: "openai", priceMicros: PRICE, requestsPerMinute: 600, maxConcurrent: 8, region: "us" });
}, 180_000);

afterAll(async () => {
  await stack?.close();
});

describe("buyer keys", () => {
  it("Ed25519 and P-256 keys: did:key form, buyer id = SHA-256 of the DID, round trip through the key file", async () => {
    for (const [alg, prefix] of [["Ed25519", "did:key:z6Mk"], ["P-256", "did:key:zDn"]] as const) {
      const key = await generateBuyerKey(alg);
      expect(key.did.startsWith(prefix)).toBe(true);
      expect(parseDid(key.did)).toMatchObject({ alg, did: key.did });
      expect(key.buyerId).toBe(createHash("sha256").update(key.did).digest("hex"));
      expect(await buyerIdOf(key.did)).toBe(key.buyerId);
      const again = await loadBuyerKey(serializeBuyerKey(key));
      expect(again.did).toBe(key.did);
      expect(again.buyerId).toBe(key.buyerId);
      await expect(loadBuyerKey({ ...key.file, did: "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK" })).rejects.toThrow(/does not match/);
    }
    await expect(loadBuyerKey("{}")).rejects.toThrow(/not a cn2 buyer key/);
  });

  it("rejects DIDs that are not Ed25519 or P-256 did:key", () => {
    for (const bad of ["", "did:web:example.com", "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme", "did:key:z0OIl", "did:key:z6Mk" + "1".repeat(200)]) {
      expect(() => parseDid(bad), bad).toThrow();
    }
  });

  it("dollar amounts convert exactly", () => {
    expect(usdToMicros("5")).toBe(5_000_000);
    expect(usdToMicros("0.000001")).toBe(1);
    expect(usdToMicros("2.5")).toBe(2_500_000);
    expect(() => usdToMicros("1.0000001")).toThrow();
    expect(() => usdToMicros("-1")).toThrow();
    expect(microsToUsd(1_234_567)).toBe("1.234567");
  });
});

describe("paying with the official OpenAI SDK", () => {
  let key: BuyerKey;
  beforeAll(async () => {
    key = await generateBuyerKey();
    await requestFaucet({ baseUrl, buyerId: key.buyerId, amountMicros: 10_000 });
  });

  it("PR8: new OpenAI({ baseURL, fetch: createPayingFetch(...) }) pays per request, streamed and not", async () => {
    const seen: Response[] = [];
    const payingFetch = createPayingFetch({ baseUrl, privateKey: serializeBuyerKey(key) });
    const openai = new OpenAI({
      baseURL: `${baseUrl}/openai/v1`,
      apiKey: "not-used-cn2-pays-by-credit",
      fetch: async (input, init) => {
        const res = await payingFetch(input, init);
        seen.push(res.clone());
        return res;
      },
      maxRetries: 0,
    });
    const completion = await openai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] });
    expect(completion.choices[0]!.message.content).toContain("demo upstream");
    const stream = await openai.chat.completions.create({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "Hello" }] });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    expect(text).toContain("demo upstream");
    const paid = seen.map((r) => Receipt.fromResponse(r) as Record<string, unknown>);
    expect(paid.map((r) => [r.method, r.amountMicros, r.refunded])).toEqual([["credit", PRICE, false], ["credit", PRICE, false]]);
    const wallet = await getBalance({ baseUrl, privateKey: key });
    expect(wallet.balanceMicros).toBe(10_000 - 2 * PRICE);
    expect(wallet.history.map((h) => [h.kind, h.amountMicros])).toEqual([["debit", PRICE], ["debit", PRICE], ["topup", 10_000]]);
  });

  it("an empty wallet gets a clear 402 (insufficient_balance) through the SDK", async () => {
    const broke = await generateBuyerKey("P-256");
    const openai = new OpenAI({ baseURL: `${baseUrl}/openai/v1`, apiKey: "x", fetch: createPayingFetch({ baseUrl, privateKey: broke }), maxRetries: 0 });
    const err = await openai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(402);
    expect(JSON.stringify((err as InstanceType<typeof OpenAI.APIError>).error)).toContain("insufficient_balance");
  });

  it("only cn2's origin is paid: other origins' 402s are passed through untouched", async () => {
    const other = http.createServer((_req, res) => {
      res.writeHead(402, { "www-authenticate": 'Payment id="x", realm="evil", method="credit", intent="charge", request="e30"' });
      res.end();
    });
    await new Promise<void>((resolve) => other.listen(0, "127.0.0.1", resolve));
    const otherUrl = `http://127.0.0.1:${(other.address() as AddressInfo).port}/`;
    const res = await createPayingFetch({ baseUrl, privateKey: key })(otherUrl);
    expect(res.status).toBe(402);
    await new Promise<void>((resolve) => other.close(() => resolve()));
  });
});

describe("server: the tempo offer", () => {
  it("configured, a 402 offers tempo beside credit, in USDC base units (= micro-dollars); the credit client still pays with credit", async () => {
    const res = await fetch(`${baseUrl}/openai/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] }),
    });
    expect(res.status).toBe(402);
    const offers = Challenge.fromResponseList(res);
    expect(offers.map((c) => c.method)).toEqual(["credit", "tempo"]);
    expect(offers[0]!.request).toMatchObject({ amount: String(PRICE), currency: "usd" });
    expect(offers[1]!.request).toMatchObject({ amount: String(PRICE), recipient: TEMPO_RECIPIENT });
  });
});

describe("buyer CLI", () => {
  const cli = (args: string[], extraEnv: Record<string, string> = {}) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      // Node 22 from the node@22 dev dependency: type stripping needs it.
      const child = spawn(join(REPO_ROOT, "node_modules", ".bin", "node"), [join(REPO_ROOT, "tools", "buyer-cli.ts"), ...args], {
        cwd: REPO_ROOT, env: { ...process.env, CN2_URL: baseUrl, NODE_NO_WARNINGS: "1", ...extraEnv },
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (c) => (stdout += c));
      child.stderr.on("data", (c) => (stderr += c));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });

  it("keygen, topup (dev faucet), balance, call: a paid request from the shell", async () => {
    const dir = await mkdtemp(join(tmpdir(), "cn2-buyer-"));
    const keyFile = join(dir, "key.json");
    const env_ = { CN2_BUYER_KEY: keyFile };
    const keygen = await cli(["keygen"], env_);
    expect(keygen.code, keygen.stderr).toBe(0);
    expect(((await stat(keyFile)).mode & 0o777).toString(8)).toBe("600");
    const key = await loadBuyerKey(await readFile(keyFile, "utf8"));
    expect(keygen.stdout).toContain(key.buyerId);
    expect(keygen.stdout).not.toContain(key.file.privateJwk.d!);
    expect((await cli(["keygen"], env_)).code).toBe(2); // never overwrites silently
    const topup = await cli(["topup", "0.01"], env_);
    expect(topup.code, topup.stderr).toBe(0);
    expect(topup.stdout).toContain("balance $0.010000");
    const call = await cli(["call", "/openai/v1/chat/completions", JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })], env_);
    expect(call.code, call.stderr).toBe(0);
    expect(call.stderr).toContain("HTTP 200");
    expect(call.stderr).toContain("paid $0.002000 by credit");
    expect(JSON.parse(call.stdout).choices[0].message.content).toContain("demo upstream");
    const balance = await cli(["balance", "--json"], env_);
    expect(balance.code, balance.stderr).toBe(0);
    expect(JSON.parse(balance.stdout)).toMatchObject({ buyerId: key.buyerId, balanceMicros: 8000 });
    expect((await getBalance({ baseUrl, privateKey: key })).balanceMicros).toBe(8000);
  }, 60_000);
});
