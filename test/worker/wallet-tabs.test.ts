// Tabs on the BuyerWallet object (docs/payments.md, "Tabs"): a router's hold (openTab), its
// close with the full list of draws (closeTab), the keys' reports of the draws they served
// (reportTabs), the alarm's settlement of a tab its router never closed, and the books
// under random sequences of all of these (fast-check): one claim per paid request, each
// debited once, as if each had been debited alone.
import { env } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Env } from "../../core/env.ts";
import { walletStub } from "../../objects/buyer-wallet/stub.ts";
import { TAB_SETTLE_GRACE_MS, type TabDraw } from "../../schema/wallet.ts";

const e = env as unknown as Env;
const hexId = () => [...crypto.getRandomValues(new Uint8Array(32))].map((b) => b.toString(16).padStart(2, "0")).join("");
const DAY_MS = 86_400_000;
const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);
const soon = () => Date.now() + 60_000;

/** A funded wallet of a new buyer. */
async function funded(amountMicros: number) {
  const buyerId = hexId();
  const w = walletStub(e, buyerId);
  if (amountMicros > 0) expect((await w.topUp({ buyerId, eventId: "seed", amountMicros, source: "ops" })).ok).toBe(true);
  return { buyerId, w };
}

const draw = (proofId: string, amountMicros: number, over: Partial<TabDraw> = {}): TabDraw => ({
  proofId, requestId: `req_${proofId}`, amountMicros, at: Date.now(), expiresAt: Date.now() + 5 * 60_000, ...over,
});

type W = ReturnType<typeof walletStub>;
const sql = <T extends Record<string, SqlStorageValue>>(w: W, query: string, ...args: SqlStorageValue[]) =>
  runInDurableObject(w, (_i, state) => state.storage.sql.exec<T>(query, ...args).toArray());
const history = async (w: W) => (await w.summary(500)).history.reverse().map((h) => [h.kind, h.amountMicros, h.ref] as const);
const balanceOf = async (w: W) => (await w.summary()).balanceMicros;
/** One tab's draws, reported as a key reports them (reportTabs). */
const reportTab = (w: W, tabId: string, draws: TabDraw[]) => w.reportTabs([{ tabId, draws }]);
/** Make a tab look expired past its grace, so the next alarm settles it. */
const expire = (w: W, tabId: string) => sql(w, "UPDATE tabs SET expires_at = ? WHERE tab_id = ?", Date.now() - TAB_SETTLE_GRACE_MS - 1, tabId);

afterEach(() => vi.restoreAllMocks());

/** Capture the wallet's JSON log lines (the object shares the test's isolate). */
function logs() {
  const lines: Record<string, unknown>[] = [];
  vi.spyOn(console, "error").mockImplementation((line: unknown) => {
    try {
      lines.push(JSON.parse(String(line)) as Record<string, unknown>);
    } catch {
      lines.push({ line: String(line) });
    }
  });
  return lines;
}

