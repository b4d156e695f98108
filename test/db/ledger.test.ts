// The earnings ledger (S7): append-only, idempotent flushes, pseudonymised on account
// closure, kept 7 years. Also the other retention rules of M1.
import type { Sql } from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asSeller, asService, recordEarnings, type EarningsFlush } from "../../schema/tables.ts";
import { createSeller, createSellerWorld, failure, newFlushId, newKeyId, newRequestId, sharedDb } from "./helpers.ts";

let sql: Sql;
beforeAll(() => {
  sql = sharedDb(4);
});
afterAll(() => sql.end());

const sumFor = async (sellerId: string) =>
  Number((await sql`select coalesce(sum(amount_micros), 0)::text as s from public.earnings_ledger where seller_id = ${sellerId}`)[0]!.s);

describe("earnings ledger", () => {
  it("PR16: a flush repeated after a crash (same flush id) does not double count", async () => {
    const seller = await createSeller(sql, "flusher");
    const keyId = newKeyId();
    const flushId = newFlushId(keyId);
    for (let attempt = 0; attempt < 3; attempt++) {
      await asService(sql, (tx) => tx`
        insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
        values (${flushId}, ${keyId}, ${seller.id}, now() - interval '30 seconds', now(), 123456, 1234, 61)
        on conflict (flush_id) do nothing`);
    }
    expect(await sumFor(seller.id)).toBe(123456);

    const flush: EarningsFlush = {
      flushId: newFlushId(keyId), keyId, sellerId: seller.id,
      periodStart: new Date(Date.now() - 60_000), periodEnd: new Date(), amountMicros: 2_000_000, feeMicros: 100_000, requestCount: 1000,
    };
    expect(await asService(sql, (tx) => recordEarnings(tx, flush))).toBe(true);
    expect(await asService(sql, (tx) => recordEarnings(tx, flush))).toBe(false);
    expect(await sumFor(seller.id)).toBe(2_123_456);
    // The same flush id with other figures is a bug: refused loudly, nothing changes.
    expect(await failure(() => asService(sql, (tx) => recordEarnings(tx, { ...flush, amountMicros: 9_999_999 })))).toBe("CN004");
    expect(await sumFor(seller.id)).toBe(2_123_456);
    // The owner reads the balance through the view.
    const [balance] = await asSeller(sql, seller.id, (tx) => tx`select earned_micros::text, available_micros::text from public.seller_balances`);
    expect(balance).toEqual({ earned_micros: String(2_123_456 - 1234 - 100_000), available_micros: String(2_123_456 - 1234 - 100_000) });
  });

  it("refuses UPDATE, DELETE and TRUNCATE, even from the table owner", async () => {
    const world = await createSellerWorld(sql, "ledger");
    expect(await failure(() => sql`update public.earnings_ledger set amount_micros = amount_micros + 1 where flush_id = ${world.flushId}`)).toBe("CN001");
    expect(await failure(() => sql`update public.earnings_ledger set key_id = ${newKeyId()} where flush_id = ${world.flushId}`)).toBe("CN001");
    // Pseudonymising must not be a cover for other edits.
    expect(await failure(() => sql`update public.earnings_ledger set seller_id = null, pseudonym = 'p_00000000000000000000000000000000', amount_micros = 1
                                   where flush_id = ${world.flushId}`)).toBe("CN001");
    expect(await failure(() => sql`delete from public.earnings_ledger where flush_id = ${world.flushId}`)).toBe("CN001");
    expect(await failure(() => sql`truncate public.earnings_ledger`)).toBe("CN001");
    expect(await failure(() => sql`truncate public.payouts`)).toBe("CN001");
    const [row] = await sql`select amount_micros::int as amount from public.earnings_ledger where flush_id = ${world.flushId}`;
    expect(row!.amount).toBe(10_000_000);
  });

  it("PR24: retention removes earnings only after 7 years", async () => {
    const seller = await createSeller(sql, "veteran");
    const keyId = newKeyId();
    const old = newFlushId(keyId);
    const recent = newFlushId(keyId);
    // Backdating needs the owner: service_role cannot set created_at.
    await sql`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, request_count, created_at) values
      (${old}, ${keyId}, ${seller.id}, now() - interval '7 years 3 days', now() - interval '7 years 2 days', 5, 1, now() - interval '7 years 1 day'),
      (${recent}, ${keyId}, ${seller.id}, now() - interval '6 years 1 day', now() - interval '6 years', 7, 1, now() - interval '6 years')`;
    expect(await failure(() => asService(sql, (tx) => tx`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, request_count, created_at)
      values (${newFlushId(keyId)}, ${keyId}, ${seller.id}, now(), now(), 1, 1, now() - interval '8 years')`))).toBe("42501");
    expect(await failure(() => sql`delete from public.earnings_ledger where flush_id = ${recent}`)).toBe("CN001");
    const [report] = await asService(sql, (tx) => tx`select public.run_retention() as r`);
    expect(report!.r.earnings_ledger).toBeGreaterThanOrEqual(1);
    const left = await sql`select flush_id from public.earnings_ledger where seller_id = ${seller.id}`;
    expect(left.map((r) => r.flush_id)).toEqual([recent]);
  });
});

