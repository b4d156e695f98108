// S9, PR25, PR24: a seller can export its data (JSON and CSV), correct it, object to the
// statistics and close the account. Closing removes every key everywhere (KV ciphertext,
// key object storage, pool snapshot), deletes the personal data and the Supabase auth user
// (Admin API faked on loopback), and keeps the earnings rows 7 years under a pseudonym.
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Env } from "../../core/env.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { addKey, as, call, keyRequest, ownerDb, signIn } from "./helpers.ts";

const e = env as unknown as Env & { SUPABASE_URL: string };

/** Every row of every table in a key object's SQLite storage. */
const objectRows = (keyId: string, home: "default" | "eu") =>
  runInDurableObject(keyStub(e, keyId, home), async (_i, state) => {
    const tables = state.storage.sql.exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'sqlite_%'").toArray();
    return tables.flatMap((t) => state.storage.sql.exec(`SELECT * FROM "${t.name}"`).toArray());
  });

async function allKv(ns: KVNamespace): Promise<string> {
  const out: string[] = [];
  for (const k of (await ns.list()).keys) out.push(k.name, JSON.stringify(k.metadata ?? null), (await ns.get(k.name)) ?? "");
  return out.join("\n");
}

describe("export (S9, PR25)", () => {
  it("PR25: JSON holds the account, key configs, payout preference, KYC status, earnings and payouts", async () => {
    const s = await signIn("exporter");
    const k = await addKey({ seller: s, config: { priceMicros: 1000, allowedRoutes: ["POST /v1/chat/completions"], routePrices: [{ route: "POST /v1/embeddings", priceMicros: 5 }] } });
    await keyStub(e, k.keyId, "default").fetch(keyRequest({ paidMicros: 1000 }));
    await keyStub(e, k.keyId, "default").flushEarnings();
    await as(s, "/api/payout", { method: "PUT", json: { method: "stripe_connect", stripeAccountId: "acct_1Exporter000001" } });
    await as(s, "/api/me", { method: "PATCH", json: { displayName: "Exporting Ltd" } });

    const res = await as(s, "/api/export?format=json");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-disposition")).toMatch(/^attachment; filename="cn2-export-\d{4}-\d{2}-\d{2}\.json"$/);
    const data = (await res.json()) as Record<string, any>;
    expect(data.seller).toMatchObject({ id: s.id, email: s.email, displayName: "Exporting Ltd", statsOptOut: false });
    expect(data.kyc).toEqual({ status: "not_started", updatedAt: null });
    expect(data.payoutPreference).toMatchObject({ method: "stripe_connect", stripeAccountId: "acct_1Exporter000001" });
    expect(data.keys).toEqual([expect.objectContaining({ keyId: k.keyId, home: "default", config: expect.objectContaining({ provider: "openai", priceMicros: 1000, allowedRoutes: ["POST /v1/chat/completions"], routePrices: [{ route: "POST /v1/embeddings", priceMicros: 5 }] }) })]);
    expect(data.earnings).toEqual([expect.objectContaining({ keyId: k.keyId, grossMicros: 1000, feeMicros: 100, netMicros: 900, requestCount: 1 })]);
    expect(data.payouts).toEqual([]);
    // Never the credential.
    expect(JSON.stringify(data)).not.toContain(k.credential);
  });

  it("PR25: CSV, one table per file, with a header row and spreadsheet-safe cells", async () => {
    const s = await signIn("csv");
    const k = await addKey({ seller: s, config: { priceMicros: 2000, allowedRoutes: ["POST /v1/chat/completions", "GET /v1/models"] } });
    for (let i = 0; i < 2; i++) await keyStub(e, k.keyId, "default").fetch(keyRequest({ paidMicros: 2000 }));
    await keyStub(e, k.keyId, "default").flushEarnings();

    const earnings = await as(s, "/api/export?format=csv&data=earnings");
    expect(earnings.headers.get("content-type")).toBe("text/csv; charset=utf-8");
    const lines = (await earnings.text()).trimEnd().split("\r\n");
    expect(lines[0]).toBe("id,key_id,period_start,period_end,gross_micros,fee_micros,net_micros,request_count,recorded_at");
    expect(lines).toHaveLength(2);
    expect(lines[1]!.split(",").slice(1, 2)).toEqual([k.keyId]);
    expect(lines[1]!.split(",").slice(4, 8)).toEqual(["4000", "400", "3600", "2"]);

    const keys = (await (await as(s, "/api/export?format=csv&data=keys")).text()).trimEnd().split("\r\n");
    expect(keys[0]!.startsWith("key_id,provider,region,tier,status,price_micros,")).toBe(true);
    expect(keys[1]).toContain(`${k.keyId},openai,us,standard,active,2000,`);
    expect(keys[1]).toContain("POST /v1/chat/completions | GET /v1/models");

    const payouts = (await (await as(s, "/api/export?format=csv&data=payouts")).text()).trimEnd().split("\r\n");
    expect(payouts).toEqual(["id,method,destination,amount_micros,status,requested_at,completed_at"]);
    const bad = await as(s, "/api/export?format=xml");
    expect(bad.status).toBe(400);
  });
});

