// What the database itself refuses, whatever the API lets through: formats, money signs,
// payout rules, and columns that must never exist.
import { getAddress } from "viem";
import * as v from "valibot";
import type { Sql } from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asService, EvmAddressSchema, PayoutPreferenceSchema, StripeAccountIdSchema } from "../../schema/tables.ts";
import { createSeller, failure, hex64, newKeyId, newRequestId, sharedDb } from "./helpers.ts";

let sql: Sql;
let seller: { id: string; email: string };
beforeAll(async () => {
  sql = sharedDb(4);
  seller = await createSeller(sql, "constraints");
});
afterAll(() => sql.end());

const CHECKSUMMED = "0x52908400098527886E0F7030069857D2E4169EE7"; // EIP-55 test vector

describe("check constraints", () => {
  const insertKey = (columns: Record<string, unknown>) =>
    sql`insert into public.keys ${sql({ key_id: newKeyId(), seller_id: seller.id, provider: "openai", price_micros: 1000, requests_per_minute: 60, max_concurrent: 2, region: "us", ...columns } as Record<string, string | number | null>)}`;

  it("reject a bad key id, region, tier, provider, negative price or budget, bad routes", async () => {
    expect(await failure(() => insertKey({ key_id: "k_SHOUTING0000001" }))).toBe("23514");
    expect(await failure(() => insertKey({ key_id: "key_123456789012" }))).toBe("23514");
    expect(await failure(() => insertKey({ region: "mars" }))).toBe("23514");
    expect(await failure(() => insertKey({ region: "EU" }))).toBe("23514");
    expect(await failure(() => insertKey({ tier: "gold" }))).toBe("23514");
    expect(await failure(() => insertKey({ provider: "Open AI" }))).toBe("23514");
    expect(await failure(() => insertKey({ price_micros: -1 }))).toBe("23514");
    expect(await failure(() => insertKey({ daily_budget_micros: -5 }))).toBe("23514");
    expect(await failure(() => insertKey({ monthly_budget_micros: -5 }))).toBe("23514");
    expect(await failure(() => insertKey({ requests_per_minute: 0 }))).toBe("23514");
    expect(await failure(() => sql`insert into public.keys (key_id, seller_id, provider, price_micros, requests_per_minute, max_concurrent, region, allowed_routes)
                                   values (${newKeyId()}, ${seller.id}, 'openai', 1, 1, 1, 'us', ${["POST /v1/chat/completions", "rm -rf /"]})`)).toBe("23514");
    expect(await failure(() => sql`insert into public.keys (key_id, seller_id, provider, price_micros, requests_per_minute, max_concurrent, region, route_prices)
                                   values (${newKeyId()}, ${seller.id}, 'openai', 1, 1, 1, 'us', ${sql.json([{ route: "POST /v1/x", priceMicros: -3 }])})`)).toBe("23514");
    // An EU-tagged key whose object would live outside the EU.
    expect(await failure(() => insertKey({ region: "eu", home: "default" }))).toBe("23514");
    await insertKey({ region: "eu", home: "eu", route_prices: sql.json([{ route: "POST /v1/embeddings", priceMicros: 10 }]) as never });
  });

  it("PR6: reject a bad EVM address or Stripe account id, and a mismatched method", async () => {
    const pref = (columns: Record<string, string | null>) => sql`insert into public.payout_preferences ${sql({ seller_id: seller.id, ...columns })}`;
    expect(await failure(() => pref({ method: "usdc_tempo", evm_address: "0x1234" }))).toBe("23514");
    expect(await failure(() => pref({ method: "usdc_tempo", evm_address: "0xZZ908400098527886E0F7030069857D2E4169EE7" }))).toBe("23514");
    expect(await failure(() => pref({ method: "usdc_tempo", evm_address: "0x0000000000000000000000000000000000000000" }))).toBe("23514");
    expect(await failure(() => pref({ method: "stripe_connect", stripe_account_id: "acct_" }))).toBe("23514");
    expect(await failure(() => pref({ method: "stripe_connect", stripe_account_id: "ba_1032D82eZvKYlo2C" }))).toBe("23514");
    expect(await failure(() => pref({ method: "stripe_connect", evm_address: CHECKSUMMED }))).toBe("23514");
    expect(await failure(() => pref({ method: "paypal", stripe_account_id: "acct_1032D82eZvKYlo2C" }))).toBe("23514");
    await pref({ method: "usdc_tempo", evm_address: CHECKSUMMED });
    await sql`update public.payout_preferences set method = 'stripe_connect', evm_address = null, stripe_account_id = 'acct_1032D82eZvKYlo2C' where seller_id = ${seller.id}`;
  });

  it("PR6: the API's validation also checks the EIP-55 checksum", () => {
    expect(v.is(EvmAddressSchema, CHECKSUMMED)).toBe(true);
    expect(v.is(EvmAddressSchema, CHECKSUMMED.toLowerCase())).toBe(true);
    expect(v.is(EvmAddressSchema, CHECKSUMMED.replace("E7", "e7"))).toBe(false);
    expect(v.is(EvmAddressSchema, getAddress(`0x${hex64().slice(0, 40)}`))).toBe(true);
    expect(v.is(StripeAccountIdSchema, "acct_1032D82eZvKYlo2C")).toBe(true);
    expect(v.is(StripeAccountIdSchema, "acct_12")).toBe(false);
    expect(v.is(PayoutPreferenceSchema, { method: "usdc_tempo", evmAddress: CHECKSUMMED })).toBe(true);
    expect(v.is(PayoutPreferenceSchema, { method: "usdc_tempo", stripeAccountId: "acct_1032D82eZvKYlo2C" })).toBe(false);
  });

  it("reject negative money everywhere it is stored", async () => {
    const keyId = newKeyId();
    const ledger = (amount: number, fee: number) => sql`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
      values (${`${keyId}:${amount}:${fee}`}, ${keyId}, ${seller.id}, now(), now(), ${amount}, ${fee}, 1)`;
    expect(await failure(() => ledger(-1, 0))).toBe("23514");
    expect(await failure(() => ledger(10, -1))).toBe("23514");
    expect(await failure(() => ledger(10, 11))).toBe("23514");
    expect(await failure(() => sql`insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, status, amount_micros)
      values (${newRequestId()}, ${keyId}, 'openai', '/v1/x', 'GET', now(), 1, 200, -1)`)).toBe("23514");
    expect(await failure(() => sql`insert into public.clawbacks (dispute_id, request_id, key_id, seller_id, amount_micros)
      values (${`dsp_${hex64().slice(0, 32)}`}, ${newRequestId()}, ${keyId}, ${seller.id}, -1)`)).toBe("23514");
    expect(await failure(() => sql`insert into public.buyer_account_ids (buyer_id_hash, account_id) values ('not-a-hash', ${seller.id})`)).toBe("23514");
  });

  it("PR12: request metadata refuses query strings and unknown methods", async () => {
    const log = (route: string, method = "GET") => sql`insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, status)
      values (${newRequestId()}, ${newKeyId()}, 'openai', ${route}, ${method}, now(), 1, 200)`;
    expect(await failure(() => log("/v1/models?key=sk-leaked"))).toBe("23514");
    expect(await failure(() => log("v1/models"))).toBe("23514");
    expect(await failure(() => log("/v1/models", "BREW"))).toBe("23514");
  });

  it("webhooks: no credentials in the URL, a secret only in envelope shape, deliveries tied to their endpoint's seller", async () => {
    expect(await failure(() => sql`insert into public.webhook_endpoints (seller_id, url) values (${seller.id}, 'https://user:pw@hooks.example.test/')`)).toBe("23514");
    expect(await failure(() => sql`insert into public.webhook_endpoints (seller_id, url) values (${seller.id}, 'ftp://hooks.example.test/')`)).toBe("23514");
    expect(await failure(() => sql`insert into public.webhook_endpoints (seller_id, url, events) values (${seller.id}, 'https://hooks.example.test/', ${["key disabled"]})`)).toBe("23514");
    const [endpoint] = await sql`insert into public.webhook_endpoints (seller_id, url) values (${seller.id}, 'https://hooks.example.test/ok') returning id`;
    const plaintext = Buffer.from("whsec_this-is-a-plaintext-secret-0123456789");
    expect(await failure(() => sql`insert into public.webhook_signing_secrets (endpoint_id, kid, iv, ciphertext) values (${endpoint!.id}, 'wh-1', ${plaintext}, ${plaintext})`)).toBe("23514");
    const other = await createSeller(sql, "other");
    expect(await failure(() => sql`insert into public.webhook_deliveries (endpoint_id, seller_id, event_id, event_type, attempt)
      values (${endpoint!.id}, ${other.id}, 'evt_0123456789ab', 'key.disabled', 1)`)).toBe("23503");
  });

  it("PR9 PR19: disputes live in the buyer's wallet: no table holds one and no function names one; Postgres keeps only a refund's clawback, which names the dispute and never the buyer", async () => {
    expect((await sql`select to_regclass('public.disputes') as t`)[0]!.t).toBeNull();
    const naming = await sql`select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                              where n.nspname in ('public', 'internal', 'auth') and position('public.disputes' in p.prosrc) > 0`;
    expect(naming).toEqual([]);
    const clawbackColumns = await sql`select column_name from information_schema.columns where table_schema = 'public' and table_name = 'clawbacks' order by 1`;
    expect(clawbackColumns.map((c) => c.column_name)).toEqual(["amount_micros", "created_at", "dispute_id", "id", "key_id", "pseudonym", "request_id", "seller_id"]);
    // A clawback's dispute id is the wallet's (dsp_ + 32 hex), nothing a buyer could be named by.
    const clawback = (disputeId: string) => sql`insert into public.clawbacks (dispute_id, request_id, key_id, seller_id, amount_micros)
      values (${disputeId}, ${newRequestId()}, ${newKeyId()}, ${seller.id}, 1)`;
    expect(await failure(() => clawback(hex64()))).toBe("23514");
    expect(await failure(() => clawback("did:key:z6MkBuyerPrincipal"))).toBe("23514");
    // The closing and retention functions run (they once touched the dropped table).
    const [report] = await asService(sql, (tx) => tx`select public.run_retention() as r`);
    expect(report!.r).toHaveProperty("clawbacks");
    expect(report!.r).not.toHaveProperty("disputes");
  });
});