describe("account closure (S9)", () => {
  it("PR25: closing an account removes keys and personal data and keeps earnings pseudonymised", async () => {
    const alice = await createSellerWorld(sql, "closing");
    const bob = await createSellerWorld(sql, "staying");
    const extraKey = newKeyId();
    await sql`insert into public.keys (key_id, seller_id, provider, price_micros, requests_per_minute, max_concurrent, region)
              values (${extraKey}, ${alice.id}, 'groq', 1, 1, 1, 'global')`;
    await sql`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, request_count)
              values (${newFlushId(extraKey)}, ${extraKey}, ${alice.id}, now(), now(), 500, 1)`;
    const before = await sql`select flush_id, key_id, amount_micros::text, fee_micros::text, request_count, period_start, period_end, created_at
                               from public.earnings_ledger where seller_id = ${alice.id} order by flush_id`;
    expect(before).toHaveLength(2);

    const [closed] = await asService(sql, (tx) => tx`select public.close_seller_account(${alice.id}) as r`);
    expect(closed!.r.removed_key_ids).toEqual([alice.keyId, extraKey].sort());
    expect(closed!.r.pseudonymised_ledger_rows).toBe(2);

    // Earnings rows: all there, same figures, no seller link, one random pseudonym.
    const after = await sql`select flush_id, key_id, amount_micros::text, fee_micros::text, request_count, period_start, period_end, created_at, seller_id, pseudonym
                              from public.earnings_ledger where flush_id in ${sql(before.map((r) => r.flush_id))} order by flush_id`;
    expect(after.map(({ seller_id: _s, pseudonym: _p, ...rest }) => rest)).toEqual(before);
    expect(new Set(after.map((r) => r.seller_id))).toEqual(new Set([null]));
    const pseudonyms = new Set(after.map((r) => r.pseudonym));
    expect(pseudonyms.size).toBe(1);
    const pseudonym = [...pseudonyms][0] as string;
    expect(pseudonym).toMatch(/^p_[0-9a-f]{32}$/);
    expect(pseudonym).not.toContain(alice.id.replaceAll("-", "").slice(0, 12));
    // A pseudonymised row is as immutable as any other.
    expect(await failure(() => sql`update public.earnings_ledger set pseudonym = 'p_11111111111111111111111111111111' where pseudonym = ${pseudonym}`)).toBe("CN001");

    const [payout] = await sql`select seller_id, pseudonym, destination, amount_micros::int as amount from public.payouts where id = ${alice.payoutId}`;
    expect(payout).toEqual({ seller_id: null, pseudonym, destination: null, amount: 1_000_000 });
    const [clawback] = await sql`select seller_id, pseudonym from public.clawbacks where dispute_id = ${alice.clawbackDisputeId}`;
    expect(clawback).toEqual({ seller_id: null, pseudonym });

    // Personal data and configuration: gone.
    const [seller] = await sql`select email, display_name, github_id, deleted_at is not null as closed from public.sellers where id = ${alice.id}`;
    expect(seller).toEqual({ email: null, display_name: null, github_id: null, closed: true });
    for (const [table, column] of [["keys", "seller_id"], ["kyc", "seller_id"], ["payout_preferences", "seller_id"], ["webhook_endpoints", "seller_id"], ["webhook_deliveries", "seller_id"]] as const) {
      expect(await sql`select 1 from ${sql(table)} where ${sql(column)} = ${alice.id}`, table).toHaveLength(0);
    }
    expect(await sql`select 1 from public.webhook_signing_secrets where endpoint_id = ${alice.endpointId}`).toHaveLength(0);

    // A late flush for the closed account is refused rather than re-linked.
    expect(await failure(() => asService(sql, (tx) => tx`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, request_count)
      values (${newFlushId(alice.keyId)}, ${alice.keyId}, ${alice.id}, now(), now(), 1, 1)`))).toBe("CN005");
    // Closing twice is an error, not a silent success.
    expect(await failure(() => asService(sql, (tx) => tx`select public.close_seller_account(${alice.id})`))).toBe("CN007");

    // The other seller is untouched.
    expect(await sql`select 1 from public.keys where seller_id = ${bob.id}`).toHaveLength(1);
    expect(await sumFor(bob.id)).toBe(10_000_000);

    // Deleting the auth user (production: the Supabase admin API) removes the tombstone.
    await sql`delete from auth.users where id = ${alice.id}`;
    expect(await sql`select 1 from public.sellers where id = ${alice.id}`).toHaveLength(0);
    expect(await sql`select 1 from public.earnings_ledger where pseudonym = ${pseudonym}`).toHaveLength(2);
  });

  it("an auth user cannot be deleted while its earnings still name it", async () => {
    const world = await createSellerWorld(sql, "unclosed");
    expect(await failure(() => sql`delete from auth.users where id = ${world.id}`)).toBe("23503");
  });

  it("PR25: a seller opts out of marketplace statistics and corrects its display name", async () => {
    const seller = await createSeller(sql, "objector");
    const changed = await asSeller(sql, seller.id, (tx) => tx`update public.sellers set stats_opt_out = true, display_name = 'Corrected' where id = ${seller.id}`);
    expect(changed.count).toBe(1);
    const [row] = await sql`select stats_opt_out, display_name from public.sellers where id = ${seller.id}`;
    expect(row).toEqual({ stats_opt_out: true, display_name: "Corrected" });
  });
});