describe("openTab", () => {
  it("grants min(want, balance), holds it out of the balance, shows it as held and writes a hold row; a retry grants nothing more", async () => {
    const { buyerId, w } = await funded(10_000);
    expect(await w.openTab({ buyerId, tabId: "t1", wantMicros: 4_000, minMicros: 100, expiresAt: soon() })).toEqual({ ok: true, value: { grantedMicros: 4_000, balanceMicros: 6_000 } });
    // Idempotent on the tab id: the same grant, no second debit.
    expect(await w.openTab({ buyerId, tabId: "t1", wantMicros: 4_000, minMicros: 100, expiresAt: soon() })).toEqual({ ok: true, value: { grantedMicros: 4_000, balanceMicros: 6_000 } });
    // Less than wanted: what the balance has.
    expect(await w.openTab({ buyerId, tabId: "t2", wantMicros: 20_000, minMicros: 100, expiresAt: soon() })).toEqual({ ok: true, value: { grantedMicros: 6_000, balanceMicros: 0 } });
    expect(await w.openTab({ buyerId, tabId: "t3", wantMicros: 200, minMicros: 1, expiresAt: soon() })).toMatchObject({ ok: false, code: "insufficient_balance" });
    const s = await w.summary();
    expect(s).toMatchObject({ balanceMicros: 0, heldMicros: 10_000, spentTodayMicros: 0 });
    expect(await history(w)).toEqual([["topup", 10_000, "seed"], ["hold", 4_000, "t1"], ["hold", 6_000, "t2"]]);
    expect(s.history[0]).toMatchObject({ kind: "hold", balanceMicros: 0 });
    // The alarm comes no later than the tab's settlement time.
    expect(await runInDurableObject(w, (_i, state) => state.storage.getAlarm())).toBeLessThanOrEqual(soon() + TAB_SETTLE_GRACE_MS);
  });

  it("refuses below minMicros: insufficient_balance on the balance, budget_exceeded on the daily cap, which counts spend and holds", async () => {
    const { buyerId, w } = await funded(10_000);
    expect(await w.openTab({ buyerId, tabId: "big", wantMicros: 20_000, minMicros: 10_001, expiresAt: soon() })).toMatchObject({ ok: false, code: "insufficient_balance" });
    expect((await w.setDailyCap(buyerId, 3_000)).ok).toBe(true);
    expect((await w.claimAndDebit({ buyerId, proofId: "direct", amountMicros: 500, expiresAt: soon(), method: "credit" })).ok).toBe(true);
    // Cap room: 3000 - 500 spent - 0 held.
    expect(await w.openTab({ buyerId, tabId: "c1", wantMicros: 5_000, minMicros: 100, expiresAt: soon() })).toEqual({ ok: true, value: { grantedMicros: 2_500, balanceMicros: 7_000 } });
    expect(await w.openTab({ buyerId, tabId: "c2", wantMicros: 100, minMicros: 1, expiresAt: soon() })).toMatchObject({ ok: false, code: "budget_exceeded" });
    // A direct debit sees the hold too.
    expect(await w.claimAndDebit({ buyerId, proofId: "direct2", amountMicros: 1, expiresAt: soon(), method: "credit" })).toMatchObject({ ok: false, code: "budget_exceeded" });
    // A reported draw moves from held to spent: the room stays 0, not double-counted.
    expect(await reportTab(w, "c1", [draw("d1", 1_000)])).toEqual({ ok: true, value: { recorded: 1 } });
    expect(await w.summary()).toMatchObject({ heldMicros: 1_500, spentTodayMicros: 1_500 });
    expect(await w.openTab({ buyerId, tabId: "c3", wantMicros: 100, minMicros: 1, expiresAt: soon() })).toMatchObject({ ok: false, code: "budget_exceeded" });
    // Closed: the unspent 1500 is released, room for exactly that.
    expect(await w.closeTab({ tabId: "c1", draws: [draw("d1", 1_000)] })).toEqual({ ok: true, value: { releasedMicros: 1_500, changed: true } });
    expect(await w.openTab({ buyerId, tabId: "c4", wantMicros: 5_000, minMicros: 1, expiresAt: soon() })).toMatchObject({ ok: true, value: { grantedMicros: 1_500 } });
    expect(await w.summary()).toMatchObject({ heldMicros: 1_500, spentTodayMicros: 1_500, balanceMicros: 10_000 - 500 - 1_000 - 1_500 });
  });

  it("refuses amounts that are not positive whole micro-dollars, and minMicros above wantMicros", async () => {
    const { buyerId, w } = await funded(10_000);
    for (const [wantMicros, minMicros] of [[0, 0], [100, 0], [100, 101], [1.5, 1], [-5, -5], [2 ** 60, 1]] as const) {
      expect(await w.openTab({ buyerId, tabId: `x${wantMicros}:${minMicros}`, wantMicros, minMicros, expiresAt: soon() })).toMatchObject({ ok: false, code: "invalid_amount" });
    }
    expect(await w.closeTab({ tabId: "none", draws: [draw("p", 0)] })).toMatchObject({ ok: false, code: "invalid_amount" });
    expect(await balanceOf(w)).toBe(10_000);
  });
});

