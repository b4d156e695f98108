// PR2 from the seller's side: the CLI sends only ciphertext sealed to the signed-in seller,
// checks config before the network, and never prints its session token. A capture server
// stands in for cn2.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Envelope, KeyConfigInput } from "../../schema/wire.ts";
import { CliError, REPO_ROOT, apiClient } from "../../tools/api-client.ts";
import { addKey, parsePatch } from "../../tools/seller-cli.ts";
import { isKeyIdFor, newKeyId } from "../../core/key-id.ts";
import { decryptCredential, generateVaultKey, toBase64Url } from "../../core/vault.ts";

/** The seller's session token (a JWT in real life; opaque to the CLI). */
const TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJlLXRlc3QtN2YzYzlhMWU";
const SELLER_ID = "5b0c1a43-9d41-4b7e-8a1e-1f6f7f0c2b11";
const CREDENTIAL = "sk-proj-Lm4Nq8Rt2Vx6Zb0Dc3Fg7Hj1Kp5Ws9Ya";
const CONFIG: KeyConfigInput = { provider: "openai", priceMicros: 1000, requestsPerMinute: 60, maxConcurrent: 4, region: "eu" };

interface Captured { method: string; url: string; authorization: string | undefined; body: string }

const vault = await generateVaultKey("cli-test-1");
const captured: Captured[] = [];
/** What the capture server answers for routes other than the vault key; per test. */
let reply: (req: Captured) => { status: number; body: unknown } = () => ({ status: 500, body: {} });
let server: http.Server;
let baseUrl: string;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (body += chunk));
    req.on("end", () => {
      const entry: Captured = { method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization, body };
      captured.push(entry);
      const answer = entry.url === "/api/vault/public-key"
        ? { status: 200, body: { current: vault.publicKey.kid, keys: [vault.publicKey] } }
        : entry.url === "/api/me" && entry.authorization === `Bearer ${TOKEN}`
          ? { status: 200, body: { seller: { id: SELLER_ID, email: "seller@example.test" } } }
          : reply(entry);
      res.writeHead(answer.status, { "content-type": "application/json", "cn2-request-id": "req_test" });
      res.end(JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

beforeEach(() => {
  captured.length = 0;
  reply = () => ({ status: 500, body: { error: { code: "internal_error", message: "unexpected call" } } });
});

/** Echo a created key the way POST /api/keys does. */
function acceptCreate(req: Captured) {
  const { keyId, sellerId, config } = JSON.parse(req.body) as { keyId: string; sellerId: string; config: unknown };
  return { status: 201, body: { key: { keyId, sellerId, config, health: { state: "healthy", score: 1, latencyMs: 0, coolingUntil: 0 }, createdAt: 1 } } };
}

/** Fragments of the secret in every encoding a careless client might ship. */
function leakNeedles(secret: string): string[] {
  const bytes = new TextEncoder().encode(secret);
  const b64 = Buffer.from(bytes).toString("base64");
  const b64url = toBase64Url(bytes);
  const hex = Buffer.from(bytes).toString("hex");
  return [secret, secret.slice(8, 24), b64, b64.slice(4, 24), b64url, b64url.slice(4, 24), hex.slice(0, 32)];
}

describe("PR2: the seller CLI sends only ciphertext", () => {
  it("addKey uploads an envelope that only the vault key opens", async () => {
    reply = acceptCreate;
    const client = apiClient({ baseUrl, sellerToken: TOKEN });
    const key = await addKey(client, { credential: CREDENTIAL, config: CONFIG });

    const post = captured.find((c) => c.method === "POST" && c.url === "/api/keys");
    expect(post, "POST /api/keys was sent").toBeDefined();
    expect(post!.authorization).toBe(`Bearer ${TOKEN}`);
    // Derived for the signed-in seller (core/key-id.ts), inside the database's key id shape.
    expect(key.keyId).toMatch(/^k_[a-z2-7]{26}$/);
    expect(await isKeyIdFor(SELLER_ID, key.keyId)).toBe(true);

    // Nothing the CLI sent (any request) holds the secret in any encoding.
    const everything = captured.map((c) => `${c.url}\n${c.body}`).join("\n");
    for (const needle of leakNeedles(CREDENTIAL)) expect(everything).not.toContain(needle);

    const sent = JSON.parse(post!.body) as { keyId: string; sellerId: string; envelope: Envelope; config: Record<string, unknown> };
    expect(Object.keys(sent).sort()).toEqual(["config", "envelope", "keyId", "sellerId"]);
    expect(sent.envelope.kid).toBe("cli-test-1");
    // Sealed to the signed-in seller (GET /api/me), whose id the envelope binds.
    expect(sent.sellerId).toBe(SELLER_ID);
    // The envelope opens with the vault's private key and the AAD it was bound to...
    const opened = await decryptCredential(sent.envelope, [vault.privateKey], { sellerId: sent.sellerId, keyId: sent.keyId });
    expect(opened).toBe(CREDENTIAL);
    // ...and only for that key id.
    await expect(decryptCredential(sent.envelope, [vault.privateKey], { sellerId: SELLER_ID, keyId: await newKeyId(SELLER_ID) })).rejects.toMatchObject({ code: "decrypt_failed" });
  });

  it("bad config fails locally, before any request", async () => {
    const client = apiClient({ baseUrl, sellerToken: TOKEN });
    const bad: unknown[] = [
      { ...CONFIG, region: "mars" },
      { ...CONFIG, priceMicros: 1.5 },
      { ...CONFIG, provider: "nope" },
      { ...CONFIG, allowedRoutes: ["chat completions please"] },
      { ...CONFIG, surprise: true },
    ];
    for (const config of bad) {
      const err = await addKey(client, { credential: CREDENTIAL, config: config as KeyConfigInput }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CliError);
      expect(String(err)).not.toContain(CREDENTIAL);
    }
    const region = await addKey(client, { credential: CREDENTIAL, config: { ...CONFIG, region: "mars" as "eu" } }).catch((e: Error) => e.message);
    expect(region).toMatch(/region/);
    await expect(addKey(client, { credential: CREDENTIAL, sellerId: "bad seller!", config: CONFIG })).rejects.toBeInstanceOf(CliError);
    await expect(addKey(client, { credential: "two\nlines", config: CONFIG })).rejects.toBeInstanceOf(CliError);
    await expect(addKey(client, { credential: "", config: CONFIG })).rejects.toBeInstanceOf(CliError);
    expect(captured).toEqual([]);
  });
});

describe("seller CLI process", () => {
  /** Run tools/seller-cli.ts on Node 22 against the capture server. */
  function runCli(args: string[], stdin = ""): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const node = join(REPO_ROOT, "node_modules", ".bin", "node");
    const child = spawn(node, [join(REPO_ROOT, "tools", "seller-cli.ts"), ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, CN2_URL: baseUrl, CN2_SELLER_TOKEN: TOKEN, NODE_NO_WARNINGS: "1" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    child.stdin.end(stdin);
    return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
  }

  it("add: a server failure exits non-zero with one line, no token and no credential", async () => {
    // A careless server echoing the caller's token: the CLI must still not print it.
    reply = () => ({ status: 422, body: { error: { code: "decrypt_failed", message: `cannot open envelope for Bearer ${TOKEN}` } } });
    const r = await runCli(["add", "--provider", "openai", "--price-micros", "1000", "--rpm", "60", "--concurrency", "4", "--region", "eu"], `${CREDENTIAL}\n`);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^error: decrypt_failed: /);
    for (const text of [r.stdout, r.stderr]) {
      expect(text).not.toContain(TOKEN);
      for (const needle of leakNeedles(CREDENTIAL)) expect(text).not.toContain(needle);
    }
    // The trailing newline was trimmed before sealing: the server got the exact secret.
    const post = captured.find((c) => c.method === "POST")!;
    const sent = JSON.parse(post.body) as { keyId: string; envelope: Envelope };
    expect(await decryptCredential(sent.envelope, [vault.privateKey], { sellerId: SELLER_ID, keyId: sent.keyId })).toBe(CREDENTIAL);
  });

  it("list: an auth failure prints the API error, never the token", async () => {
    reply = () => ({ status: 401, body: { error: { code: "unauthorized", message: "bad token" } } });
    const r = await runCli(["list"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: unauthorized: bad token/);
    expect(`${r.stdout}${r.stderr}`).not.toContain(TOKEN);
  });

  it("add with bad config exits before reading the secret or calling the API", async () => {
    const r = await runCli(["add", "--provider", "openai", "--price-micros", "1000", "--rpm", "60", "--concurrency", "4", "--region", "mars"], CREDENTIAL);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/region/);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(captured).toEqual([]);
  });

  it("unreachable server: one line, no token", async () => {
    const child = spawn(join(REPO_ROOT, "node_modules", ".bin", "node"), [join(REPO_ROOT, "tools", "seller-cli.ts"), "list"], {
      cwd: REPO_ROOT,
      env: { ...process.env, CN2_URL: "http://127.0.0.1:9", CN2_SELLER_TOKEN: TOKEN },
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d));
    child.stderr.on("data", (d: Buffer) => (out += d));
    const code = await new Promise((resolve) => child.on("close", resolve));
    expect(code).toBe(1);
    expect(out).toMatch(/^error: unreachable: /);
    expect(out).not.toContain(TOKEN);
  });
});

describe("seller CLI login", () => {
  async function runWithSession(args: string[], sessionFile: string, stdin = "") {
    const child = spawn(join(REPO_ROOT, "node_modules", ".bin", "node"), [join(REPO_ROOT, "tools", "seller-cli.ts"), ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, CN2_URL: baseUrl, CN2_SELLER_TOKEN: "", CN2_SESSION_FILE: sessionFile, NODE_NO_WARNINGS: "1" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    child.stdin.end(stdin);
    const code = await new Promise((resolve) => child.on("close", resolve));
    return { code, stdout, stderr };
  }

  it("dev: login signs in by email, saves the session (0600), later commands use it, logout forgets it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "cn2-cli-"));
    const file = join(dir, "session.json");
    reply = (req) => {
      if (req.url === "/auth/dev/sign-in") {
        const { email } = JSON.parse(req.body) as { email: string };
        return email === "me@example.test" ? { status: 200, body: { token: TOKEN, expiresAt: 2_000_000_000, seller: { id: SELLER_ID, email } } } : { status: 400, body: {} };
      }
      if (req.url === "/api/keys" && req.authorization === `Bearer ${TOKEN}`) return { status: 200, body: { keys: [] } };
      return { status: 401, body: { error: { code: "unauthorized", message: "no" } } };
    };
    const r = await runWithSession(["login", "--email", "me@example.test"], file);
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain(`seller ${SELLER_ID}`);
    expect(r.stdout).not.toContain(TOKEN);
    const signIn = captured.find((c) => c.url === "/auth/dev/sign-in")!;
    expect(signIn.method).toBe("POST");
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(file, "utf8"))).toMatchObject({ sessions: { [baseUrl]: { token: TOKEN, sellerId: SELLER_ID } } });

    const list = await runWithSession(["list"], file);
    expect(list.stdout).toContain("no keys yet");
    expect(captured.filter((c) => c.url === "/api/keys").every((c) => c.authorization === `Bearer ${TOKEN}`)).toBe(true);
    expect(captured.some((c) => c.authorization === `Bearer ${TOKEN}` && c.url.startsWith("/ops/"))).toBe(false);

    await runWithSession(["logout"], file);
    await expect(stat(file)).rejects.toMatchObject({ code: "ENOENT" });
    const after = await runWithSession(["list"], file);
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(/^error: not_signed_in: .*npm run seller -- login/);
    await rm(dir, { recursive: true, force: true });
   }, 30_000);

  it("production: without a dev sign-in, login says to paste a token; --token checks it before saving", async () => {
    const dir = await mkdtemp(join(tmpdir(), "cn2-cli-"));
    const file = join(dir, "session.json");
    reply = (req) => req.url === "/auth/dev/sign-in" ? { status: 404, body: { error: { code: "not_found", message: "dev sign-in is disabled here" } } } : { status: 401, body: { error: { code: "unauthorized", message: "no" } } };
    const refused = await runWithSession(["login"], file);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/login --token/);
    const bad = await runWithSession(["login", "--token"], file, "not-a-token\n");
    expect(bad.code).toBe(2);
    const wrong = await runWithSession(["login", "--token"], file, "aaa.bbb.ccc\n");
    expect(wrong.code).toBe(1);
    await expect(stat(file)).rejects.toMatchObject({ code: "ENOENT" });
    const ok = await runWithSession(["login", "--token"], file, `${TOKEN}\n`);
    expect(ok.stderr).toBe("");
    expect(JSON.parse(await readFile(file, "utf8")).sessions[baseUrl].token).toBe(TOKEN);
    await rm(dir, { recursive: true, force: true });
   }, 30_000);
});

describe("seller CLI parsing", () => {
  it("newKeyId makes k_ + 16 random + 10 derived base32 characters, bound to the seller it was made for", async () => {
    const other = "0e5d7f6a-2b4c-4d8e-9f10-a1b2c3d4e5f6";
    const ids = new Set(await Promise.all(Array.from({ length: 200 }, () => newKeyId(SELLER_ID))));
    expect(ids.size).toBe(200);
    for (const id of ids) {
      expect(id).toMatch(/^k_[a-z2-7]{26}$/);
      expect(id).toMatch(/^k_[a-z0-9]{12,32}$/); // the database's check
      expect(await isKeyIdFor(SELLER_ID, id)).toBe(true);
      expect(await isKeyIdFor(other, id)).toBe(false);
    }
    // One character of the nonce or the tag changed: no longer this seller's.
    const [id] = ids;
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "a" ? "b" : "a") + s.slice(i + 1);
    expect(await isKeyIdFor(SELLER_ID, flip(id!, 2))).toBe(false);
    expect(await isKeyIdFor(SELLER_ID, flip(id!, 27))).toBe(false);
    for (const bad of [undefined, 42, "", "k_abc", `${id}a`, id!.toUpperCase()]) expect(await isKeyIdFor(SELLER_ID, bad)).toBe(false);
  });

  it("addKey refuses a key id not made for the seller before any request", async () => {
    const client = apiClient({ baseUrl, sellerToken: TOKEN });
    const foreign = await newKeyId("0e5d7f6a-2b4c-4d8e-9f10-a1b2c3d4e5f6");
    await expect(addKey(client, { credential: CREDENTIAL, config: CONFIG, sellerId: SELLER_ID, keyId: foreign })).rejects.toThrow(/key id made for your seller account/);
    await expect(addKey(client, { credential: CREDENTIAL, config: CONFIG, sellerId: SELLER_ID, keyId: "k_abcdefghijklmnop" })).rejects.toThrow(/key id made for your seller account/);
    expect(captured.filter((c) => c.url === "/api/keys")).toHaveLength(0);
  });

  it("set: field=value pairs become a validated patch", () => {
    expect(parsePatch(["priceMicros=1200", "dailyBudgetMicros=none", "allowedRoutes=POST /v1/chat/completions, GET /v1/models", "status=paused"])).toEqual({
      priceMicros: 1200,
      dailyBudgetMicros: null,
      allowedRoutes: ["POST /v1/chat/completions", "GET /v1/models"],
      status: "paused",
    });
    expect(() => parsePatch(["provider=anthropic"])).toThrow(CliError);
    expect(() => parsePatch(["region=mars"])).toThrow(/region/);
    expect(() => parsePatch(["requestsPerMinute=fast"])).toThrow(/whole number/);
    expect(() => parsePatch([])).toThrow(CliError);
  });
});