describe("payouts", () => {
  it("stay locked until KYC is approved, never exceed the balance, and go to the stored destination", async () => {
    const s = await createSeller(sql, "payee");
    const keyId = newKeyId();
    await sql`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
              values (${`${keyId}:1`}, ${keyId}, ${s.id}, now(), now(), 5000000, 500000, 10)`;
    const payout = (amount: number) => asService(sql, (tx) => tx`insert into public.payouts (seller_id, amount_micros) values (${s.id}, ${amount}) returning *`);
    expect(await failure(() => payout(1_000_000))).toBe("CN002");
    await sql`insert into public.kyc (seller_id, status) values (${s.id}, 'pending')`;
    expect(await failure(() => payout(1_000_000))).toBe("CN002");
    await asService(sql, (tx) => tx`update public.kyc set status = 'approved' where seller_id = ${s.id}`);
    expect(await failure(() => payout(1_000_000))).toBe("CN006");
    await sql`insert into public.payout_preferences (seller_id, method, evm_address) values (${s.id}, 'usdc_tempo', ${CHECKSUMMED})`;
    expect(await failure(() => payout(4_500_001))).toBe("CN003");
    expect(await failure(() => payout(0))).toBe("23514");
    const [first] = await payout(4_000_000);
    expect(first).toMatchObject({ method: "usdc_tempo", destination: CHECKSUMMED, status: "requested" });
    expect(await failure(() => payout(500_001))).toBe("CN003");
    // A failed payout gives the money back to the balance; a final status is final.
    await asService(sql, (tx) => tx`update public.payouts set status = 'failed', failure_code = 'account_closed', completed_at = now() where id = ${first!.id}`);
    expect(await failure(() => asService(sql, (tx) => tx`update public.payouts set status = 'paid' where id = ${first!.id}`))).toBe("CN001");
    const [second] = await payout(4_500_000);
    expect(second!.status).toBe("requested");
    expect(await failure(() => sql`delete from public.payouts where id = ${second!.id}`)).toBe("CN001");
  });
});