describe("closeTab", () => {
  it("keeps the draws' claims, records the router's refunds without crediting them, releases the rest once, and a second close changes nothing", async () => {
    const { buyerId, w } = await funded(10_000);
    await w.openTab({ buyerId, tabId: "t", wantMicros: 5_000, minMicros: 100, expiresAt: soon() });
    const yesterday = Date.now() - DAY_MS;
    const draws = [draw("a", 1_000), draw("b", 500, { refundReason: "upstream_error" }), draw("c", 700, { at: yesterday })];
    expect(await w.closeTab({ tabId: "t", draws })).toEqual({ ok: true, value: { releasedMicros: 3_300, changed: true } });
    expect(await w.summary()).toMatchObject({ balanceMicros: 10_000 - 1_700, heldMicros: 0, spentTodayMicros: 1_000 });
    expect(await history(w)).toEqual([
      ["topup", 10_000, "seed"], ["hold", 5_000, "t"],
      ["debit", 1_000, "a"], ["debit", 500, "b"], ["debit", 700, "c"], ["refund", 500, "b"], ["release", 3_300, "t"],
    ]);
    expect(await w.spendDays()).toEqual([
      { day: utcDay(yesterday), spentMicros: 700, refundedMicros: 0, requests: 1 },
      { day: utcDay(Date.now()), spentMicros: 1_500, refundedMicros: 500, requests: 2 },
    ]);
    expect(await sql(w, "SELECT proof_id, amount, debited, tab_id, refund_reason, refunded_in_tab FROM claims ORDER BY proof_id")).toEqual([
      { proof_id: "a", amount: 1_000, debited: 1, tab_id: "t", refund_reason: null, refunded_in_tab: null },
      { proof_id: "b", amount: 500, debited: 1, tab_id: "t", refund_reason: "upstream_error", refunded_in_tab: 1 },
      { proof_id: "c", amount: 700, debited: 1, tab_id: "t", refund_reason: null, refunded_in_tab: null },
    ]);
    expect(await sql(w, "SELECT granted, kept, closed_by FROM tabs")).toEqual([{ granted: 5_000, kept: 1_700, closed_by: "router" }]);

    // A retry: nothing moves.
    expect(await w.closeTab({ tabId: "t", draws })).toEqual({ ok: true, value: { releasedMicros: 0, changed: false } });
    expect(await balanceOf(w)).toBe(8_300);
    expect(await history(w)).toHaveLength(7);
    // The draws are claims: single use, refundable once (B6).
    expect(await w.claimAndDebit({ buyerId, proofId: "a", amountMicros: 1_000, expiresAt: soon(), method: "credit" })).toMatchObject({ ok: false, code: "replayed" });
    expect(await w.refund("b", "again")).toMatchObject({ ok: false, code: "already_refunded" });
    expect(await w.refund("a", "b6")).toEqual({ ok: true, value: { balanceMicros: 9_300, refundedMicros: 1_000 } });
    expect(await w.closeTab({ tabId: "nope", draws: [] })).toMatchObject({ ok: false, code: "unknown_tab" });
  });

  it("openTab with close: the previous tab closes and the next opens in one call, its release counting toward the grant", async () => {
    const { buyerId, w } = await funded(3_000);
    expect(await w.openTab({ buyerId, tabId: "t1", wantMicros: 3_000, minMicros: 100, expiresAt: soon() })).toMatchObject({ ok: true, value: { grantedMicros: 3_000, balanceMicros: 0 } });
    const close = { tabId: "t1", draws: [draw("a", 1_000)] };
    expect(await w.openTab({ buyerId, tabId: "t2", wantMicros: 3_000, minMicros: 100, expiresAt: soon(), close })).toEqual({ ok: true, value: { grantedMicros: 2_000, balanceMicros: 0 } });
    expect(await history(w)).toEqual([["topup", 3_000, "seed"], ["hold", 3_000, "t1"], ["debit", 1_000, "a"], ["release", 2_000, "t1"], ["hold", 2_000, "t2"]]);
    // The retry of that call: the same answer, nothing moves.
    expect(await w.openTab({ buyerId, tabId: "t2", wantMicros: 3_000, minMicros: 100, expiresAt: soon(), close })).toEqual({ ok: true, value: { grantedMicros: 2_000, balanceMicros: 0 } });
    expect(await history(w)).toHaveLength(5);
    // A refused open still closes: t2 spent all but 100 and the next wants more than that.
    const close2 = { tabId: "t2", draws: [draw("b", 1_900)] };
    expect(await w.openTab({ buyerId, tabId: "t3", wantMicros: 500, minMicros: 200, expiresAt: soon(), close: close2 })).toMatchObject({ ok: false, code: "insufficient_balance" });
    expect(await sql(w, "SELECT tab_id, kept, closed_by FROM tabs ORDER BY tab_id")).toEqual([
      { tab_id: "t1", kept: 1_000, closed_by: "router" }, { tab_id: "t2", kept: 1_900, closed_by: "router" },
    ]);
    expect(await w.summary()).toMatchObject({ balanceMicros: 100, heldMicros: 0 });
    expect(await w.openTab({ buyerId, tabId: "t4", wantMicros: 50, minMicros: 50, expiresAt: soon(), close: { tabId: "unknown", draws: [] } })).toMatchObject({ ok: false, code: "unknown_tab" });
  });

  it("a drawn proof that a debit still waiting in the group commit holds stays that debit's: no conflicting insert, the tab does not keep it", async () => {
    const { buyerId, w } = await funded(10_000);
    await w.openTab({ buyerId, tabId: "t", wantMicros: 5_000, minMicros: 100, expiresAt: soon() });
    // Same turn: the claim is accepted in memory and queued when the close runs.
    const [debit, close] = await runInDurableObject(w, (instance) => {
      const debit = instance.claimAndDebit({ buyerId, proofId: "x", amountMicros: 300, expiresAt: soon(), method: "credit" });
      const close = instance.closeTab({ tabId: "t", draws: [draw("x", 300), draw("y", 200)] });
      return Promise.all([debit, close]);
    });
    expect(debit).toEqual({ ok: true, value: { balanceMicros: 4_700 } });
    expect(close).toEqual({ ok: true, value: { releasedMicros: 4_800, changed: true } });
    expect(await sql(w, "SELECT proof_id, amount, tab_id FROM claims ORDER BY proof_id")).toEqual([
      { proof_id: "x", amount: 300, tab_id: null }, { proof_id: "y", amount: 200, tab_id: "t" },
    ]);
    expect(await balanceOf(w)).toBe(10_000 - 500);
  });

  it("closes a few thousand draws in one call", async () => {
    const { buyerId, w } = await funded(1_000_000);
    await w.openTab({ buyerId, tabId: "t", wantMicros: 1_000_000, minMicros: 1, expiresAt: soon() });
    const draws = Array.from({ length: 3_000 }, (_, i) => draw(`p${i}`, 100, i % 10 === 0 ? { refundReason: "r" } : {}));
    await reportTab(w, "t", draws.slice(0, 1_000).filter((d) => !d.refundReason));
    expect(await w.closeTab({ tabId: "t", draws })).toEqual({ ok: true, value: { releasedMicros: 1_000_000 - 2_700 * 100, changed: true } });
    expect(await w.spendDays()).toEqual([{ day: utcDay(Date.now()), spentMicros: 300_000, refundedMicros: 30_000, requests: 3_000 }]);
    expect(await balanceOf(w)).toBe(1_000_000 - 270_000);
  });
});

