// Tabs through the Worker's real entry (docs/payments.md, "Tabs"): a buyer busy enough draws
// its payments on a tab the wallet set aside once, the serving key records each draw with
// its earning, and once the tab closes (or, with its router gone, once the keys reported
// and the wallet settled it) the wallet's books read as if each request had been debited
// alone: one claim per paid request, refunds recorded, the rest returned.
import { runInDurableObject } from "cloudflare:test";
import { Challenge } from "mppx";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { creditClient, generateBuyerKey, type BuyerKey } from "../../buyer/keys.ts";
import { createPayingFetch } from "../../buyer/index.ts";
import { H } from "../../schema/wire.ts";
import { TAB_SETTLE_GRACE_MS } from "../../schema/wallet.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { REPORT_AFTER_MS } from "../../objects/seller-key/seller-key.ts";
import { creditChallenge } from "../../worker/payments/credit-challenge.ts";
import { routeScope } from "../../worker/payments/server.ts";
import { retireTabs, TAB_BUSY_DRAWS, TAB_MAX_MS } from "../../worker/payments/tabs.ts";
import { addKey, api, call, demo } from "./helpers.ts";
import { ask, balanceOf, CHAT, chatJson, credentialFrom, e, fund, problem, receiptOf, ROUTE, wallet } from "./payments-helpers.ts";

const made: string[] = [];

async function key(priceMicros: number) {
  const k = await addKey({ config: { priceMicros, region: "us" } });
  made.push(k.keyId);
  return { keyId: k.keyId, credential: k.credential, stub: keyStub(e, k.keyId, k.key.home) };
}

beforeEach(async () => {
  // Tabs of earlier tests are closed, and their keys leave the pool (removal flushes and reports).
  await retireTabs(e);
  for (const keyId of made.splice(0)) expect((await api(`/api/keys/${keyId}`, { method: "DELETE" })).status).toBe(200);
});

afterEach(() => {
  vi.restoreAllMocks();
});

async function buyer(micros: number): Promise<BuyerKey> {
  const b = await generateBuyerKey();
  await fund(b.buyerId, micros);
  return b;
}

/** createPayingFetch over the Worker's entry: each call after the first pays the challenge the last answer carried. */
function payingClient(b: BuyerKey) {
  const pay = createPayingFetch({
    baseUrl: "https://cn2.test", privateKey: b,
    fetch: (input, init) => call(new URL(input instanceof Request ? input.url : String(input)).pathname, init),
  });
  return () => pay(`https://cn2.test${CHAT}`, { method: "POST", headers: { "content-type": "application/json" }, body: chatJson() });
}

const claimsOf = (buyerId: string) => runInDurableObject(wallet(buyerId), (_i, state) =>
  state.storage.sql.exec<{ proof_id: string; amount: number; refunded_at: number | null; tab_id: string | null }>("SELECT proof_id, amount, refunded_at, tab_id FROM claims").toArray());
