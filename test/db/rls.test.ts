// Row-level security as the Worker will meet it: transactions that set role and
// request.jwt.claims the way PostgREST does (schema/tables.ts asSeller / asAnon / asService).
import type { Sql } from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asAnon, asSeller, asService } from "../../schema/tables.ts";
import { createSellerWorld, failure, hex64, newKeyId, sharedDb, type SellerFixture } from "./helpers.ts";

let sql: Sql;
let a: SellerFixture;
let b: SellerFixture;

beforeAll(async () => {
  sql = sharedDb(8);
  a = await createSellerWorld(sql, "alice");
  b = await createSellerWorld(sql, "bob");
});
afterAll(() => sql.end());

/** Every table holding a seller's rows, and the column that names the seller. */
const SELLER_TABLES: [table: string, owner: string][] = [
  ["sellers", "id"],
  ["keys", "seller_id"],
  ["kyc", "seller_id"],
  ["payout_preferences", "seller_id"],
  ["payouts", "seller_id"],
  ["webhook_endpoints", "seller_id"],
  ["webhook_deliveries", "seller_id"],
  ["earnings_ledger", "seller_id"],
  ["clawbacks", "seller_id"],
  ["seller_balances", "seller_id"],
];

describe("a seller (authenticated with its own claims)", () => {
  it("sees its own rows in every seller table and none of another seller's", async () => {
    for (const [table, owner] of SELLER_TABLES) {
      const rows = await asSeller(sql, a.id, (tx) => tx`select ${tx(owner)}::text as owner from ${tx(table)}`);
      const owners = new Set(rows.map((r) => r.owner));
      expect(owners.has(a.id), `${table}: own rows visible`).toBe(true);
      expect(owners.has(b.id), `${table}: B's rows hidden from A`).toBe(false);
      const direct = await asSeller(sql, a.id, (tx) => tx`select 1 from ${tx(table)} where ${tx(owner)} = ${b.id}`);
      expect(direct, `${table}: asking for B's rows by id`).toHaveLength(0);
    }
  });

  it("sees request metadata of its own keys only", async () => {
    const raw = await asSeller(sql, a.id, (tx) => tx`select key_id from public.request_log where key_id in (${a.keyId}, ${b.keyId})`);
    expect(raw.map((r) => r.key_id)).toEqual([a.keyId]);
    const hourly = await asSeller(sql, a.id, (tx) => tx`select key_id from public.request_log_hourly where key_id in (${a.keyId}, ${b.keyId})`);
    expect(hourly.map((r) => r.key_id)).toEqual([a.keyId]);
  });

  it("cannot update or delete another seller's keys, payout preference, webhooks or profile", async () => {
    const attempts: [string, (tx: Sql) => Promise<{ count: number }>][] = [
      ["update keys", (tx) => tx`update public.keys set price_micros = 1 where seller_id = ${b.id}`],
      ["delete keys", (tx) => tx`delete from public.keys where key_id = ${b.keyId}`],
      ["update payout_preferences", (tx) => tx`update public.payout_preferences set stripe_account_id = 'acct_attacker00001' where seller_id = ${b.id}`],
      ["delete payout_preferences", (tx) => tx`delete from public.payout_preferences where seller_id = ${b.id}`],
      ["update webhook_endpoints", (tx) => tx`update public.webhook_endpoints set url = 'https://attacker.example.test/' where seller_id = ${b.id}`],
      ["delete webhook_endpoints", (tx) => tx`delete from public.webhook_endpoints where id = ${b.endpointId}`],
      ["update sellers", (tx) => tx`update public.sellers set display_name = 'owned' where id = ${b.id}`],
    ];
    for (const [what, run] of attempts) {
      const result = await asSeller(sql, a.id, (tx) => run(tx as unknown as Sql));
      expect(result.count, what).toBe(0);
    }
    const [key] = await sql`select price_micros::int as price from public.keys where key_id = ${b.keyId}`;
    expect(key!.price).toBe(2000);
    const [pref] = await sql`select stripe_account_id from public.payout_preferences where seller_id = ${b.id}`;
    expect(pref!.stripe_account_id).not.toBe("acct_attacker00001");
    const [endpoint] = await sql`select url from public.webhook_endpoints where id = ${b.endpointId}`;
    expect(endpoint!.url).toBe("https://hooks.example.test/bob");
  });

  it("cannot insert rows in another seller's name (row-level security refuses)", async () => {
    const inserts: [string, (tx: Sql) => Promise<unknown>][] = [
      ["keys", (tx) => tx`insert into public.keys (key_id, seller_id, provider, price_micros, requests_per_minute, max_concurrent, region)
                          values (${newKeyId()}, ${b.id}, 'openai', 1, 1, 1, 'us')`],
      ["payout_preferences", (tx) => tx`insert into public.payout_preferences (seller_id, method, evm_address)
                          values (${b.id}, 'usdc_tempo', '0x52908400098527886E0F7030069857D2E4169EE7')`],
      ["webhook_endpoints", (tx) => tx`insert into public.webhook_endpoints (seller_id, url) values (${b.id}, 'https://attacker.example.test/')`],
    ];
    for (const [table, run] of inserts) {
      expect(await failure(() => asSeller(sql, a.id, (tx) => run(tx as unknown as Sql))), table).toBe("42501");
    }
  });

  it("cannot move its own row to another seller", async () => {
    // seller_id is not in the column grant for UPDATE.
    expect(await failure(() => asSeller(sql, a.id, (tx) => tx`update public.keys set seller_id = ${b.id} where key_id = ${a.keyId}`))).toBe("42501");
    expect(await failure(() => asSeller(sql, a.id, (tx) => tx`update public.webhook_endpoints set seller_id = ${b.id} where id = ${a.endpointId}`))).toBe("42501");
  });

  it("cannot write what only the service writes: earnings, payouts, KYC, deliveries, clawbacks, metadata", async () => {
    const writes: [string, (tx: Sql) => Promise<unknown>][] = [
      ["earnings insert", (tx) => tx`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, request_count)
                                     values ('self-credit-0001', ${a.keyId}, ${a.id}, now(), now(), 999999999, 1)`],
      ["earnings update", (tx) => tx`update public.earnings_ledger set amount_micros = 1 where seller_id = ${a.id}`],
      ["earnings delete", (tx) => tx`delete from public.earnings_ledger where seller_id = ${a.id}`],
      ["payout insert", (tx) => tx`insert into public.payouts (seller_id, amount_micros) values (${a.id}, 1)`],
      ["payout update", (tx) => tx`update public.payouts set status = 'paid' where seller_id = ${a.id}`],
      ["kyc approve", (tx) => tx`update public.kyc set status = 'approved' where seller_id = ${a.id}`],
      ["kyc insert", (tx) => tx`insert into public.kyc (seller_id, status) values (${a.id}, 'approved')`],
      ["delivery insert", (tx) => tx`insert into public.webhook_deliveries (endpoint_id, seller_id, event_id, event_type, attempt)
                                     values (${a.endpointId}, ${a.id}, 'evt_selfmade0001', 'key.disabled', 1)`],
      ["clawback insert", (tx) => tx`insert into public.clawbacks (dispute_id, request_id, key_id, seller_id, amount_micros)
                                     values ('dsp_00000000000000000000000000000000', 'req_0000000000000000', ${a.keyId}, ${a.id}, 1)`],
      ["clawback delete", (tx) => tx`delete from public.clawbacks where seller_id = ${a.id}`],
      ["request_log insert", (tx) => tx`insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, status)
                                        values ('req_0000000000000000', ${a.keyId}, 'openai', '/v1/x', 'GET', now(), 1, 200)`],
      ["github id", (tx) => tx`update public.sellers set github_id = 42 where id = ${a.id}`],
      ["deleted_at", (tx) => tx`update public.sellers set deleted_at = now() where id = ${a.id}`],
    ];
    for (const [what, run] of writes) {
      expect(await failure(() => asSeller(sql, a.id, (tx) => run(tx as unknown as Sql))), what).toBe("42501");
    }
  });

  it("cannot read any webhook signing secret, not even its own", async () => {
    expect(await failure(() => asSeller(sql, a.id, (tx) => tx`select * from public.webhook_signing_secrets`))).toBe("42501");
  });

  it("PR5: stores, edits and removes its own key configuration", async () => {
    const keyId = newKeyId();
    await asSeller(sql, a.id, (tx) => tx`insert into public.keys (key_id, seller_id, provider, price_micros, requests_per_minute, max_concurrent, region, tier, home)
                                           values (${keyId}, ${a.id}, 'anthropic', 5000, 30, 2, 'eu', 'economy', 'eu')`);
    const updated = await asSeller(sql, a.id, (tx) => tx`update public.keys set price_micros = 6000, status = 'paused' where key_id = ${keyId}`);
    expect(updated.count).toBe(1);
    const [row] = await sql`select price_micros::int as price, status, updated_at > created_at as touched from public.keys where key_id = ${keyId}`;
    expect(row).toEqual({ price: 6000, status: "paused", touched: true });
    const deleted = await asSeller(sql, a.id, (tx) => tx`delete from public.keys where key_id = ${keyId}`);
    expect(deleted.count).toBe(1);
  });

  it("creates its own seller row only with the email its JWT carries", async () => {
    const { randomUUID } = await import("node:crypto");
    const id = randomUUID();
    await sql`insert into auth.users (id, email) values (${id}, ${`new-${id}@example.test`})`;
    expect(await failure(() => asSeller(sql, id, (tx) => tx`insert into public.sellers (id, email) values (${id}, ${b.email})`, { email: `new-${id}@example.test` }))).toBe("42501");
    await asSeller(sql, id, (tx) => tx`insert into public.sellers (id, email) values (${id}, ${`new-${id}@example.test`})`, { email: `new-${id}@example.test` });
    const [me] = await asSeller(sql, id, (tx) => tx`select id, email from public.sellers`);
    expect(me).toEqual({ id, email: `new-${id}@example.test` });
  });

  it("keeps each transaction's identity to itself under concurrency, and leaves none behind", async () => {
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => {
        const me = i % 2 ? a : b;
        return asSeller(sql, me.id, async (tx) => {
          const [who] = await tx`select auth.uid()::text as uid, current_user as role`;
          const keys = await tx`select key_id from public.keys where key_id in (${a.keyId}, ${b.keyId})`;
          return { expected: me.id, uid: who!.uid, role: who!.role, keys: keys.map((k) => k.key_id), own: me.keyId };
        });
      }),
    );
    for (const r of results) {
      expect(r.uid).toBe(r.expected);
      expect(r.role).toBe("authenticated");
      expect(r.keys).toEqual([r.own]);
    }
    const after = await Promise.all(Array.from({ length: 8 }, () => sql`select current_user as role, auth.uid() as uid`));
    for (const [row] of after) expect(row).toEqual({ role: "postgres", uid: null });
  });
});