describe("reportTabs, one tab at a time", () => {
  it("before the close: each draw is claimed once, and the close listing the same draws adds no second debit or spend", async () => {
    const { buyerId, w } = await funded(10_000);
    await w.openTab({ buyerId, tabId: "t", wantMicros: 5_000, minMicros: 100, expiresAt: soon() });
    const a = draw("a", 100), b = draw("b", 200), c = draw("c", 300);
    expect(await reportTab(w, "t", [a, b])).toEqual({ ok: true, value: { recorded: 2 } });
    expect(await reportTab(w, "t", [a, b])).toEqual({ ok: true, value: { recorded: 0 } });
    expect(await w.summary()).toMatchObject({ balanceMicros: 5_000, heldMicros: 4_700, spentTodayMicros: 300 });
    expect(await w.closeTab({ tabId: "t", draws: [a, b, c] })).toEqual({ ok: true, value: { releasedMicros: 4_400, changed: true } });
    expect(await history(w)).toEqual([["topup", 10_000, "seed"], ["hold", 5_000, "t"], ["debit", 100, "a"], ["debit", 200, "b"], ["debit", 300, "c"], ["release", 4_400, "t"]]);
    expect(await w.spendDays()).toEqual([{ day: utcDay(Date.now()), spentMicros: 600, refundedMicros: 0, requests: 3 }]);
    expect(await balanceOf(w)).toBe(9_400);
  });

  it("several tabs in one call (reportTabs, a key's report after a flush): each draw claimed once, the closes add nothing, bad input refused whole", async () => {
    const { buyerId, w } = await funded(10_000);
    await w.openTab({ buyerId, tabId: "t1", wantMicros: 1_000, minMicros: 100, expiresAt: soon() });
    await w.openTab({ buyerId, tabId: "t2", wantMicros: 1_000, minMicros: 100, expiresAt: soon() });
    const a = draw("a", 100), b = draw("b", 200), c = draw("c", 300);
    expect(await w.reportTabs([{ tabId: "t1", draws: [a, b] }, { tabId: "t2", draws: [c] }])).toEqual({ ok: true, value: { recorded: 3 } });
    expect(await w.reportTabs([{ tabId: "t1", draws: [a, b] }, { tabId: "t2", draws: [c] }])).toEqual({ ok: true, value: { recorded: 0 } });
    expect(await w.reportTabs([{ tabId: "t1", draws: [draw("d", -1)] }, { tabId: "t2", draws: [draw("e", 100)] }])).toMatchObject({ ok: false, code: "invalid_amount" });
    expect(await w.closeTab({ tabId: "t1", draws: [a, b] })).toMatchObject({ ok: true, value: { releasedMicros: 700 } });
    expect(await w.closeTab({ tabId: "t2", draws: [c] })).toMatchObject({ ok: true, value: { releasedMicros: 700 } });
    expect(await balanceOf(w)).toBe(9_400);
    expect((await history(w)).filter(([kind]) => kind === "debit")).toEqual([["debit", 100, "a"], ["debit", 200, "b"], ["debit", 300, "c"]]);
  });

  it("a draw reported as served that the router's close says it refunded: refunded in the tab, not charged, and logged", async () => {
    const lines = logs();
    const { buyerId, w } = await funded(10_000);
    await w.openTab({ buyerId, tabId: "t", wantMicros: 5_000, minMicros: 100, expiresAt: soon() });
    await reportTab(w, "t", [draw("a", 100)]);
    expect(await w.closeTab({ tabId: "t", draws: [draw("a", 100, { refundReason: "upstream_error" })] })).toMatchObject({ ok: true, value: { releasedMicros: 5_000 } });
    expect(await balanceOf(w)).toBe(10_000);
    expect(lines).toContainEqual({ evt: "tab_refund_after_report", tabId: "t", proofId: "a" });
  });

  it("after the router's close: a draw its list missed is debited now, down to 0 at most (the shortfall logged)", async () => {
    const lines = logs();
    const { buyerId, w } = await funded(1_000);
    await w.openTab({ buyerId, tabId: "t", wantMicros: 1_000, minMicros: 100, expiresAt: soon() });
    await w.closeTab({ tabId: "t", draws: [draw("a", 100)] });
    expect(await balanceOf(w)).toBe(900);
    expect(await reportTab(w, "t", [draw("a", 100), draw("b", 300)])).toEqual({ ok: true, value: { recorded: 1 } });
    expect(await balanceOf(w)).toBe(600);
    expect(lines).toContainEqual({ evt: "tab_report_after_close", tabId: "t", proofId: "b" });
    expect(await reportTab(w, "t", [draw("c", 1_000)])).toEqual({ ok: true, value: { recorded: 1 } });
    expect(await balanceOf(w)).toBe(0);
    expect(lines).toContainEqual({ evt: "tab_shortfall", tabId: "t", micros: 400 });
    expect((await history(w)).slice(-2)).toEqual([["debit", 300, "b"], ["debit", 1_000, "c"]]);
    expect(await sql(w, "SELECT kept FROM tabs")).toEqual([{ kept: 1_400 }]);
  });

  it("of an unknown tab: the claims are recorded (single use) without moving the balance, and logged", async () => {
    const lines = logs();
    const { buyerId, w } = await funded(1_000);
    expect(await reportTab(w, "ghost", [draw("a", 100)])).toEqual({ ok: true, value: { recorded: 1 } });
    expect(await balanceOf(w)).toBe(1_000);
    expect(lines).toContainEqual({ evt: "tab_report_unknown_tab", tabId: "ghost" });
    expect(await w.claimAndDebit({ buyerId, proofId: "a", amountMicros: 100, expiresAt: soon(), method: "credit" })).toMatchObject({ ok: false, code: "replayed" });
  });
});