type Key = Awaited<ReturnType<typeof key>>;
const tabDrawsOf = (k: Key) => runInDurableObject(k.stub, (_i, state) =>
  state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM tab_draws").one().n);
const earnedBy = async (k: Key) => {
  const r = await k.stub.inspect();
  if (!r.ok) throw new Error(r.message);
  return r.value.earnings.unflushedMicros + r.value.earnings.feeMicros;
};

/**
 * Make `b` busy at this isolate: TAB_BUSY_DRAWS + 2 paid requests at once, so the rate
 * passes the threshold whatever the machine's pace. Each pays a 402's challenge: those are
 * unbound, claimed in the wallet one by one; the next challenges paid answers carry are
 * bound to this isolate, and a busy buyer pays those from a tab. The receipts.
 */
async function warmUp(b: BuyerKey) {
  const credentials = await Promise.all(Array.from({ length: TAB_BUSY_DRAWS + 2 }, async () => (await credentialFrom(await ask(), b)).credential));
  const results = await Promise.all(credentials.map((c) => ask({}, c)));
  const receipts = [];
  for (const res of results) {
    await res.arrayBuffer();
    expect(res.status).toBe(200);
    receipts.push({ status: res.status, receipt: receiptOf(res) });
  }
  return receipts;
}

/** `n` paid calls one after another; the receipts. */
async function payMany(pay: () => Promise<Response>, n: number) {
  const receipts = [];
  for (let i = 0; i < n; i++) {
    const res = await pay();
    await res.arrayBuffer();
    receipts.push({ status: res.status, receipt: receiptOf(res) });
  }
  return receipts;
}

describe("tabs (docs/payments.md)", () => {
  it("PR16: a busy buyer's requests draw on holds, not a debit each; once the tab closes the wallet has one claim per paid request and the books add up", async () => {
    const k = await key(1000);
    const b = await buyer(1_000_000);
    const pay = payingClient(b);
    const receipts = [...(await warmUp(b)), ...(await payMany(pay, 20))];
    const total = TAB_BUSY_DRAWS + 2 + 20;
    expect(receipts).toHaveLength(total);
    expect(receipts.every((r) => r.status === 200 && !r.receipt.refunded)).toBe(true);

    // Open: the wallet claimed the 402s' payments (the warm-up, the client's first); the rest
    // is drawn on tabs (the retired ones already closed, the last one still holding credit).
    const open = await wallet(b.buyerId).summary(500);
    const perRequest = (await claimsOf(b.buyerId)).filter((c) => c.tab_id === null).length;
    expect(perRequest).toBe(TAB_BUSY_DRAWS + 3);
    expect(open.heldMicros).toBeGreaterThan(0);
    expect(open.history.filter((h) => h.kind === "hold").length).toBeGreaterThanOrEqual(1);
    // Each draw is in the serving key's storage with its earning.
    expect(await tabDrawsOf(k)).toBe(total - perRequest);

    await retireTabs(e);
    const closed = await wallet(b.buyerId).summary(500);
    const claims = await claimsOf(b.buyerId);
    expect(claims.map((c) => c.proof_id).sort()).toEqual(receipts.map((r) => r.receipt.reference).sort());
    expect(claims.filter((c) => c.tab_id !== null)).toHaveLength(total - perRequest);
    expect(closed.heldMicros).toBe(0);
    expect(closed.balanceMicros).toBe(1_000_000 - total * 1000);
    expect(closed.history.filter((h) => h.kind === "debit")).toHaveLength(total);
    expect(await earnedBy(k)).toBe(total * 1000);
    const spend = await wallet(b.buyerId).spendDays();
    expect(spend.reduce((s, d) => s + d.requests, 0)).toBe(total);
    expect(spend.reduce((s, d) => s + d.spentMicros - d.refundedMicros, 0)).toBe(total * 1000);

    // The key's flush makes its draws final and reports them: nothing is counted twice.
    expect((await k.stub.flushEarnings()).ok).toBe(true);
    expect(await tabDrawsOf(k)).toBe(0);
    expect(await claimsOf(b.buyerId)).toHaveLength(total);
    expect(await balanceOf(b.buyerId)).toBe(1_000_000 - total * 1000);
  });

  it("PR23: a proof drawn on a tab is single use: 12 concurrent copies of one credential find one winner, and a replay is refused", async () => {
    await key(1000);
    const b = await buyer(1_000_000);
    await warmUp(b);
    // Paid without asking for a pass (a client other than cn2-buyer): its answer carries a next challenge.
    const last = await ask({}, (await credentialFrom(await ask(), b)).credential);
    await last.arrayBuffer();
    const next = Challenge.deserialize(last.headers.get(H.nextChallenge)!);
    const credential = await creditClient(b).createCredential({ challenge: next as never });
    const results = await Promise.all(Array.from({ length: 12 }, () => ask({}, credential)));
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    const refused = results.filter((r) => r.status === 402);
    expect(refused).toHaveLength(11);
    for (const r of refused) expect((await problem(r)).code).toBe("replayed");
    for (const r of results.filter((r) => r.status === 200)) await r.arrayBuffer();
    const again = await ask({}, credential);
    expect(again.status).toBe(402);
    expect((await problem(again)).code).toBe("replayed");
    await retireTabs(e);
    // The warm-up, the one paid above, the one winner.
    expect(await balanceOf(b.buyerId)).toBe(1_000_000 - (TAB_BUSY_DRAWS + 2 + 1 + 1) * 1000);
  });

  it("B6: a tab draw whose request failed goes back to the tab: the buyer's receipt says refunded, and the closed tab records the debit and its refund", async () => {
    const k = await key(1000);
    const b = await buyer(1_000_000);
    const pay = payingClient(b);
    await warmUp(b);
    await payMany(pay, 1);
    await demo("/__demo/behaviour", { credential: k.credential, status: 500 });
    const failed = await pay();
    await failed.arrayBuffer();
    expect(failed.status).toBe(502);
    const receipt = receiptOf(failed);
    expect(receipt.refunded).toBe(true);
    await demo("/__demo/behaviour", { credential: k.credential });
    await payMany(pay, 2);
    await retireTabs(e);
    const summary = await wallet(b.buyerId).summary(500);
    const paidCount = TAB_BUSY_DRAWS + 2 + 1 + 1 + 2;
    expect(summary.history.filter((h) => h.kind === "debit")).toHaveLength(paidCount);
    expect(summary.history.filter((h) => h.kind === "refund").map((h) => h.ref)).toEqual([receipt.reference]);
    expect(summary.balanceMicros).toBe(1_000_000 - (paidCount - 1) * 1000);
    expect(await earnedBy(k)).toBe((paidCount - 1) * 1000);
  });

  it("a challenge bound to a router epoch this instance does not hold is refused with a fresh challenge (challenge_elsewhere), and moves no money", async () => {
    await key(1000);
    const b = await buyer(10_000);
    const foreign = await creditChallenge(e.MPP_SECRET_KEY!, e.MPP_REALM || "cn2", {
      amountMicros: 1000, scope: await routeScope(ROUTE), expires: new Date(Date.now() + 60_000).toISOString(), nonce: "n".repeat(32), epoch: "0123456789abcdef",
    });
    const credential = await creditClient(b).createCredential({ challenge: foreign as never });
    const res = await ask({}, credential);
    expect(res.status).toBe(402);
    expect(res.headers.get("www-authenticate")).toContain("Payment");
    expect((await problem(res)).code).toBe("challenge_elsewhere");
    expect(await balanceOf(b.buyerId)).toBe(10_000);
    // The fresh one pays.
    const { credential: fresh } = await credentialFrom(await ask(), b);
    const ok = await ask({}, fresh);
    expect(ok.status).toBe(200);
    await ok.arrayBuffer();
    expect(await balanceOf(b.buyerId)).toBe(9_000);
  });

  it("PR16: a key reports its tab draws only once REPORT_AFTER_MS old (a living router's close claims them first); its alarm comes back for them, and reported or closed, each draw is one claim", async () => {
    const k = await key(1000);
    const b = await buyer(1_000_000);
    const pay = payingClient(b);
    await warmUp(b);
    await payMany(pay, 3);
    const drawn = await tabDrawsOf(k);
    expect(drawn).toBeGreaterThan(0);
    const tabClaims = async () => (await claimsOf(b.buyerId)).filter((c) => c.tab_id !== null).length;
    // The flush alarm makes the draws final but reports none of them yet: they are young.
    await runInDurableObject(k.stub, (instance) => instance.alarm());
    expect(await tabDrawsOf(k)).toBe(drawn);
    expect(await tabClaims()).toBe(0);
    expect(await runInDurableObject(k.stub, (_i, state) => state.storage.getAlarm())).not.toBeNull();
    // Old enough, the next alarm reports them: one claim per draw in the wallet.
    vi.spyOn(Date, "now").mockReturnValue(Date.now() + REPORT_AFTER_MS + 1);
    await runInDurableObject(k.stub, (instance) => instance.alarm());
    vi.restoreAllMocks();
    expect(await tabDrawsOf(k)).toBe(0);
    expect(await tabClaims()).toBe(drawn);
    // The router's close, after them, adds nothing: the books are exact.
    await retireTabs(e);
    const served = TAB_BUSY_DRAWS + 2 + 3;
    expect(await claimsOf(b.buyerId)).toHaveLength(served);
    expect(await balanceOf(b.buyerId)).toBe(1_000_000 - served * 1000);
    expect(REPORT_AFTER_MS).toBeGreaterThan(TAB_MAX_MS);
    expect(REPORT_AFTER_MS).toBeLessThan(TAB_SETTLE_GRACE_MS);
  });

  it("PR16: a tab its router never closed is settled on what the keys reported: the buyer pays for the served draws only, and the router's late close changes nothing", async () => {
    const k = await key(1000);
    const b = await buyer(1_000_000);
    const pay = payingClient(b);
    await warmUp(b);
    await payMany(pay, 3);
    await demo("/__demo/behaviour", { credential: k.credential, status: 500 });
    const failed = await pay();
    await failed.arrayBuffer();
    expect(receiptOf(failed).refunded).toBe(true);
    await demo("/__demo/behaviour", { credential: k.credential });
    const served = TAB_BUSY_DRAWS + 2 + 3;
    // The keys report what they served (their flush makes the draws final).
    expect((await k.stub.flushEarnings()).ok).toBe(true);
    const held = (await wallet(b.buyerId).summary()).heldMicros;
    expect(held).toBeGreaterThan(0);
    // The router is gone (as after a deploy): the wallet's alarm settles the tab after its grace.
    const later = Date.now() + TAB_MAX_MS + TAB_SETTLE_GRACE_MS + 1000;
    vi.spyOn(Date, "now").mockReturnValue(later);
    await runInDurableObject(wallet(b.buyerId), (instance) => instance.alarm());
    vi.restoreAllMocks();
    const settled = await wallet(b.buyerId).summary(500);
    expect(settled.heldMicros).toBe(0);
    expect(settled.balanceMicros).toBe(1_000_000 - served * 1000);
    expect(settled.history.filter((h) => h.kind === "debit")).toHaveLength(served);
    // The router's own close, arriving after, moves nothing.
    await retireTabs(e);
    expect(await balanceOf(b.buyerId)).toBe(1_000_000 - served * 1000);
    expect(await claimsOf(b.buyerId)).toHaveLength(served);
  });
});
