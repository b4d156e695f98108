// Payout execution in the database (schema/sql/0011): request_payout's rules, the state
// machine and its log, the exactly-once keys (period, retry), clawbacks, and the money
// property: earnings - payouts - clawbacks == balance, exactly, over random histories.
import fc from "fast-check";
import type { Sql } from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asService } from "../../schema/tables.ts";
import { createSeller, failure, newKeyId, newRequestId, sharedDb } from "./helpers.ts";

let sql: Sql;
beforeAll(() => {
  sql = sharedDb(6);
});
afterAll(() => sql.end());

const CHECKSUMMED = "0x52908400098527886E0F7030069857D2E4169EE7";
let counter = 0;

async function readySeller(method: "stripe_connect" | "usdc_tempo") {
  const s = await createSeller(sql, "payee");
  await sql`insert into public.kyc (seller_id, status) values (${s.id}, 'approved')`;
  if (method === "stripe_connect") {
    await sql`insert into public.payout_preferences (seller_id, method, stripe_account_id) values (${s.id}, 'stripe_connect', ${`acct_test${s.id.slice(0, 8)}abcd`})`;
    await sql`update public.payout_preferences set stripe_payouts_enabled = true where seller_id = ${s.id}`;
  } else {
    await sql`insert into public.payout_preferences (seller_id, method, evm_address) values (${s.id}, 'usdc_tempo', ${CHECKSUMMED})`;
    await sql`update public.payout_preferences set evm_confirmed_at = now() where seller_id = ${s.id}`;
  }
  return s;
}

async function earn(sellerId: string, amount: number, fee: number) {
  const keyId = newKeyId();
  await asService(sql, (tx) => tx`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
    values (${`${keyId}:${counter++}`}, ${keyId}, ${sellerId}, now(), now(), ${amount}, ${fee}, 1)`);
}
const request = (sellerId: string, amount: number | null, min = 1, scheduleKey: string | null = null, retryOf: string | null = null) =>
  asService(sql, async (tx) => (await tx`select * from public.request_payout(${sellerId}, ${amount}, ${min}, ${scheduleKey}, ${retryOf})`)[0]!);
const setStatus = (id: string, status: string) =>
  asService(sql, (tx) => tx`update public.payouts set status = ${status}, completed_at = ${status === "paid" || status === "failed" ? new Date() : null} where id = ${id}`);
const available = async (sellerId: string) =>
  Number((await asService(sql, (tx) => tx`select available_micros::text as a from public.seller_balances where seller_id = ${sellerId}`))[0]!.a);

describe("request_payout", () => {
  it("rounds down to whole cents for Stripe (the remainder stays), token units for USDC; refuses below the minimum, unready methods and a second open payout", async () => {
    const s = await readySeller("stripe_connect");
    await earn(s.id, 5_123_456, 0);
    const p = await request(s.id, null, 1_000_000);
    expect({ amount: Number(p.amount_micros), units: Number(p.amount_units), status: p.status }).toEqual({ amount: 5_120_000, units: 512, status: "requested" });
    expect(await available(s.id)).toBe(3_456);
    expect(await failure(() => request(s.id, null))).toBe("CN011");
    await setStatus(p.id, "sent");
    await setStatus(p.id, "failed");
    expect(await available(s.id)).toBe(5_123_456);
    expect(await failure(() => request(s.id, 5_123_457))).toBe("CN003");
    expect(await failure(() => request(s.id, null, 6_000_000))).toBe("CN009");
    // Direct inserts must be whole units of the method.
    expect(await failure(() => asService(sql, (tx) => tx`insert into public.payouts (seller_id, amount_micros) values (${s.id}, 1234567)`))).toBe("CN010");

    const u = await readySeller("usdc_tempo");
    await earn(u.id, 2_500_001, 1);
    const q = await request(u.id, null);
    expect(Number(q.amount_units)).toBe(2_500_000);
    await sql`update public.payout_preferences set evm_address = '0x8617E340B3D01FA5F11F306F4090FD50E238070D' where seller_id = ${u.id}`;
    const [pref] = await sql`select evm_confirmed_at from public.payout_preferences where seller_id = ${u.id}`;
    expect(pref!.evm_confirmed_at).toBeNull();
  });

  it("a period's payout and a retry's payout are made once, whoever asks and however often", async () => {
    const s = await readySeller("stripe_connect");
    await earn(s.id, 9_000_000, 0);
    const runs = await Promise.all(Array.from({ length: 5 }, () => request(s.id, null, 1, "weekly:2026-W49").catch((e: unknown) => e)));
    const ids = new Set(runs.filter((r): r is { id: string } => typeof (r as { id?: unknown }).id === "string").map((r) => r.id));
    expect(ids.size).toBe(1);
    const [first] = [...ids];
    await setStatus(first!, "failed");
    const retries = await Promise.all([request(s.id, 9_000_000, 1, null, first!), request(s.id, 9_000_000, 1, null, first!)]);
    expect(retries[0]!.id).toBe(retries[1]!.id);
    expect(retries[0]!.retry_of).toBe(first);
    // The same period again: the failed one is returned, no second payout for the week.
    expect((await request(s.id, null, 1, "weekly:2026-W49")).id).toBe(first);
    expect(await sql`select 1 from public.payouts where seller_id = ${s.id}`).toHaveLength(2);
  });

  it("moves forward only, logs each state once, and keeps the log append-only", async () => {
    const s = await readySeller("stripe_connect");
    await earn(s.id, 1_000_000, 0);
    const p = await request(s.id, null);
    expect(await failure(() => setStatus(p.id, "paid"))).toBe("CN001"); // requested -> paid skips sent
    await setStatus(p.id, "sent");
    await asService(sql, (tx) => tx`update public.payouts set external_ref = 'tr_1' where id = ${p.id}`);
    expect(await failure(() => asService(sql, (tx) => tx`update public.payouts set external_ref = 'tr_2' where id = ${p.id}`))).toBe("CN001");
    expect(await failure(() => setStatus(p.id, "requested"))).toBe("CN001");
    await setStatus(p.id, "paid");
    expect(await failure(() => setStatus(p.id, "failed"))).toBe("CN001");
    const log = await sql`select status from public.payout_events where payout_id = ${p.id} order by id`;
    expect(log.map((r) => r.status)).toEqual(["requested", "sent", "paid"]);
    expect(await failure(() => sql`update public.payout_events set status = 'failed' where payout_id = ${p.id}`)).toBe("CN001");
    expect(await failure(() => sql`delete from public.payout_events where payout_id = ${p.id}`)).toBe("CN001");
  });

  it("clawbacks are append-only, once per dispute, and pseudonymised with the account", async () => {
    const s = await readySeller("stripe_connect");
    const keyId = newKeyId();
    const disputeId = `dsp_${(counter++).toString(16).padStart(32, "f")}`;
    const insert = () => asService(sql, (tx) => tx`insert into public.clawbacks (dispute_id, request_id, key_id, seller_id, amount_micros)
      values (${disputeId}, ${newRequestId()}, ${keyId}, ${s.id}, 1800)`);
    await insert();
    expect(await failure(insert)).toBe("23505");
    expect(await available(s.id)).toBe(-1800);
    expect(await failure(() => sql`update public.clawbacks set amount_micros = 1 where seller_id = ${s.id}`)).toBe("CN001");
    expect(await failure(() => sql`delete from public.clawbacks where seller_id = ${s.id}`)).toBe("CN001");
    const [closed] = await asService(sql, (tx) => tx`select public.close_seller_account(${s.id}) as r`);
    expect(closed!.r.pseudonymised_clawbacks).toBe(1);
    expect(await sql`select 1 from public.clawbacks where seller_id = ${s.id}`).toHaveLength(0);
  });
});

