// The money objects on their own: BuyerWallet's invariants under random sequences of
// top-ups, debits and refunds (fast-check), the proof store's single-use claims and
// compare-and-set updates (mppx's AtomicStore), and the seller/fee split.
import { env } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Env } from "../../core/env.ts";
import { split } from "../../core/money.ts";
import { proofStore } from "../../worker/payments/atomic-store.ts";
import { PROOF_SHARDS, proofShardName, proofStoreStub } from "../../objects/proof-store/stub.ts";

const e = env as unknown as Env;
const walletOf = (id: string) => e.BUYER_WALLET.get(e.BUYER_WALLET.idFromName(id));
const hexId = () => [...crypto.getRandomValues(new Uint8Array(32))].map((b) => b.toString(16).padStart(2, "0")).join("");
const FUTURE = () => Date.now() + 5 * 60_000;

type Op =
  | { kind: "topup"; event: number; amount: number }
  | { kind: "charge"; proof: number; amount: number }
  | { kind: "refund"; proof: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant("topup" as const), event: fc.integer({ min: 0, max: 5 }), amount: fc.integer({ min: 1, max: 5_000 }) }),
  fc.record({ kind: fc.constant("charge" as const), proof: fc.integer({ min: 0, max: 8 }), amount: fc.integer({ min: 1, max: 3_000 }) }),
  fc.record({ kind: fc.constant("refund" as const), proof: fc.integer({ min: 0, max: 9 }) }),
);