describe("tab settlement", () => {
  it("a tab its router never closed is settled by the alarm on the keys' reports after its grace; a later report is debited", async () => {
    const lines = logs();
    const { buyerId, w } = await funded(10_000);
    await w.openTab({ buyerId, tabId: "lost", wantMicros: 5_000, minMicros: 100, expiresAt: soon() });
    await reportTab(w, "lost", [draw("a", 700), draw("b", 300)]);
    // Not yet past its grace: the alarm leaves it open.
    await runDurableObjectAlarm(w);
    expect(await sql(w, "SELECT closed_by FROM tabs")).toEqual([{ closed_by: null }]);
    await expire(w, "lost");
    const later = soon() + 120_000;
    await w.openTab({ buyerId, tabId: "next", wantMicros: 1_000, minMicros: 100, expiresAt: later });
    await runDurableObjectAlarm(w);
    expect(await sql(w, "SELECT tab_id, kept, closed_by FROM tabs ORDER BY tab_id")).toEqual([
      { tab_id: "lost", kept: 1_000, closed_by: "reports" }, { tab_id: "next", kept: null, closed_by: null },
    ]);
    expect(await w.summary()).toMatchObject({ balanceMicros: 10_000 - 1_000 - 1_000, heldMicros: 1_000 });
    expect(await history(w)).toContainEqual(["release", 4_000, "lost"]);
    // The next open tab's settlement is the next alarm.
    expect(await runInDurableObject(w, (_i, state) => state.storage.getAlarm())).toBe(later + TAB_SETTLE_GRACE_MS);
    // A key reporting late: debited now; the router's close, if it ever comes, moves nothing.
    expect(await reportTab(w, "lost", [draw("b", 300), draw("c", 200)])).toEqual({ ok: true, value: { recorded: 1 } });
    expect(await balanceOf(w)).toBe(7_800);
    expect(lines).toContainEqual({ evt: "tab_late_draw", tabId: "lost", proofId: "c" });
    expect(await w.closeTab({ tabId: "lost", draws: [draw("a", 700), draw("b", 300), draw("c", 200)] })).toEqual({ ok: true, value: { releasedMicros: 0, changed: false } });
    expect(await balanceOf(w)).toBe(7_800);
  });

  it("claims of an open tab outlive their retention until the tab closes; closed tabs are removed after it", async () => {
    const { buyerId, w } = await funded(10_000);
    await w.openTab({ buyerId, tabId: "t", wantMicros: 5_000, minMicros: 100, expiresAt: soon() });
    await reportTab(w, "t", [draw("old", 100, { expiresAt: Date.now() - 8 * DAY_MS })]);
    await runDurableObjectAlarm(w);
    expect(await sql(w, "SELECT proof_id FROM claims")).toEqual([{ proof_id: "old" }]);
    await w.closeTab({ tabId: "t", draws: [] });
    await sql(w, "UPDATE tabs SET closed_at = ?", Date.now() - 8 * DAY_MS);
    await runDurableObjectAlarm(w);
    expect(await sql(w, "SELECT proof_id FROM claims")).toEqual([]);
    expect(await sql(w, "SELECT tab_id FROM tabs")).toEqual([]);
    expect(await balanceOf(w)).toBe(9_900);
  });
});

