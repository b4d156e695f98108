// PR3/PR13: the decrypted credential lives only in the key object's memory. After a
// run through success and failure paths, it is in no storage, KV entry, log line,
// error or response; and no request or response body is stored.
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { addKey, api, call, chat, demo, OPS, PROXY, persisted, removeAllKeys, resetDemo } from "./helpers.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { poolStub } from "../../objects/pool-index/stub.ts";
import type { Env } from "../../core/env.ts";

const e = env as unknown as Env;
const CONSOLE = ["log", "info", "warn", "error", "debug"] as const;

async function dumpObject(stub: DurableObjectStub): Promise<string> {
  return runInDurableObject(stub, async (_instance, state) => {
    const tables = state.storage.sql.exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'sqlite_%'").toArray();
    const rows = tables.map((t) => ({ [t.name]: state.storage.sql.exec(`SELECT * FROM "${t.name}"`).toArray() }));
    const kv = [...(await state.storage.list()).entries()];
    return JSON.stringify({ rows, kv });
  });
}

async function dumpKv(ns: KVNamespace): Promise<string> {
  const out: unknown[] = [];
  for (const k of (await ns.list()).keys) out.push(k, await ns.get(k.name));
  return JSON.stringify(out);
}

describe("secrets and bodies stay out of every sink", () => {
  let logged: string[];
  beforeEach(async () => {
    await resetDemo();
    await removeAllKeys();
    logged = [];
    for (const level of CONSOLE) vi.spyOn(console, level).mockImplementation((...args: unknown[]) => void logged.push(args.map(String).join(" ")));
  });
  afterEach(() => vi.restoreAllMocks());

  it("PR3: the plaintext credential appears in no storage, KV, log line, error or response", async () => {
    const secret = "sk-demo-SECRET-4f1c9e7b2a";
    // Cheaper, so with two keys the router always tries it first.
    const { keyId } = await addKey({ credential: secret, config: { region: "eu", priceMicros: 1 } });
    const other = await addKey({ config: { region: "eu", priceMicros: 1000 } });
    const responses: string[] = [];
    const record = async (res: Response) => {
      responses.push(JSON.stringify([...res.headers]), await res.text().catch((err) => String(err)));
    };
    // Success, streaming, refusal, upstream failure, disablement, inspection, listing.
    await record(await chat());
    await record(await chat({ stream: true }));
    await record(await call("/openai/v1/nope", { method: "POST", headers: { "cn2-proxy-token": PROXY }, body: "{}" }));
    await demo("/__demo/behaviour", { credential: secret, status: 500, times: 2 });
    for (let i = 0; i < 2; i++) await record(await chat());
    await demo("/__demo/behaviour", { credential: secret, status: 401 });
    for (let i = 0; i < 4; i++) await record(await chat());
    await record(await api(`/ops/keys/${keyId}`));
    await record(await api(`/api/keys/${keyId}`));
    await record(await api("/api/keys"));
    await record(await api(`/ops/pools/openai/eu/standard`));
    await record(await api("/api/vault/public-key"));

    await persisted(keyStub(e, keyId, "eu"));
    await persisted(keyStub(e, other.keyId, "eu"));
    const sinks = {
      keyObject: await dumpObject(keyStub(e, keyId, "eu")),
      otherKeyObject: await dumpObject(keyStub(e, other.keyId, "eu")),
      pool: await dumpObject(poolStub(e, "openai:eu:standard")),
      vaultKv: await dumpKv(e.VAULT),
      poolsKv: await dumpKv(e.POOLS),
      logs: logged.join("\n"),
      responses: responses.join("\n"),
    };
    // The logs did capture the key objects' own lines (the spy sees them).
    expect(sinks.logs).toContain("key.disabled");
    // The ciphertext is there: the search below would find the secret if it leaked.
    expect(sinks.vaultKv).toContain(keyId);
    const needles = [secret, btoa(secret), btoa(secret).replace(/=+$/, "").replaceAll("+", "-").replaceAll("/", "_"), "SECRET-4f1c9e7b2a"];
    for (const [sink, text] of Object.entries(sinks)) {
      for (const needle of needles) expect(text.includes(needle), `${sink} contains the credential`).toBe(false);
    }
    // PR4: no vault private key material is served either.
    expect(sinks.responses).not.toMatch(/"d"\s*:/);
  });

  it("PR13: no request or response body reaches any sink", async () => {
    const marker = "BODY-MARKER-93f2";
    const { keyId } = await addKey();
    const res = await call("/openai/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json", "cn2-proxy-token": PROXY },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: marker }] }),
    });
    const answer = await res.text();
    expect(res.status).toBe(200);
    const replyFragment = (JSON.parse(answer) as { choices: { message: { content: string } }[] }).choices[0]!.message.content.slice(0, 20);
    await persisted(keyStub(e, keyId, "default"));
    const sinks = [await dumpObject(keyStub(e, keyId, "default")), await dumpKv(e.VAULT), await dumpKv(e.POOLS), logged.join("\n")].join("\n");
    expect(sinks).not.toContain(marker);
    expect(sinks).not.toContain(replyFragment);
    // What is kept is metadata only (PR12).
    const stored = await runInDurableObject(keyStub(e, keyId, "default"), (_i, state) => state.storage.sql.exec("SELECT * FROM request_meta").toArray());
    expect(stored).toHaveLength(1);
    expect(Object.keys(stored[0]!).sort()).toEqual(["amount_micros", "at", "duration_ms", "latency_ms", "method", "outcome", "request_id", "route", "status"]);
  });
});