describe("BuyerWallet invariants", () => {
  it("PR23: balance = top-ups - debits + refunds, never negative; proofs single-use; no proof refunded twice (fast-check)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), fc.boolean(), async (ops, concurrent) => {
        const buyerId = hexId();
        const w = walletOf(buyerId);
        // The model: what the wallet must end up agreeing with.
        const events = new Set<number>();
        const debited = new Map<number, number>();
        const refunded = new Set<number>();
        let topups = 0, debits = 0, refunds = 0, balance = 0;
        const run = async (op: Op) => {
          if (op.kind === "topup") {
            const r = await w.topUp({ buyerId, eventId: `ev${op.event}`, amountMicros: op.amount, source: "ops" });
            expect(r.ok).toBe(true);
            return { op, r };
          }
          if (op.kind === "charge") return { op, r: await w.claimAndDebit({ buyerId, proofId: `p${op.proof}`, amountMicros: op.amount, expiresAt: FUTURE(), method: "credit" }) };
          return { op, r: await w.refund(`p${op.proof}`, "test") };
        };
        // Sequential runs check every answer against the model; concurrent runs check the
        // final state against what the answers say happened.
        const results = concurrent ? await Promise.all(ops.map(run)) : [];
        if (!concurrent) for (const op of ops) results.push(await run(op));
        for (const { op, r } of results) {
          if (op.kind === "topup") {
            const credited = r.ok && (r.value as { credited?: boolean }).credited === true;
            if (!concurrent) expect(credited).toBe(!events.has(op.event));
            if (credited) {
              expect(events.has(op.event)).toBe(false); // once per event id
              events.add(op.event);
              topups += op.amount;
            }
          } else if (op.kind === "charge") {
            if (r.ok) {
              expect(debited.has(op.proof)).toBe(false); // P6: single use
              debited.set(op.proof, op.amount);
              debits += op.amount;
            } else {
              expect(["replayed", "insufficient_balance"]).toContain(r.code);
              if (!concurrent) expect(r.code).toBe(debited.has(op.proof) ? "replayed" : "insufficient_balance");
            }
          } else {
            if (r.ok) {
              expect(refunded.has(op.proof)).toBe(false); // never twice
              refunded.add(op.proof);
              refunds += (r.value as { refundedMicros: number }).refundedMicros;
            } else {
              expect(["unknown_proof", "already_refunded"]).toContain(r.code);
            }
          }
          if (!concurrent && r.ok) {
            balance = r.value.balanceMicros;
            expect(balance).toBeGreaterThanOrEqual(0);
          }
        }
        for (const p of refunded) expect(debited.has(p)).toBe(true);
        const summary = await w.summary();
        expect(summary.balanceMicros).toBe(topups - debits + refunds);
        expect(summary.balanceMicros).toBeGreaterThanOrEqual(0);
      }),
      { numRuns: 40 },
    );
  });

  it("claims expire out of storage after the retention window; spend rows stay until KV has them", async () => {
    const buyerId = hexId();
    const w = walletOf(buyerId);
    await w.topUp({ buyerId, eventId: "seed", amountMicros: 1000, source: "ops" });
    expect((await w.claimAndDebit({ buyerId, proofId: "old", amountMicros: 10, expiresAt: Date.now() - 8 * 86_400_000, method: "credit" })).ok).toBe(true);
    expect((await w.claimAndDebit({ buyerId, proofId: "new", amountMicros: 10, expiresAt: FUTURE(), method: "credit" })).ok).toBe(true);
    expect(await runDurableObjectAlarm(w)).toBe(true);
    const claims = await runInDurableObject(w, (_i, state) => state.storage.sql.exec<{ proof_id: string }>("SELECT proof_id FROM claims ORDER BY proof_id").toArray().map((r) => r.proof_id));
    expect(claims).toEqual(["new"]);
    const dirty = await runInDurableObject(w, (_i, state) => state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM spend WHERE dirty = 1").one().n);
    expect(dirty).toBe(0);
    // Another alarm is scheduled for the remaining claim's clean-up.
    expect(await runInDurableObject(w, (_i, state) => state.storage.getAlarm())).not.toBeNull();
  });

  it("group commit: every debit answered ok is in storage when its answer arrives; a proof still queued is already spent", async () => {
    const buyerId = hexId();
    const w = walletOf(buyerId);
    await w.topUp({ buyerId, eventId: "seed", amountMicros: 1_000, source: "ops" });
    // 30 concurrent debits of 50 (only 20 fit), plus copies of proof d0 racing its original.
    const answers = await Promise.all([
      ...Array.from({ length: 30 }, (_, i) => w.claimAndDebit({ buyerId, proofId: `d${i}`, amountMicros: 50, expiresAt: FUTURE(), method: "credit" })),
      ...Array.from({ length: 3 }, () => w.claimAndDebit({ buyerId, proofId: "d0", amountMicros: 50, expiresAt: FUTURE(), method: "credit" })),
    ]);
    const ok = answers.slice(0, 30).flatMap((r, i) => (r.ok ? [`d${i}`] : []));
    expect(ok).toHaveLength(20);
    expect(answers.slice(30).map((r) => (r.ok ? "ok" : r.code))).toEqual(["replayed", "replayed", "replayed"]);
    expect(answers.slice(0, 30).filter((r) => !r.ok).map((r) => (r.ok ? "" : r.code))).toEqual(Array(10).fill("insufficient_balance"));
    const stored = await runInDurableObject(w, (_i, state) => ({
      claims: state.storage.sql.exec<{ proof_id: string }>("SELECT proof_id FROM claims").toArray().map((r) => r.proof_id).sort(),
      balance: state.storage.sql.exec<{ balance: number }>("SELECT balance FROM account").one().balance,
      spent: state.storage.sql.exec<{ spent: number }>("SELECT spent FROM spend").one().spent,
      requests: state.storage.sql.exec<{ requests: number }>("SELECT requests FROM spend").one().requests,
      rows: state.storage.sql.exec<{ amount: number; debited: number }>("SELECT DISTINCT amount, debited FROM claims").toArray(),
      history: state.storage.sql.exec<{ kind: string; amount: number; ref: string; balance: number }>("SELECT kind, amount, ref, balance FROM history WHERE kind <> 'topup' ORDER BY id").toArray(),
    }));
    expect(stored).toMatchObject({ claims: [...ok].sort(), balance: 0, spent: 1_000, requests: 20, rows: [{ amount: 50, debited: 1 }] });
    // One history entry per debit, in the order they were accepted, each with the balance after it.
    expect(stored.history.map((h) => h.ref).sort()).toEqual([...ok].sort());
    expect(stored.history.map((h) => [h.kind, h.amount, h.balance])).toEqual(Array.from({ length: 20 }, (_, i) => ["debit", 50, 950 - 50 * i]));
    expect((await w.summary()).balanceMicros).toBe(0);
  });

  it("rejects amounts that are not positive whole micro-dollars", async () => {
    const buyerId = hexId();
    const w = walletOf(buyerId);
    for (const amountMicros of [0, -1, 1.5, Number.NaN, 2 ** 60]) {
      expect(await w.topUp({ buyerId, eventId: `x${amountMicros}`, amountMicros, source: "ops" })).toMatchObject({ ok: false, code: "invalid_amount" });
      expect(await w.claimAndDebit({ buyerId, proofId: `x${amountMicros}`, amountMicros, expiresAt: FUTURE(), method: "credit" })).toMatchObject({ ok: false, code: "invalid_amount" });
    }
  });
});