describe("refunds of tab draws", () => {
  it.each([
    ["as drawn", {}],
    ["as refunded", { refundReason: "upstream_error" }],
  ] as const)("a dispute refund of a tab draw while the tab is open is credited once, whatever the router's close then lists it (%s)", async (_name, over) => {
    const { buyerId, w } = await funded(10_000);
    await w.openTab({ buyerId, tabId: "t", wantMicros: 5_000, minMicros: 100, expiresAt: soon() });
    await reportTab(w, "t", [draw("p", 1_000)]);
    const disputeId = `dsp_${crypto.randomUUID().replaceAll("-", "")}`;
    expect(await w.openDispute({ buyerId, disputeId, proofId: "p", requestId: "req_p", reason: "not_served", note: null })).toMatchObject({ ok: true });
    expect(await w.resolveDispute(disputeId, "refund", null)).toMatchObject({ ok: true, value: { dispute: { refundedMicros: 1_000 } } });
    expect(await balanceOf(w)).toBe(6_000);
    // p's money left the hold (kept) and came back through the dispute; q is the only spend.
    expect(await w.closeTab({ tabId: "t", draws: [draw("p", 1_000, over), draw("q", 500)] })).toEqual({ ok: true, value: { releasedMicros: 3_500, changed: true } });
    expect(await balanceOf(w)).toBe(10_000 - 500);
    expect((await history(w)).filter(([kind]) => kind === "refund")).toEqual([["refund", 1_000, "p"]]);
    expect(await w.spendDays()).toEqual([{ day: utcDay(Date.now()), spentMicros: 1_500, refundedMicros: 1_000, requests: 2 }]);
  });

  it("a B6 refund of a tab draw after the tab was settled credits it once", async () => {
    const { buyerId, w } = await funded(10_000);
    await w.openTab({ buyerId, tabId: "t", wantMicros: 5_000, minMicros: 100, expiresAt: soon() });
    await reportTab(w, "t", [draw("p", 1_000)]);
    await expire(w, "t");
    await runDurableObjectAlarm(w);
    expect(await balanceOf(w)).toBe(9_000);
    expect(await w.refund("p", "b6")).toMatchObject({ ok: true, value: { balanceMicros: 10_000 } });
    expect(await w.refund("p", "b6")).toMatchObject({ ok: false, code: "already_refunded" });
  });
});

// ---- the books under random sequences ---------------------------------------------------

type Op =
  | { kind: "topup"; amount: number }
  | { kind: "open"; slot: number; want: number; close: boolean }
  | { kind: "draw"; slot: number; amount: number; unlisted: boolean }
  | { kind: "report"; pick: number; count: number }
  | { kind: "routerRefund"; slot: number; index: number }
  | { kind: "refund"; pick: number }
  | { kind: "charge"; pick: number; amount: number }
  | { kind: "close"; slot: number }
  | { kind: "abandon"; slot: number }
  | { kind: "alarm" };