describe("money adds up with payouts and clawbacks", () => {
  type Op =
    | { kind: "earn"; amount: number; fee: number }
    | { kind: "payout"; amount: number | null; end: "paid" | "failed" | "open" }
    | { kind: "clawback"; amount: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant("earn" as const), amount: fc.integer({ min: 0, max: 50_000_000 }), fee: fc.integer({ min: 0, max: 5_000_000 }) })
      .map((o) => ({ ...o, fee: Math.min(o.fee, o.amount) })),
    fc.record({ kind: fc.constant("payout" as const), amount: fc.option(fc.integer({ min: 1, max: 60_000_000 }), { nil: null }), end: fc.constantFrom("paid" as const, "failed" as const, "open" as const) }),
    fc.record({ kind: fc.constant("clawback" as const), amount: fc.integer({ min: 1, max: 3_000_000 }) }),
  );

  it("earnings - payouts - clawbacks == balance, exactly, after any history; payouts are whole units and never exceed what was available (fast-check)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("stripe_connect" as const, "usdc_tempo" as const), fc.array(op, { minLength: 1, maxLength: 12 }), async (method, ops) => {
        const s = await readySeller(method);
        const unit = method === "stripe_connect" ? 10_000 : 1;
        let earned = 0;
        let paidOut = 0;
        let clawed = 0;
        let open: string | null = null;
        for (const o of ops) {
          if (o.kind === "earn") {
            await earn(s.id, o.amount, o.fee);
            earned += o.amount - o.fee;
          } else if (o.kind === "clawback") {
            await asService(sql, (tx) => tx`insert into public.clawbacks (dispute_id, request_id, key_id, seller_id, amount_micros)
              values (${`dsp_${(counter++).toString(16).padStart(32, "0")}`}, ${newRequestId()}, ${newKeyId()}, ${s.id}, ${o.amount})`);
            clawed += o.amount;
          } else {
            const before = earned - paidOut - clawed;
            let row: { id: string; amount_micros: string };
            try {
              row = (await request(s.id, o.amount, 1)) as unknown as { id: string; amount_micros: string };
            } catch (error) {
              const code = (error as { code?: string }).code;
              // Refusals say why, and are right to refuse.
              if (code === "CN011") expect(open).not.toBeNull();
              else if (code === "CN003") expect(o.amount! > before).toBe(true);
              else if (code === "CN009") expect(Math.floor(Math.max(o.amount ?? before, 0) / unit) * unit).toBeLessThan(1);
              else throw error;
              continue;
            }
            const amount = Number(row.amount_micros);
            expect(amount % unit).toBe(0);
            expect(amount).toBeLessThanOrEqual(before);
            // Everything requested: only the sub-unit remainder stays.
            if (o.amount === null) expect(before - amount).toBeLessThan(unit);
            paidOut += amount;
            if (o.end === "open") {
              open = row.id;
            } else {
              await setStatus(row.id, "sent");
              await setStatus(row.id, o.end);
              if (o.end === "failed") paidOut -= amount; // the debit reversed
            }
          }
          expect(await available(s.id)).toBe(earned - paidOut - clawed);
        }
      }),
      { numRuns: 25 },
    );
  }, 120_000);
});