describe("proof store (mppx AtomicStore over sharded objects)", () => {
  it("PR23: 12 concurrent claims of one key: exactly one wins; an expired marker can be claimed again", async () => {
    const store = proofStore(e);
    const key = `test:${crypto.randomUUID()}`;
    const wins = await Promise.all(Array.from({ length: 12 }, () => store.tryClaim!(key, Date.now() + 60_000)));
    expect(wins.filter(Boolean)).toHaveLength(1);
    expect(await store.get(key)).toMatchObject({ type: "mppx:replay" });
    const stale = `test:${crypto.randomUUID()}`;
    expect(await store.tryClaim!(stale, Date.now() - 1)).toBe(true);
    expect(await store.tryClaim!(stale, Date.now() + 60_000)).toBe(true);
    expect(await store.tryClaim!(stale, Date.now() + 60_000)).toBe(false);
  });

  it("update() is atomic under contention (compare-and-set), and keeps bigints", async () => {
    const store = proofStore(e);
    const key = `counter:${crypto.randomUUID()}`;
    await Promise.all(Array.from({ length: 10 }, () => store.update(key, (current) => ({ op: "set", value: ((current as number | null) ?? 0) + 1, result: null }))));
    expect(await store.get(key)).toBe(10);
    await store.put(key, { big: 2n ** 70n } as never);
    expect(await store.get(key)).toEqual({ big: 2n ** 70n });
    expect(await store.update(key, () => ({ op: "delete", result: "gone" }))).toBe("gone");
    expect(await store.get(key)).toBeNull();
  });

  it("keys spread over the shards; expired markers are removed by the alarm", async () => {
    const shards = new Set<string>();
    for (let i = 0; i < 200; i++) shards.add(proofStoreStub(e, `k${i}`).id.toString());
    expect(shards.size).toBe(PROOF_SHARDS);
    const key = `gone:${crypto.randomUUID()}`;
    const stub = proofStoreStub(e, key);
    await stub.tryClaim(key, Date.now() - 11 * 60_000, "{}");
    await runDurableObjectAlarm(stub);
    const left = await runInDurableObject(stub, (_i, state) => state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM items WHERE key = ?", key).one().n);
    expect(left).toBe(0);
    expect(proofShardName(3)).toBe("proofs:3");
  });
});

describe("money split", () => {
  it("PR16: seller + fee = paid exactly; the seller earns the key's price minus the fee (fast-check)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 ** 12 }), fc.integer({ min: 0, max: 10 ** 12 }), fc.integer({ min: 0, max: 10_000 }), (a, b, bps) => {
        const [price, paid] = a <= b ? [a, b] : [b, a];
        const { sellerMicros, feeMicros } = split(paid, price, bps);
        expect(Number.isSafeInteger(sellerMicros) && Number.isSafeInteger(feeMicros)).toBe(true);
        expect(sellerMicros + feeMicros).toBe(paid);
        expect(sellerMicros).toBe(price - Number((BigInt(price) * BigInt(bps)) / 10_000n));
        expect(sellerMicros).toBeGreaterThanOrEqual(0);
        expect(feeMicros).toBeGreaterThanOrEqual(paid - price);
      }),
      { numRuns: 500 },
    );
    expect(split(1000, 1000, 1000)).toEqual({ sellerMicros: 900, feeMicros: 100 });
    expect(split(1500, 1000, 1000)).toEqual({ sellerMicros: 900, feeMicros: 600 });
    expect(split(999, 999, 1)).toEqual({ sellerMicros: 999, feeMicros: 0 });
    expect(() => split(10, 11, 0)).toThrow(RangeError);
    expect(() => split(10, 5, 10_001)).toThrow(RangeError);
    expect(() => split(1.5, 1, 0)).toThrow(RangeError);
  });
});
