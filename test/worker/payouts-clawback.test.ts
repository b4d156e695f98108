// Dispute clawbacks (issue 12): a refunded dispute debits the serving seller's share of
// the payment (price minus the marketplace fee) as a negative entry in its balance, once
// per dispute, and the next payout nets it, even when the clawback follows a payout.
// Through the Worker's entry: a paid request through the proxy to the seller's key, the
// key's earnings flushed, a buyer-signed dispute, the ops refund, the seller's payout.
import { env } from "cloudflare:workers";
import { Challenge } from "mppx";
import { describe, expect, it } from "vitest";
import { creditClient, generateBuyerKey, type BuyerKey } from "../../buyer/keys.ts";
import type { Env } from "../../core/env.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { sign } from "../../core/did.ts";
import { sha256Hex, toBase64Url } from "../../core/encoding.ts";
import { ACCOUNT_HEADERS, accountMessage } from "../../core/credit-method.ts";
import type { PayoutView } from "../../worker/payouts/store.ts";
import { OPS, addKey, as, call, ownerDb, signIn, type TestSeller } from "./helpers.ts";

const e = env as unknown as Env;
const CHAT = "/openai/v1/chat/completions";
const chatJson = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] });

async function newBuyer(fundMicros: number): Promise<BuyerKey> {
  const key = await generateBuyerKey();
  const res = await call("/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId: key.buyerId, amountMicros: fundMicros }) });
  expect(res.status).toBe(200);
  return key;
}

async function paidRequest(buyer: BuyerKey) {
  const init = { method: "POST", headers: { "content-type": "application/json" }, body: chatJson };
  const first = await call(CHAT, init);
  expect(first.status).toBe(402);
  const [challenge] = Challenge.fromResponseList(first);
  const authorization = await creditClient(buyer).createCredential({ challenge: challenge! as never });
  const res = await call(CHAT, { ...init, headers: { ...init.headers, authorization } });
  await res.text();
  expect(res.status).toBe(200);
  return { receipt: res.headers.get("payment-receipt")!, requestId: res.headers.get("cn2-request-id")! };
}

async function signed(buyer: BuyerKey, method: string, path: string, body: unknown) {
  const text = JSON.stringify(body);
  const time = String(Math.floor(Date.now() / 1000));
  const message = accountMessage({ method, pathAndQuery: path, time, bodySha256: await sha256Hex(text) });
  return call(path, {
    method,
    headers: {
      "content-type": "application/json",
      [ACCOUNT_HEADERS.did]: buyer.did,
      [ACCOUNT_HEADERS.time]: time,
      [ACCOUNT_HEADERS.signature]: toBase64Url(await sign(buyer.alg, buyer.privateKey, message)),
    },
    body: text,
  });
}

const resolve = (disputeId: string) => call(`/ops/disputes/${disputeId}/resolve`, {
  method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${OPS}` }, body: JSON.stringify({ decision: "refund" }),
});

async function balanceOf(seller: TestSeller) {
  return ((await (await as(seller, "/api/earnings")).json()) as { balance: { earnedMicros: number; withdrawnMicros: number; availableMicros: number } }).balance;
}

async function readyStripeSeller(seller: TestSeller) {
  await ownerDb((sql) => sql`insert into public.kyc (seller_id, status) values (${seller.id}, 'approved')`);
  const { accountId } = (await (await as(seller, "/api/payout/stripe/onboard", { method: "POST" })).json()) as { accountId: string };
  const signedEvent = (await (await fetch(`${e.STRIPE_API_BASE}/__fake/accounts/${accountId}/onboard`, { method: "POST", body: "{}" })).json()) as { payload: string; signature: string };
  expect((await call("/webhooks/stripe", { method: "POST", headers: { "stripe-signature": signedEvent.signature }, body: signedEvent.payload })).status).toBe(200);
  await as(seller, "/api/payout/schedule", { method: "PUT", json: { schedule: "manual" } });
  return accountId;
}

async function earnDirect(seller: TestSeller, netMicros: number, tag: string) {
  await ownerDb((sql) => sql`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
    values (${`k_clawbacktest0000:${tag}:${seller.id.slice(0, 8)}`}, 'k_clawbacktest0000', ${seller.id}, now(), now(), ${netMicros}, 0, 1)`);
}

describe("dispute clawbacks", () => {
  it("a dispute refund lowers the seller's balance by its share, once; the next payout nets it, even after a payout", async () => {
    const seller = await signIn("clawback");
    const { keyId } = await addKey({ seller, config: { priceMicros: 2000 } });
    const accountId = await readyStripeSeller(seller);
    await earnDirect(seller, 3_008_200, "base");

    const buyer = await newBuyer(100_000);
    const paid = await paidRequest(buyer);
    // The key object flushes what it earned (price 2000, fee 10%: 1800) and the request's metadata.
    expect(await keyStub(e, keyId, "default").flushEarnings()).toMatchObject({ ok: true, value: { flushed: true } });
    expect(await balanceOf(seller)).toEqual({ earnedMicros: 3_010_000, withdrawnMicros: 0, availableMicros: 3_010_000 });

    // Everything is paid out first.
    const first = (await (await as(seller, "/api/payouts", { method: "POST", json: {} })).json()) as { payout: PayoutView };
    expect(first.payout).toMatchObject({ amountMicros: 3_010_000, amountUnits: 301, status: "sent" });

    // Then the buyer disputes and ops refund: the seller's share (1800) comes back, once.
    const opened = await signed(buyer, "POST", "/api/disputes", { receipt: paid.receipt, reason: "upstream_error" });
    expect(opened.status).toBe(201);
    const { dispute } = (await opened.json()) as { dispute: { id: string } };
    const results = await Promise.all([resolve(dispute.id), resolve(dispute.id), resolve(dispute.id)]);
    const bodies = (await Promise.all(results.map((r) => r.json()))) as { clawback: { status: string; amountMicros: number; sellerId: string } }[];
    expect(bodies.filter((b) => b.clawback.status === "recorded")).toHaveLength(1);
    for (const b of bodies) expect(b.clawback).toMatchObject({ amountMicros: 1800, sellerId: seller.id });
    const rows = await ownerDb((sql) => sql`select key_id, request_id, amount_micros::int as amount from public.clawbacks where seller_id = ${seller.id}`);
    expect(rows.map((r) => ({ ...r }))).toEqual([{ key_id: keyId, request_id: paid.requestId, amount: 1800 }]);
    // The balance goes below zero: the marketplace does not absorb it.
    expect((await balanceOf(seller)).availableMicros).toBe(-1800);
    const view = await ownerDb((sql) => sql`select clawed_back_micros::int as c from public.seller_balances where seller_id = ${seller.id}`);
    expect(view[0]!.c).toBe(1800);
    // The seller sees it in its earnings and its data export (S9).
    const earnings = (await (await as(seller, "/api/earnings")).json()) as { clawbacks: { disputeId: string; requestId: string; amountMicros: number }[] };
    expect(earnings.clawbacks).toEqual([expect.objectContaining({ disputeId: dispute.id, requestId: paid.requestId, amountMicros: 1800 })]);
    const exported = (await (await as(seller, "/api/export")).json()) as { clawbacks: { disputeId: string }[] };
    expect(exported.clawbacks.map((c) => c.disputeId)).toEqual([dispute.id]);

    // Nothing to pay while negative; the next earnings are netted by the next payout.
    await ownerDb((sql) => sql`update public.payouts set status = 'paid', completed_at = now() where id = ${first.payout.id}`);
    expect(((await (await as(seller, "/api/payouts", { method: "POST", json: {} })).json()) as { error: { code: string } }).error.code).toBe("below_minimum");
    await earnDirect(seller, 1_000_000, "later");
    const next = (await (await as(seller, "/api/payouts", { method: "POST", json: {} })).json()) as { payout: PayoutView };
    // 1,000,000 - 1,800 = 998,200 available: 99 cents paid, 8,200 micro-dollars stay.
    expect(next.payout).toMatchObject({ amountMicros: 990_000, amountUnits: 99, status: "sent" });
    const transfers = ((await (await fetch(`${e.STRIPE_API_BASE}/__fake/transfers`)).json()) as { transfers: { destination: string; amount: number }[] }).transfers
      .filter((t) => t.destination === accountId).map((t) => t.amount);
    expect(transfers).toEqual([301, 99]);
    expect(await balanceOf(seller)).toEqual({ earnedMicros: 4_010_000, withdrawnMicros: 4_000_000, availableMicros: 8_200 });
  });
});