const slot = fc.integer({ min: 0, max: 1 });
const amount = fc.integer({ min: 1, max: 500 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant("topup" as const), amount: fc.integer({ min: 1, max: 10_000 }) }),
  { arbitrary: fc.record({ kind: fc.constant("open" as const), slot, want: fc.integer({ min: 1, max: 5_000 }), close: fc.boolean() }), weight: 3 },
  // A rare draw the router's list misses (a bug the keys' reports make up for).
  { arbitrary: fc.record({ kind: fc.constant("draw" as const), slot, amount, unlisted: fc.integer({ min: 0, max: 9 }).map((i) => i === 0) }), weight: 8 },
  { arbitrary: fc.record({ kind: fc.constant("report" as const), pick: fc.nat(30), count: fc.integer({ min: 1, max: 4 }) }), weight: 3 },
  fc.record({ kind: fc.constant("routerRefund" as const), slot, index: fc.nat(10) }),
  { arbitrary: fc.record({ kind: fc.constant("refund" as const), pick: fc.nat(30) }), weight: 2 },
  fc.record({ kind: fc.constant("charge" as const), pick: fc.nat(30), amount }),
  fc.record({ kind: fc.constant("close" as const), slot }),
  fc.record({ kind: fc.constant("abandon" as const), slot }),
  fc.constant({ kind: "alarm" as const }),
);

/** The router's side of a tab, as worker/payments/tabs.ts keeps it; `served` is what the keys saw. */
interface RouterTab { id: string; granted: number; drawn: number; draws: TabDraw[]; served: TabDraw[]; reported: Set<string> }