describe("a buyer account (B4; authenticated with its own claims)", () => {
  /** An auth user with a buyer account, opened as the user (RLS insert policy), and one attached id. */
  async function buyer(label: string) {
    const { randomUUID } = await import("node:crypto");
    const id = randomUUID();
    const email = `${label}-${id}@example.test`;
    await sql`insert into auth.users (id, email) values (${id}, ${email})`;
    await asSeller(sql, id, (tx) => tx`insert into public.buyer_accounts (id, email) values (${id}, ${email})`, { email });
    const buyerId = hex64();
    await asService(sql, (tx) => tx`insert into public.buyer_account_ids (buyer_id_hash, account_id) values (${buyerId}, ${id})`);
    return { id, email, buyerId };
  }

  it("sees and detaches its own rows only, and cannot attach an id itself (only the service, after a proof)", async () => {
    const x = await buyer("x");
    const y = await buyer("y");
    expect(await asSeller(sql, x.id, (tx) => tx`select id from public.buyer_accounts`)).toEqual([{ id: x.id }]);
    expect(await asSeller(sql, x.id, (tx) => tx`select buyer_id_hash from public.buyer_account_ids`)).toEqual([{ buyer_id_hash: x.buyerId }]);
    // Another account's rows: invisible, and untouched by a delete aimed at them.
    expect((await asSeller(sql, x.id, (tx) => tx`delete from public.buyer_account_ids where buyer_id_hash = ${y.buyerId}`)).count).toBe(0);
    expect((await asSeller(sql, x.id, (tx) => tx`delete from public.buyer_accounts where id = ${y.id}`)).count).toBe(0);
    expect(await sql`select 1 from public.buyer_account_ids where buyer_id_hash = ${y.buyerId}`).toHaveLength(1);
    // Attaching is not the user's to do (PostgREST would let it try): no insert or update grant.
    expect(await failure(() => asSeller(sql, x.id, (tx) => tx`insert into public.buyer_account_ids (buyer_id_hash, account_id) values (${hex64()}, ${x.id})`))).toBe("42501");
    expect(await failure(() => asSeller(sql, x.id, (tx) => tx`update public.buyer_account_ids set account_id = ${x.id} where buyer_id_hash = ${y.buyerId}`))).toBe("42501");
    expect(await failure(() => asSeller(sql, x.id, (tx) => tx`update public.buyer_accounts set email = 'z@example.test' where id = ${x.id}`))).toBe("42501");
    // One account per id.
    expect(await failure(() => asService(sql, (tx) => tx`insert into public.buyer_account_ids (buyer_id_hash, account_id) values (${y.buyerId}, ${x.id})`))).toBe("23505");
    // Detach its own; deleting the account takes the rest with it.
    expect((await asSeller(sql, y.id, (tx) => tx`delete from public.buyer_account_ids where buyer_id_hash = ${y.buyerId}`)).count).toBe(1);
    expect((await asSeller(sql, x.id, (tx) => tx`delete from public.buyer_accounts where id = ${x.id}`)).count).toBe(1);
    expect(await sql`select 1 from public.buyer_account_ids where account_id = ${x.id}`).toHaveLength(0);
  });

  it("opens its own account only with the email its JWT carries", async () => {
    const { randomUUID } = await import("node:crypto");
    const id = randomUUID();
    await sql`insert into auth.users (id, email) values (${id}, ${`b-${id}@example.test`})`;
    expect(await failure(() => asSeller(sql, id, (tx) => tx`insert into public.buyer_accounts (id, email) values (${id}, 'someone-else@example.test')`, { email: `b-${id}@example.test` }))).toBe("42501");
    expect(await failure(() => asSeller(sql, id, (tx) => tx`insert into public.buyer_accounts (id, email) values (${a.id}, ${a.email})`, { email: a.email }))).toBe("42501");
  });
});