describe("correction and objection (S9)", () => {
  it("PR25: the display name is corrected and the seller opts out of (and back into) the statistics", async () => {
    const s = await signIn("corrector");
    const patched = await as(s, "/api/me", { method: "PATCH", json: { displayName: "  New Name  " } });
    expect(((await patched.json()) as { seller: { displayName: string } }).seller.displayName).toBe("New Name");
    expect((await as(s, "/api/me", { method: "PATCH", json: { email: "other@example.test" } })).status).toBe(400);
    expect(await (await as(s, "/api/stats-opt-out", { method: "POST" })).json()).toEqual({ statsOptOut: true });
    const [row] = await ownerDb((sql) => sql`select stats_opt_out, display_name from public.sellers where id = ${s.id}`);
    expect(row).toEqual({ stats_opt_out: true, display_name: "New Name" });
    expect(await (await as(s, "/api/stats-opt-out", { method: "POST", json: { optOut: false } })).json()).toEqual({ statsOptOut: false });
  });
});

describe("closing an account (S9, PR24, PR25)", () => {
  it("PR25: no trace of the key material remains in KV, object storage or the pool snapshot; earnings stay, pseudonymised; the auth user is deleted", async () => {
    const s = await signIn("closer");
    const other = await signIn("stays");
    const us = await addKey({ seller: s, credential: "sk-demo-closing-us-0123456789", config: { priceMicros: 1000, region: "us" } });
    const eu = await addKey({ seller: s, credential: "sk-demo-closing-eu-0123456789", config: { priceMicros: 1000, region: "eu" } });
    const kept = await addKey({ seller: other, config: { priceMicros: 1000, region: "us" } });
    // Earnings: one flushed already, one still in the key object at closing time.
    await keyStub(e, us.keyId, "default").fetch(keyRequest({ paidMicros: 1000 }));
    await keyStub(e, us.keyId, "default").flushEarnings();
    await keyStub(e, eu.keyId, "eu").fetch(keyRequest({ paidMicros: 1000 }));
    await as(s, "/api/payout", { method: "PUT", json: { method: "usdc_tempo", evmAddress: "0x52908400098527886E0F7030069857D2E4169EE7" } });
    expect(await e.POOLS.get("pool:openai:us:standard")).toContain(us.keyId);
    expect(await e.POOLS.get("pool:openai:eu:standard")).toContain(eu.keyId);

    // Cookie-authenticated deletion needs the CSRF header like every write.
    const cookie = `__Host-cn2_session=${s.token}`;
    expect((await call("/api/account", { method: "DELETE", headers: { cookie } })).status).toBe(403);
    const res = await call("/api/account", { method: "DELETE", headers: { cookie, "cn2-csrf": "1", origin: "https://cn2.test" } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ deleted: true, removedKeys: 2, pseudonymisedLedgerRows: 2, pseudonymisedPayouts: 0 });
    expect(res.headers.get("set-cookie")).toMatch(/^__Host-cn2_session=;.*Max-Age=0/);

    // KV: neither ciphertext nor registry entry; the pool snapshots no longer list the keys.
    for (const k of [us, eu]) {
      expect(await e.VAULT.get(`key:${k.keyId}`)).toBeNull();
      expect(await objectRows(k.keyId, k.key.home)).toEqual([]);
    }
    const kv = (await allKv(e.VAULT)) + (await allKv(e.POOLS));
    for (const needle of [us.keyId, eu.keyId, s.id, "sk-demo-closing"]) expect(kv).not.toContain(needle);
    expect(await e.POOLS.get("pool:openai:us:standard")).toContain(kept.keyId);

    // Postgres: the account is empty, keys and preferences gone, earnings kept under a pseudonym.
    await ownerDb(async (sql) => {
      const [seller] = await sql`select email, display_name, github_id, deleted_at from public.sellers where id = ${s.id}`;
      expect(seller).toMatchObject({ email: null, display_name: null, github_id: null });
      expect(seller!.deleted_at).not.toBeNull();
      expect(await sql`select 1 from public.keys where seller_id = ${s.id}`).toHaveLength(0);
      expect(await sql`select 1 from public.payout_preferences where seller_id = ${s.id}`).toHaveLength(0);
      const ledger = await sql`select seller_id, pseudonym, amount_micros from public.earnings_ledger where key_id in ${sql([us.keyId, eu.keyId])}`;
      expect(ledger).toHaveLength(2);
      expect(ledger.every((r) => r.seller_id === null && /^p_[0-9a-f]{32}$/.test(r.pseudonym) && r.pseudonym === ledger[0]!.pseudonym)).toBe(true);
      expect(ledger.map((r) => Number(r.amount_micros))).toEqual([1000, 1000]);
    });

    // The Supabase auth user is deleted (service-role key, Admin API).
    const deleted = (await (await fetch(`${e.SUPABASE_URL}/__fake/deleted`)).json()) as { deleted: string[] };
    expect(deleted.deleted).toContain(s.id);

    // The closed account can do nothing more; the other seller is untouched.
    expect((await as(s, "/api/keys")).status).toBe(410);
    expect(((await (await as(other, "/api/keys")).json()) as { keys: { keyId: string }[] }).keys.map((k) => k.keyId)).toEqual([kept.keyId]);
    // Repeating the call is safe (leftovers would be cleaned; nothing is left).
    const again = await as(s, "/api/account", { method: "DELETE" });
    expect(await again.json()).toMatchObject({ deleted: true, removedKeys: 0 });
  });
});