describe("BuyerWallet tabs invariants", () => {
  it("PR23: with tabs, top-ups - balance = debits - refunds once every tab is closed or settled; the balance is never negative; no proof is claimed twice (fast-check)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 50_000 })), fc.array(opArb, { minLength: 10, maxLength: 50, size: "max" }), async (seed, ops) => {
        const lines = logs();
        const buyerId = hexId();
        const w = walletStub(e, buyerId);
        let topups = 0, n = 0;
        const slots: (RouterTab | null)[] = [null, null];
        const tabs: RouterTab[] = [];
        const proofs: string[] = [];
        const allDraws: TabDraw[] = [];
        /** Refunded through the wallet (B6, disputes): after the request, so never by the router too. */
        const refunded = new Set<string>();
        const topUp = async (amountMicros: number) => {
          expect((await w.topUp({ buyerId, eventId: `ev${n++}`, amountMicros, source: "ops" })).ok).toBe(true);
          topups += amountMicros;
        };
        if (seed > 0) await topUp(seed);
        ops.unshift({ kind: "open", slot: 0, want: 5_000, close: false });
        const nonNegative = (r: { ok: boolean; value?: unknown }) => {
          const b = (r.value as { balanceMicros?: number } | undefined)?.balanceMicros;
          if (b !== undefined) expect(b).toBeGreaterThanOrEqual(0);
        };
        const report = async (t: RouterTab, count: number) => {
          // Keys report draws they served, never refunded ones.
          const due = t.served.filter((d) => !d.refundReason && !t.reported.has(d.proofId)).slice(0, count);
          if (due.length === 0) return;
          expect((await reportTab(w, t.id, due)).ok).toBe(true);
          for (const d of due) t.reported.add(d.proofId);
        };
        const close = async (i: number) => {
          expect((await w.closeTab({ tabId: slots[i]!.id, draws: slots[i]!.draws })).ok).toBe(true);
          slots[i] = null;
        };
        for (const op of ops) {
          const t = "slot" in op ? slots[op.slot] : null;
          switch (op.kind) {
            case "topup":
              await topUp(op.amount);
              break;
            case "open": {
              const id = `t${tabs.length}`;
              const closing = op.close && t ? { tabId: t.id, draws: t.draws } : undefined;
              const r = await w.openTab({ buyerId, tabId: id, wantMicros: op.want, minMicros: 1, expiresAt: soon(), ...(closing ? { close: closing } : {}) });
              nonNegative(r);
              // Replaced without a close: its router forgot it (settled by the alarm).
              if (t && !closing) await expire(w, t.id);
              slots[op.slot] = null;
              if (r.ok) {
                const next: RouterTab = { id, granted: r.value.grantedMicros, drawn: 0, draws: [], served: [], reported: new Set() };
                tabs.push(next);
                slots[op.slot] = next;
              } else expect(r.code).toBe("insufficient_balance");
              break;
            }
            case "draw": {
              // The router never draws past its grant; the other slot's tab if this one has none.
              const tab = t ?? slots[1 - op.slot];
              if (tab && tab.drawn + op.amount <= tab.granted) {
                const d = draw(`p${n++}`, op.amount);
                tab.served.push(d);
                if (!op.unlisted) tab.draws.push(d);
                tab.drawn += op.amount;
                proofs.push(d.proofId);
                allDraws.push(d);
              }
              break;
            }
            case "report": {
              // Any tab, whatever its state: reports come before and after a close or a settlement.
              const tab = tabs[op.pick % Math.max(tabs.length, 1)];
              if (tab) await report(tab, op.count);
              break;
            }
            case "routerRefund": {
              const d = t?.draws[op.index % Math.max(t.draws.length, 1)];
              if (t && d && !d.refundReason && !refunded.has(d.proofId)) {
                d.refundReason = "upstream_error";
                t.drawn -= d.amountMicros;
              }
              break;
            }
            case "refund": {
              // B6 or a dispute: a drawn proof, claimed or not yet.
              const p = proofs[op.pick % Math.max(proofs.length, 1)];
              if (p) {
                const r = await w.refund(p, "b6");
                if (!r.ok) expect(["unknown_proof", "already_refunded"]).toContain(r.code);
                else refunded.add(p);
                nonNegative(r);
              }
              break;
            }
            case "charge": {
              // A fresh proof, or one drawn on a tab (replayed once claimed).
              const proofId = op.pick % 2 === 0 ? `c${n++}` : proofs[op.pick % Math.max(proofs.length, 1)] ?? `c${n++}`;
              const r = await w.claimAndDebit({ buyerId, proofId, amountMicros: op.amount, expiresAt: soon(), method: "credit" });
              if (!r.ok) expect(["replayed", "insufficient_balance"]).toContain(r.code);
              nonNegative(r);
              break;
            }
            case "close":
              if (t) await close(op.slot);
              break;
            case "abandon":
              if (t) await expire(w, t.id);
              slots[op.slot] = null;
              break;
            case "alarm":
              await runDurableObjectAlarm(w);
              break;
          }
        }
        // The end: every key reports what it served; live routers close, the rest settle.
        for (const t of tabs) await report(t, Number.POSITIVE_INFINITY);
        for (const i of [0, 1]) if (slots[i]) await close(i);
        const unclosed = await sql<{ tab_id: string }>(w, "SELECT tab_id FROM tabs WHERE closed_at IS NULL");
        for (const { tab_id } of unclosed) await expire(w, tab_id);
        if (unclosed.length > 0) await runDurableObjectAlarm(w);

        const summary = await w.summary(500);
        expect(await sql(w, "SELECT tab_id FROM tabs WHERE closed_at IS NULL")).toEqual([]);
        expect(summary.heldMicros).toBe(0);
        expect(summary.balanceMicros).toBeGreaterThanOrEqual(0);
        const sum = (kind: string) => summary.history.filter((h) => h.kind === kind).reduce((s, h) => s + h.amountMicros, 0);
        expect(sum("topup")).toBe(topups);
        // A draw the router missed, reported after its close beyond the balance, cannot be taken: the log says how much.
        const shortfall = lines.filter((l) => l.evt === "tab_shortfall").reduce((s, l) => s + (l.micros as number), 0);
        expect(topups - summary.balanceMicros).toBe(sum("debit") - sum("refund") - shortfall);
        const claims = await sql<{ proof_id: string; amount: number; refunded_at: number | null }>(w, "SELECT proof_id, amount, refunded_at FROM claims");
        expect(claims.filter((c) => c.refunded_at === null).reduce((s, c) => s + c.amount, 0)).toBe(sum("debit") - sum("refund"));
        // Single use: one debit and at most one refund per proof; every draw served is a claim (one the router refunded, if its close listed it).
        const debits = summary.history.filter((h) => h.kind === "debit").map((h) => h.ref);
        const refunds = summary.history.filter((h) => h.kind === "refund").map((h) => h.ref);
        expect(new Set(debits).size).toBe(debits.length);
        expect(new Set(refunds).size).toBe(refunds.length);
        expect(debits.sort()).toEqual(claims.map((c) => c.proof_id).sort());
        const claimed = new Set(claims.map((c) => c.proof_id));
        for (const d of allDraws) if (!d.refundReason) expect(claimed.has(d.proofId)).toBe(true);
        expect(lines.filter((l) => l.evt === "tab_overdrawn")).toEqual([]);
        vi.restoreAllMocks();
      }),
      { numRuns: 40 },
    );
  }, 120_000);
});