describe("schema hygiene", () => {
  const columns = () => sql<{ table: string; column: string }[]>`
    select c.table_name as table, c.column_name as column from information_schema.columns c
     where c.table_schema = 'public' order by 1, 2`;
  const columnsOf = async (table: string) => (await columns()).filter((c) => c.table === table).map((c) => c.column).sort();

  it("PR2 PR3 PR4: no column anywhere is named like a secret, credential or key material; the one secret table holds ciphertext", async () => {
    const all = await columns();
    expect(all.length).toBeGreaterThan(50);
    const suspicious = all.filter(({ column }) => /secret|plain|credential|api_?key|passw|token|private|jwk|envelope/i.test(column));
    expect(suspicious).toEqual([]);
    const secretTables = [...new Set(all.map((c) => c.table))].filter((t) => /secret|credential|token|vault/i.test(t));
    expect(secretTables).toEqual(["webhook_signing_secrets"]);
    expect(await columnsOf("webhook_signing_secrets")).toEqual(["ciphertext", "created_at", "endpoint_id", "iv", "kid"]);
  });

  // A schema guard only: the behaviour (requests carrying an IP and bodies, every store searched)
  // is proven in test/worker/promises.test.ts.
  it("PR10 PR13: no table stores an IP address, a user agent, headers or a request/response body", async () => {
    const all = await columns();
    const offending = all.filter(({ column }) => /(^|_)ip($|_)|addr(ess)?$|user_agent|header|body|payload|prompt|completion|content|message/i.test(column) && column !== "evm_address");
    expect(offending).toEqual([]);
    const types = await sql`select table_name, column_name from information_schema.columns where table_schema = 'public' and data_type in ('inet', 'cidr')`;
    expect(types).toEqual([]);
  });

  it("PR1 PR7 PR12: sellers, KYC and request metadata hold exactly the promised fields", async () => {
    expect(await columnsOf("sellers")).toEqual(["created_at", "deleted_at", "display_name", "email", "github_id", "id", "stats_opt_out"]);
    expect(await columnsOf("kyc")).toEqual(["seller_id", "status", "updated_at"]);
    expect(await columnsOf("request_log")).toEqual(["amount_micros", "at", "duration_ms", "key_id", "latency_ms", "method", "outcome", "provider", "request_id", "route", "status"]);
  });

  it("every table in public has row-level security on, and anon holds no privilege on any", async () => {
    const tables = await sql<{ name: string; rls: boolean }[]>`
      select c.relname as name, c.relrowsecurity as rls from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'public' and c.relkind in ('r', 'p') order by 1`;
    expect(tables.filter((t) => !t.rls)).toEqual([]);
    const granted = await sql`
      select table_name, privilege_type from information_schema.role_table_grants
       where table_schema in ('public', 'internal') and grantee in ('anon', 'PUBLIC')`;
    expect(granted).toEqual([]);
  });

  it("money is bigint everywhere", async () => {
    const money = await sql`select table_name, column_name, data_type from information_schema.columns
                             where table_schema = 'public' and column_name like '%micros%' and data_type <> 'bigint'`;
    expect(money).toEqual([]);
  });
});