describe("retention of request metadata (M1)", () => {
  it("PR14: raw metadata goes after 30 days (rolled up first), aggregates after 1 year", async () => {
    const keyId = newKeyId();
    const oldId = newRequestId();
    const freshId = newRequestId();
    await sql`insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, status, amount_micros) values
      (${oldId}, ${keyId}, 'openai', '/v1/embeddings', 'POST', date_trunc('hour', now() - interval '40 days') + interval '10 minutes', 80, 200, 300),
      (${freshId}, ${keyId}, 'openai', '/v1/embeddings', 'POST', now() - interval '29 days', 90, 200, 300)`;
    await sql`insert into public.request_log_hourly (hour, key_id, provider, route, method, status, request_count, amount_micros, latency_ms_sum, latency_ms_max)
      values (date_trunc('hour', now() - interval '400 days'), ${keyId}, 'openai', '/v1/embeddings', 'POST', 200, 9, 2700, 900, 100)`;
    await asService(sql, (tx) => tx`select public.run_retention()`);
    const raw = await sql`select request_id from public.request_log where key_id = ${keyId}`;
    expect(raw.map((r) => r.request_id)).toEqual([freshId]);
    const hourly = await sql`select hour < now() - interval '35 days' as old, request_count::int as n, amount_micros::int as amount
                               from public.request_log_hourly where key_id = ${keyId} order by hour`;
    expect(hourly).toEqual([{ old: true, n: 1, amount: 300 }]);
  });

  it("rolling up the same hours twice changes nothing", async () => {
    const keyId = newKeyId();
    await sql`insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, status, amount_micros) values
      (${newRequestId()}, ${keyId}, 'anthropic', '/v1/messages', 'POST', now() - interval '2 hours', 100, 200, 10),
      (${newRequestId()}, ${keyId}, 'anthropic', '/v1/messages', 'POST', now() - interval '2 hours', 300, 200, 10)`;
    for (let i = 0; i < 2; i++) await asService(sql, (tx) => tx`select public.rollup_request_log(now() - interval '3 hours', now())`);
    const rows = await sql`select request_count::int as n, amount_micros::int as a, latency_ms_sum::int as l, latency_ms_max as m
                             from public.request_log_hourly where key_id = ${keyId}`;
    expect(rows).toEqual([{ n: 2, a: 20, l: 400, m: 300 }]);
  });
});
