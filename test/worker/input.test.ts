// M5: bad input always gets a clear 4xx with a stable code, and never changes state.
import fc from "fast-check";
import { beforeEach, describe, expect, it } from "vitest";
import { addKey, api, as, baseConfig, call, chat, keyIdFor, OPS, PROXY, removeAllKeys, signIn, testSeller } from "./helpers.ts";
import { encryptCredential, generateVaultKey } from "../../core/vault.ts";

async function expectError(res: Response, status: number, code: string) {
  const body = (await res.json()) as { error: { code: string; message: string }; requestId: string };
  expect(res.status, JSON.stringify(body)).toBe(status);
  expect(body.error.code).toBe(code);
  expect(body.error.message.length).toBeGreaterThan(5);
  expect(body.requestId).toMatch(/^req_/);
  expect(res.headers.get("cn2-request-id")).toBe(body.requestId);
}

describe("bad input on the proxy", () => {
  beforeEach(async () => {
    await removeAllKeys();
    await addKey();
  });

  it("unknown provider", async () => {
    await expectError(await call("/nosuch/v1/chat/completions", { method: "POST", headers: { "cn2-proxy-token": PROXY } }), 404, "unknown_provider");
  });
  it("invalid tier", async () => {
    await expectError(await chat({ headers: { "cn2-tier": "gold" } }), 400, "invalid_tier");
  });
  it("invalid price cap", async () => {
    for (const bad of ["-1", "1.5", "abc", "1e9", "9".repeat(20)]) await expectError(await chat({ headers: { "cn2-max-price": bad } }), 400, "invalid_max_price");
  });
  it("oversized headers", async () => {
    await expectError(await chat({ headers: { "x-padding": "a".repeat(40 * 1024) } }), 431, "headers_too_large");
  });
  it("oversized body", async () => {
    const res = await call("/openai/v1/chat/completions", { method: "POST", headers: { "cn2-proxy-token": PROXY, "content-type": "application/json" }, body: "x".repeat(10 * 1024 * 1024 + 1) });
    await expectError(res, 413, "body_too_large");
  });
  it("no open proxy: without payment or the ops token a request is not served", async () => {
    await expectError(await chat({ headers: { "cn2-proxy-token": "wrong" } }), 401, "unauthorized");
    const res = await call("/openai/v1/chat/completions", { method: "POST", body: "{}" });
    expect(res.headers.get("www-authenticate")).toMatch(/^Payment /);
    await expectError(res, 402, "payment_required");
  });
  it("a route no key allows", async () => {
    await expectError(await call("/openai/v1/fine_tuning/jobs", { method: "POST", headers: { "cn2-proxy-token": PROXY }, body: "{}" }), 403, "route_not_allowed");
  });
  it("an unknown path outside every prefix", async () => {
    await expectError(await call("/", {}), 404, "not_found");
  });
});

describe("bad input on the key API", () => {
  beforeEach(() => removeAllKeys());

  it("needs a signed-in seller (and /ops the ops token)", async () => {
    await expectError(await call("/api/keys"), 401, "unauthorized");
    await expectError(await call("/api/keys", { headers: { authorization: `Bearer ${OPS}` } }), 401, "unauthorized");
    await expectError(await call("/ops/keys/k_aaaaaaaaaaaa", { headers: { authorization: "Bearer nope" } }), 401, "unauthorized");
  });
  it("body that is not JSON", async () => {
    await expectError(await api("/api/keys", { method: "POST", body: "{not json" }), 400, "invalid_json");
  });
  it("bad config values name the field", async () => {
    const { keyId } = await addKey();
    for (const patch of [{ region: "mars" }, { priceMicros: 1.5 }, { priceMicros: -1 }, { requestsPerMinute: 0 }, { tier: "gold" }, { allowedRoutes: ["FETCH /x"] }, { unknownField: 1 }]) {
      const res = await api(`/api/keys/${keyId}`, { method: "PATCH", json: patch });
      await expectError(res, 400, "invalid_request");
    }
    await expectError(await api(`/api/keys/${keyId}`, { method: "PATCH", json: { provider: "anthropic" } }), 400, "invalid_request");
    await expectError(await api(`/api/keys/${keyId}`, { method: "PATCH", json: [1] }), 400, "invalid_request");
    // Nothing changed.
    const view = (await (await api(`/api/keys/${keyId}`)).json()) as { key: { config: unknown } };
    expect(view.key.config).toMatchObject(baseConfig());
  });
  it("unknown and malformed key ids", async () => {
    await expectError(await api("/api/keys/k_doesnotexist0"), 404, "key_not_found");
    await expectError(await api("/api/keys/..%2Fetc"), 400, "invalid_request");
    await expectError(await api("/ops/pools/openai/mars/standard"), 400, "invalid_request");
  });
  it("a key id that exists already", async () => {
    const { keyId } = await addKey();
    await expect(addKey({ keyId })).rejects.toThrow(/409/);
  });
  it("random JSON bodies never create a key and always get a coded 4xx", async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), async (body) => {
        const res = await api("/api/keys", { method: "POST", json: body });
        expect(res.status).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
        expect(((await res.json()) as { error: { code: string } }).error.code).toMatch(/^[a-z_]+$/);
      }),
      { numRuns: 60 },
    );
    expect(((await (await api("/api/keys")).json()) as { keys: unknown[] }).keys).toHaveLength(0);
  });
});

describe("vault binding at upload", () => {
  beforeEach(() => removeAllKeys());

  it("PR2: a ciphertext copied to another key id or another seller fails to decrypt and creates nothing", async () => {
    const a = await testSeller();
    const b = await signIn("thief");
    const pub = ((await (await call("/api/vault/public-key")).json()) as { current: string; keys: { kid: string; jwk: JsonWebKey }[] }).keys[0]!;
    const original = await keyIdFor(a);
    const envelope = await encryptCredential("sk-demo-copied", pub, { sellerId: a.id, keyId: original });
    const res = await as(a, "/api/keys", { method: "POST", json: { keyId: await keyIdFor(a), envelope, config: baseConfig() } });
    await expectError(res, 422, "decrypt_failed");
    // Another account uploading the envelope under one of its own key ids: bound to seller A.
    const moved = await as(b, "/api/keys", { method: "POST", json: { keyId: await keyIdFor(b), envelope, config: baseConfig() } });
    await expectError(moved, 422, "decrypt_failed");
    // Under the original key id: not a key id made for B (core/key-id.ts), refused before anything is looked up.
    await expectError(await as(b, "/api/keys", { method: "POST", json: { keyId: original, envelope, config: baseConfig() } }), 400, "invalid_key_id");
    // Claiming to be seller A does not help: the seller is the signed-in one.
    const claimed = await as(b, "/api/keys", { method: "POST", json: { keyId: await keyIdFor(b), sellerId: a.id, envelope, config: baseConfig() } });
    await expectError(claimed, 400, "invalid_request");
    expect(((await (await as(a, "/api/keys")).json()) as { keys: unknown[] }).keys).toHaveLength(0);
    expect(((await (await as(b, "/api/keys")).json()) as { keys: unknown[] }).keys).toHaveLength(0);
  });

  it("an envelope for a vault key we do not hold is refused", async () => {
    const stranger = await generateVaultKey("someone-else");
    const seller = await testSeller();
    const keyId = await keyIdFor(seller);
    const envelope = await encryptCredential("sk-demo-x", stranger.publicKey, { sellerId: seller.id, keyId });
    await expectError(await api("/api/keys", { method: "POST", json: { keyId, sellerId: seller.id, envelope, config: baseConfig() } }), 400, "vault_key_unknown");
  });
});