describe("anon (no JWT)", () => {
  it("can read no table or view of ours", async () => {
    const tables = await sql<{ name: string }[]>`
      select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'public' and c.relkind in ('r', 'v', 'p') order by 1`;
    expect(tables.length).toBeGreaterThanOrEqual(15);
    for (const { name } of tables) {
      expect(await failure(() => asAnon(sql, (tx) => tx`select * from ${tx(name)} limit 1`)), name).toBe("42501");
    }
    expect(await failure(() => asAnon(sql, (tx) => tx`select * from auth.users limit 1`))).toBe("42501");
  });

  it("cannot call the service functions", async () => {
    expect(await failure(() => asAnon(sql, (tx) => tx`select public.close_seller_account(${a.id})`))).toBe("42501");
    expect(await failure(() => asAnon(sql, (tx) => tx`select public.run_retention()`))).toBe("42501");
    expect(await failure(() => asSeller(sql, a.id, (tx) => tx`select public.close_seller_account(${b.id})`))).toBe("42501");
    expect(await failure(() => asSeller(sql, a.id, (tx) => tx`select public.record_earnings('k_self:credit01', ${a.keyId}, ${a.id}, now(), now(), 1, 0, 1)`))).toBe("42501");
  });
});

describe("service_role", () => {
  it("sees every seller's rows, webhook secrets included", async () => {
    for (const [table, owner] of [...SELLER_TABLES, ["webhook_signing_secrets", "endpoint_id"] as [string, string]]) {
      const ids = table === "webhook_signing_secrets" ? [a.endpointId, b.endpointId] : [a.id, b.id];
      const rows = await asService(sql, (tx) => tx`select ${tx(owner)}::text as owner from ${tx(table)} where ${tx(owner)} in (${ids[0]!}, ${ids[1]!})`);
      expect(new Set(rows.map((r) => r.owner)), table).toEqual(new Set(ids));
    }
  });

  it("records earnings and payouts but cannot rewrite them", async () => {
    expect(await failure(() => asService(sql, (tx) => tx`update public.earnings_ledger set amount_micros = 0 where seller_id = ${a.id}`))).toBe("42501");
    expect(await failure(() => asService(sql, (tx) => tx`delete from public.earnings_ledger where seller_id = ${a.id}`))).toBe("42501");
    expect(await failure(() => asService(sql, (tx) => tx`update public.payouts set amount_micros = 5 where id = ${a.payoutId}`))).toBe("42501");
    const marked = await asService(sql, (tx) => tx`update public.payouts set status = 'sent' where id = ${a.payoutId}`);
    expect(marked.count).toBe(1);
  });
});
