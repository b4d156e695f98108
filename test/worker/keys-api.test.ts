// S2/S3/M3: a key's life through the API: upload, list, edit, drain, disable, inspect,
// remove; removal leaves no trace in KV, the pool snapshot or the object's storage. Key ids
// are derived from their seller (core/key-id.ts): another seller's id is never looked up.
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import type { KeyView, PoolSnapshot } from "../../schema/wire.ts";
import type { Env } from "../../core/env.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { encryptCredential } from "../../core/vault.ts";
import { newKeyId } from "../../core/key-id.ts";
import { addKey, api, as, baseConfig, call, chat, inspect, keyIdFor, removeAllKeys, resetDemo, signIn, type TestSeller } from "./helpers.ts";

const e = env as unknown as Env;
const pool = async (region = "us", tier = "standard") => ((await (await api(`/ops/pools/openai/${region}/${tier}`)).json()) as { pool: PoolSnapshot }).pool;

describe("key lifecycle", () => {
  beforeEach(async () => {
    await resetDemo();
    await removeAllKeys();
  });

  it("PR5: upload, list by seller, read and edit a key's configuration", async () => {
    const alice = await signIn("alice");
    const bob = await signIn("bob");
    const a = await addKey({ seller: alice, config: { priceMicros: 1234, allowedRoutes: ["POST /v1/chat/completions"] } });
    const b = await addKey({ seller: bob });
    expect(a.key).toMatchObject({ keyId: a.keyId, sellerId: alice.id, home: "default", config: { priceMicros: 1234, region: "us", tier: "standard", status: "active" }, health: { state: "healthy" } });
    expect(JSON.stringify(a.key)).not.toContain(a.credential);
    // Each seller lists its own keys only (from Postgres, row-level security).
    const aliceKeys = (await (await as(alice, "/api/keys")).json()) as { keys: KeyView[] };
    expect(aliceKeys.keys.map((k) => k.keyId)).toEqual([a.keyId]);
    expect(aliceKeys.keys[0]).toMatchObject({ sellerId: alice.id, config: { priceMicros: 1234, allowedRoutes: ["POST /v1/chat/completions"] }, health: { state: "healthy" } });
    const bobKeys = (await (await as(bob, "/api/keys")).json()) as { keys: KeyView[] };
    expect(bobKeys.keys.map((k) => k.keyId)).toEqual([b.keyId]);
    const edited = await as(alice, `/api/keys/${a.keyId}`, { method: "PATCH", json: { priceMicros: 999, requestsPerMinute: 5 } });
    expect(((await edited.json()) as { key: KeyView }).key.config).toMatchObject({ priceMicros: 999, requestsPerMinute: 5, allowedRoutes: ["POST /v1/chat/completions"] });
    // The edit reached the pool before the API answered (S3: next request).
    expect((await pool()).members.find((m) => m.keyId === a.keyId)?.priceMicros).toBe(999);
    const res = await chat({ headers: { "cn2-max-price": "999" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("cn2-price-micros")).toBe("999");
  });

  it("an EU key lives in the EU home and the EU pool", async () => {
    const k = await addKey({ config: { region: "eu" } });
    expect(k.key.home).toBe("eu");
    expect((await pool("eu")).members.map((m) => m.keyId)).toEqual([k.keyId]);
  });

  it("M3: ops inspect shows limiter, health, in-flight and unflushed earnings, never the secret", async () => {
    const k = await addKey({ config: { priceMicros: 700 } });
    for (let i = 0; i < 3; i++) await (await chat()).text();
    const info = await inspect(k.keyId);
    expect(info).toMatchObject({
      keyId: k.keyId,
      limiter: { windowCount: 3, requestsPerMinute: 1000 },
      inFlight: 0,
      // Operator traffic (the ops token) is unpaid, so it earns nothing.
      earnings: { unflushedMicros: 0, feeMicros: 0, servedCount: 3 },
      spend: { dayMicros: 2100, monthMicros: 2100 },
      bufferedMetadata: 3,
      credentialLoaded: true,
    });
    expect(JSON.stringify(info)).not.toContain(k.credential);
  });

  it("M3: drain stops new requests; disable takes the key out until the seller re-enables it", async () => {
    const k = await addKey();
    const drained = await api(`/ops/keys/${k.keyId}/drain`, { method: "POST" });
    expect(((await drained.json()) as { key: KeyView }).key.config.status).toBe("paused");
    expect((await pool()).members).toHaveLength(0);
    expect((await chat()).status).toBe(503);
    await api(`/api/keys/${k.keyId}`, { method: "PATCH", json: { status: "active" } });
    expect((await chat()).status).toBe(200);
    await api(`/ops/keys/${k.keyId}/disable`, { method: "POST" });
    expect((await inspect(k.keyId)).health).toMatchObject({ state: "disabled", reason: "disabled by operator" });
    expect((await pool()).members[0]?.state).toBe("disabled");
    expect((await chat()).status).toBe(503);
  });

  it("removal leaves no trace in KV, the pool snapshot or the key object's storage", async () => {
    const k = await addKey();
    await (await chat()).text();
    const del = await api(`/api/keys/${k.keyId}`, { method: "DELETE" });
    expect(await del.json()).toEqual({ deleted: true });
    expect(await e.VAULT.get(`key:${k.keyId}`)).toBeNull();
    const snapshot = await e.POOLS.get("pool:openai:us:standard");
    expect(snapshot).not.toContain(k.keyId);
    const left = await runInDurableObject(keyStub(e, k.keyId, "default"), async (_i, state) => {
      const tables = state.storage.sql.exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'sqlite_%'").toArray();
      return tables.flatMap((t) => state.storage.sql.exec(`SELECT * FROM "${t.name}"`).toArray());
    });
    expect(left).toEqual([]);
    expect((await api(`/api/keys/${k.keyId}`)).status).toBe(404);
    expect((await chat()).status).toBe(503);
  });
});

describe("key ids are derived from their seller (issue 10, item 5)", () => {
  beforeEach(() => removeAllKeys());

  /** Seller `by` creates a key under `keyId` (an envelope sealed to it, as a client would): the whole answer. */
  async function create(by: TestSeller, keyId: string) {
    const pub = ((await (await call("/api/vault/public-key")).json()) as { keys: { kid: string; jwk: JsonWebKey }[] }).keys[0]!;
    const envelope = await encryptCredential(`sk-demo-${by.email}`, pub, { sellerId: by.id, keyId });
    const res = await as(by, "/api/keys", { method: "POST", json: { keyId, envelope, config: baseConfig({ priceMicros: 4321 }) } });
    const requestId = res.headers.get("cn2-request-id")!;
    const headers = [...res.headers].filter(([name]) => name !== "cn2-request-id");
    // Byte for byte, but for the request id every answer has its own of.
    return { status: res.status, headers, body: (await res.text()).replaceAll(requestId, "<request id>") };
  }

  it("another seller's key id answers byte for byte like an id derived wrongly: 400 invalid_key_id, and the owner's key is untouched", async () => {
    const alice = await signIn("alice");
    const bob = await signIn("bob");
    const a = await addKey({ seller: alice, config: { priceMicros: 1234 } });
    // The owner's view of the key (its observation time moves on by itself).
    const viewOf = async () => {
      const { key } = (await (await as(alice, `/api/keys/${a.keyId}`)).json()) as { key: KeyView };
      return { ...key, trackRecord: { ...key.trackRecord!, observedMs: 0 } };
    };
    const before = { view: await viewOf(), pool: (await pool()).members };

    const taken = await create(bob, a.keyId);
    // Never used: derived for another seller id, and one of Bob's own with its tag changed.
    const wrong = await create(bob, await newKeyId(crypto.randomUUID()));
    const own = await keyIdFor(bob);
    const tweaked = await create(bob, own.slice(0, -1) + (own.endsWith("a") ? "b" : "a"));
    const malformed = await create(bob, "k_notmadeforanyone0");
    expect(taken.status).toBe(400);
    expect(JSON.parse(taken.body).error.code).toBe("invalid_key_id");
    expect(JSON.parse(taken.body).error.message).not.toContain(a.keyId);
    expect(taken).toEqual(wrong);
    expect(taken).toEqual(tweaked);
    expect(taken).toEqual(malformed);

    // Alice's key: same row, same object, same pool entry; Bob made nothing.
    expect(await viewOf()).toEqual(before.view);
    expect((await inspect(a.keyId)).sellerId).toBe(alice.id);
    expect((await pool()).members).toEqual(before.pool);
    expect(((await (await as(bob, "/api/keys")).json()) as { keys: KeyView[] }).keys).toEqual([]);

    // Bob's own derived id is taken; only Bob can then learn that it exists.
    expect((await create(bob, own)).status).toBe(201);
    const again = await create(bob, own);
    expect([again.status, JSON.parse(again.body).error.code]).toEqual([409, "key_exists"]);
  });
});
