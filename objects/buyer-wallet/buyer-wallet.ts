// One buyer = one BuyerWallet object, named by the buyer id (B2: the SHA-256 of the
// payer's principal; the principal itself never reaches this object). A single-threaded
// object is the right atom for prepaid credit: every check and write of a debit runs
// synchronously, with no await in between, so a proof is claimed and the balance debited
// in one step that no concurrent request can interleave with (P6: twelve copies of one
// credential arriving together find exactly one winner). One RPC per paid request.
//
// Storage holds metadata only: amounts, proof ids (challenge ids), top-up event ids,
// timestamps. Claim rows outlive their challenge (replay needs them until expiry; refunds
// and disputes use them for CLAIM_RETENTION_MS) and an alarm removes them afterwards. The
// same alarm copies per-day spend to KV `SPEND` (B5, 90-day expiry), debounced so a busy
// buyer costs one KV write per day key every few seconds at most.
//
// Disputes (P7) live here too, beside the claims they are about: opening one checks the
// claim and inserts the dispute in one synchronous step, and resolving one with a refund
// credits the claim back through the same exactly-once path as B6 refunds. KV `DISPUTES`
// holds a copy for ops to list and to find the wallet by dispute id; it is written right
// away and, if that fails, by the alarm (a dirty flag, as for spend).
//
// Tabs (docs/payments.md, "Tabs"): a router serving a busy buyer takes credit aside once
// (openTab: a hold, debited from the balance at once) and draws on it in its own memory.
// Each draw becomes a claim of the tab, from whichever reports it first: the serving key
// (reportTabs) or the router's close (closeTab, with its full list). Closing keeps what
// the tab's claims spent and releases the rest; a tab its router never closed is settled
// by the alarm on its keys' reports, TAB_SETTLE_GRACE_MS after it expired.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../../core/env.ts";
import { GroupCommit } from "../../core/group-commit.ts";
import { SPEND_TTL_SECONDS, spendKey, type SpendDay } from "./spend.ts";
import type { Result } from "../../schema/result.ts";
import {
  disputeIndexKey, MAX_OPEN_DISPUTES,
  type ClaimRequest, type DisputeCode, type DisputeReason, type DisputeDecision, type DisputeIndexMeta, type DisputeRecord,
  type HistoryEntry, type OpenDisputeRequest, type TopUpRequest, type WalletCode, type WalletSummary,
  TAB_SETTLE_GRACE_MS, type CloseTabRequest, type OpenTabRequest, type TabDraw,
} from "../../schema/wallet.ts";

const DAY_MS = 86_400_000;
/** Claims are kept this long after their challenge expired (refunds, disputes), then removed. */
export const CLAIM_RETENTION_MS = 7 * DAY_MS;
/** Top-up event ids are remembered this long (Stripe retries a webhook for 3 days). */
const TOPUP_RETENTION_MS = 400 * DAY_MS;
/** Per-day spend rows live as long as the KV copy (B5). */
const SPEND_RETENTION_MS = SPEND_TTL_SECONDS * 1000;
/** Spend reaches KV at most this often per buyer. */
export const SPEND_FLUSH_MS = 5_000;
const MAX_HISTORY = 500;
/** Retention clean-ups run at most this often. */
const CLEANUP_BATCH_MS = 3_600_000;
/** Resolved disputes stay visible to their buyer (and in the ops index) this long. */
export const DISPUTE_RETENTION_MS = 365 * DAY_MS;
/** Largest single amount a wallet accepts: $1M in micro-dollars. */
const MAX_AMOUNT = 1_000_000_000_000;

const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

type DisputeRow = {
  id: string; proof_id: string; request_id: string; method: string; amount: number; reason: string; note: string | null;
  status: string; resolution: string | null; resolution_note: string | null; refunded: number; opened_at: number; resolved_at: number | null;
};
const DISPUTE_COLUMNS = "id, proof_id, request_id, method, amount, reason, note, status, resolution, resolution_note, refunded, opened_at, resolved_at";
const validAmount = (n: number) => Number.isSafeInteger(n) && n > 0 && n <= MAX_AMOUNT;
/** Latest time a Date can hold (utcDay must not throw). */
const MAX_TIME = 8.64e15;
const validTime = (t: number) => Number.isSafeInteger(t) && t >= 0 && t <= MAX_TIME;
const validDraws = (draws: TabDraw[]) =>
  Array.isArray(draws) && draws.every((d) => typeof d.proofId === "string" && validAmount(d.amountMicros) && validTime(d.at) && validTime(d.expiresAt) && (d.refundReason === undefined || typeof d.refundReason === "string"));
const INVALID_AMOUNT = { ok: false, code: "invalid_amount", message: "amount must be a positive whole number of micro-dollars" } as const;

/** Claims the retention clean-up may remove: none under an open dispute, none of a tab still open. */
const CLAIM_REMOVABLE = "proof_id NOT IN (SELECT proof_id FROM disputes WHERE status = 'open') AND (tab_id IS NULL OR tab_id NOT IN (SELECT tab_id FROM tabs WHERE closed_at IS NULL))";
type TabRow = { tab_id: string; granted: number; closed_at: number | null; closed_by: "router" | "reports" | null };
/**
 * A tab's claims that count as spent from its hold: all but those the router refunded in the
 * tab (their money never left the hold). A claim refunded through refundClaim (B6, disputes)
 * stays kept: that refund was credited to the balance already.
 */
const KEPT = "refunded_in_tab IS NOT 1";

type AccountRow = { buyer_id: string; balance: number; daily_cap: number | null };
/** A claim accepted in memory (claim()), written at the next group commit (writeQueued()). */
interface QueuedClaim {
  buyerId: string;
  proofId: string;
  method: string;
  amount: number;
  debit: boolean;
  day: string;
  at: number;
  expiresAt: number;
  balanceAfter: number;
}
/** History rows may exceed MAX_HISTORY by up to this many before a trim. */
const HISTORY_TRIM = 64;

export class BuyerWallet extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  /** The account row as stored (see account()). */
  private mirror: AccountRow | null | undefined;
  /** Today's spend as stored (see netSpent()). */
  private today: { day: string; spent: number; refunded: number } | undefined;
  private sinceTrim = HISTORY_TRIM;
  /** Accepted claims, waiting for the group commit (see committed()). */
  private queued: QueuedClaim[] = [];
  /** The account row is known to be in storage (read from it, or written by a commit). */
  private accountStored = false;
  private readonly uncommitted = new Set<string>();
  private readonly claimCommit = new GroupCommit(() => this.writeQueued());
  private nextAlarm: number | null = null;
  /** The dispute-index pass in progress (see indexDisputes). */
  private indexing: Promise<void> = Promise.resolve();
  /** What open tabs still hold (see held()); undefined: read it again. */
  private heldMirror: number | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY CHECK (id = 1), buyer_id TEXT NOT NULL, balance INTEGER NOT NULL CHECK (balance >= 0), daily_cap INTEGER, created_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS claims (proof_id TEXT PRIMARY KEY, method TEXT NOT NULL, amount INTEGER NOT NULL, debited INTEGER NOT NULL, day TEXT NOT NULL, at INTEGER NOT NULL, expires_at INTEGER NOT NULL, refunded_at INTEGER, refund_reason TEXT);
      CREATE INDEX IF NOT EXISTS claims_expires ON claims (expires_at);
      CREATE TABLE IF NOT EXISTS topups (event_id TEXT PRIMARY KEY, source TEXT NOT NULL, amount INTEGER NOT NULL, at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS spend (day TEXT PRIMARY KEY, spent INTEGER NOT NULL, refunded INTEGER NOT NULL, requests INTEGER NOT NULL, dirty INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, kind TEXT NOT NULL, amount INTEGER NOT NULL, ref TEXT NOT NULL, balance INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS disputes (id TEXT PRIMARY KEY, proof_id TEXT NOT NULL UNIQUE, request_id TEXT NOT NULL, method TEXT NOT NULL, amount INTEGER NOT NULL, reason TEXT NOT NULL, note TEXT, status TEXT NOT NULL, resolution TEXT, resolution_note TEXT, refunded INTEGER NOT NULL DEFAULT 0, opened_at INTEGER NOT NULL, resolved_at INTEGER, version INTEGER NOT NULL DEFAULT 1, indexed INTEGER NOT NULL DEFAULT 0);
      CREATE INDEX IF NOT EXISTS disputes_status ON disputes (status, opened_at);
      CREATE TABLE IF NOT EXISTS tabs (tab_id TEXT PRIMARY KEY, granted INTEGER NOT NULL, kept INTEGER, opened_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, closed_at INTEGER, closed_by TEXT);
      CREATE INDEX IF NOT EXISTS tabs_open ON tabs (closed_at, expires_at);
    `);
    // Objects made before tabs have claims without their columns.
    const claimColumns = this.sql.exec("SELECT * FROM claims LIMIT 0").columnNames;
    if (!claimColumns.includes("tab_id")) this.sql.exec("ALTER TABLE claims ADD COLUMN tab_id TEXT");
    if (!claimColumns.includes("refunded_in_tab")) this.sql.exec("ALTER TABLE claims ADD COLUMN refunded_in_tab INTEGER");
    this.sql.exec("CREATE INDEX IF NOT EXISTS claims_tab ON claims (tab_id) WHERE tab_id IS NOT NULL");
    void ctx.blockConcurrencyWhile(async () => {
      this.nextAlarm = await ctx.storage.getAlarm();
    });
  }

  // ---- the hot path -------------------------------------------------------------------

  /**
   * Claim a proof and debit its amount, atomically: either the proof is new, the balance
   * covers it and the day's budget allows it, and both happen; or nothing changes.
   */
  async claimAndDebit(req: ClaimRequest): Promise<Result<{ balanceMicros: number }, WalletCode>> {
    const result = this.claim(req, true);
    if (result.ok) await Promise.all([this.committed(), this.schedule(Date.now() + SPEND_FLUSH_MS)]);
    return result;
  }

  /**
   * Record a proof paid outside the wallet (a per-request on-chain charge): single use,
   * counted as spend, refundable as credit. Nothing is debited.
   */
  async recordPayment(req: ClaimRequest): Promise<Result<{ balanceMicros: number }, WalletCode>> {
    const result = this.claim(req, false);
    if (result.ok) await Promise.all([this.committed(), this.schedule(Date.now() + SPEND_FLUSH_MS)]);
    return result;
  }

  /** B6: credit a claimed proof back, exactly once. */
  async refund(proofId: string, reason: string): Promise<Result<{ balanceMicros: number; refundedMicros: number }, WalletCode>> {
    const now = Date.now();
    const result = this.refundClaim(proofId, reason, now);
    if (result.ok) await this.schedule(now + SPEND_FLUSH_MS);
    return result;
  }

  // ---- tabs --------------------------------------------------------------------------

  /**
   * Set credit aside for a router's tab: min(want, balance, cap room), refused below `minMicros`.
   * Idempotent on the tab id (a retry answers the grant made). `close` closes the router's
   * previous tab first, in the same transaction, so its release counts toward this grant;
   * that close stands even if the new tab is refused.
   */
  async openTab(req: OpenTabRequest): Promise<Result<{ grantedMicros: number; balanceMicros: number }, WalletCode>> {
    if (!validAmount(req.wantMicros) || !validAmount(req.minMicros) || req.minMicros > req.wantMicros || !validTime(req.expiresAt)) return INVALID_AMOUNT;
    if (req.close && !validDraws(req.close.draws)) return INVALID_AMOUNT;
    const closing = req.close ? this.tabRow(req.close.tabId) : null;
    if (req.close && !closing) return { ok: false, code: "unknown_tab", message: "no such tab to close" };
    const now = Date.now();
    const result = this.write((): Result<{ grantedMicros: number; balanceMicros: number }, WalletCode> => {
      if (req.close) this.closeIn(req.close, closing!, now);
      const existing = this.tabRow(req.tabId);
      if (existing) return { ok: true, value: { grantedMicros: existing.granted, balanceMicros: this.balance() } };
      const account = this.account();
      const balance = account?.balance ?? 0;
      if (balance < req.minMicros) {
        return { ok: false, code: "insufficient_balance", message: `balance ${balance} is below the price ${req.minMicros} (micro-dollars); top up first` };
      }
      const cap = account?.daily_cap ?? null;
      // What is held is as good as spent for the budget (its draws not yet claimed are in no spend row).
      const room = cap === null ? Number.POSITIVE_INFINITY : cap - this.netSpent(utcDay(now)) - this.held();
      if (room < req.minMicros) return { ok: false, code: "budget_exceeded", message: `this would pass your daily budget of ${cap} micro-dollars` };
      const grant = Math.min(req.wantMicros, balance, room);
      this.sql.exec("INSERT INTO tabs (tab_id, granted, opened_at, expires_at) VALUES (?, ?, ?, ?)", req.tabId, grant, now, req.expiresAt);
      // A delta, like any write outside the group commit: debits still queued stay counted.
      const after = this.addBalance(-grant);
      this.record(now, "hold", grant, req.tabId, after);
      this.heldMirror = undefined;
      return { ok: true, value: { grantedMicros: grant, balanceMicros: after } };
    });
    await this.schedule(Math.min(req.expiresAt + TAB_SETTLE_GRACE_MS, req.close ? now + SPEND_FLUSH_MS : Number.POSITIVE_INFINITY));
    return result;
  }

  /**
   * Close a tab with every draw the router made on it: each becomes a claim (unless a key's
   * report made it one first), refunded ones are recorded as debit and refund, and what the
   * claims did not keep goes back to the balance. Closing a closed tab changes nothing.
   */
  async closeTab(req: CloseTabRequest): Promise<Result<{ releasedMicros: number; changed: boolean }, WalletCode>> {
    if (!validDraws(req.draws)) return INVALID_AMOUNT;
    const tab = this.tabRow(req.tabId);
    if (!tab) return { ok: false, code: "unknown_tab", message: "no such tab" };
    const now = Date.now();
    const value = this.write(() => this.closeIn(req, tab, now));
    if (value.changed) await this.schedule(now + SPEND_FLUSH_MS);
    return { ok: true, value };
  }

  /**
   * A key reports draws it served on this buyer's tabs (made durable with its earnings), for
   * several tabs in one call and one commit: a report after a flush covers every tab the key
   * served the buyer from since (many short tabs under load). Each new draw becomes a claim
   * of its tab, once per proof. On a tab already closed or settled, a new one was missed by
   * that close: it is debited now (down to 0), so the books stay whole.
   */
  async reportTabs(reports: { tabId: string; draws: TabDraw[] }[]): Promise<Result<{ recorded: number }, WalletCode>> {
    if (!Array.isArray(reports) || reports.length > 1_000 || !reports.every((r) => typeof r?.tabId === "string" && validDraws(r.draws))) return INVALID_AMOUNT;
    const now = Date.now();
    let recorded = 0;
    for (const r of reports) recorded += this.recordReport(r.tabId, r.draws);
    if (recorded > 0) await this.schedule(now + SPEND_FLUSH_MS);
    return { ok: true, value: { recorded } };
  }

  /** One tab's reported draws, recorded once per proof (synchronous: one commit with the others of the call). */
  private recordReport(tabId: string, draws: TabDraw[]): number {
    const tab = this.tabRow(tabId);
    if (!tab) console.error(JSON.stringify({ evt: "tab_report_unknown_tab", tabId }));
    // Reports never carry refunds (the router's close does): a refund reason here is ignored.
    const recorded = this.write(() => {
      const fresh = this.insertDraws(tabId, draws.map(({ refundReason: _, ...d }) => d));
      if (fresh.length === 0) return 0;
      let balance = this.balance();
      if (!tab || tab.closed_at === null) {
        // Its money is in the hold (or in no tab we know: nothing to take it from).
        this.recordMany(fresh.map((d) => [d.at, "debit", d.amountMicros, d.proofId, balance]));
        this.heldMirror = undefined;
        return fresh.length;
      }
      const evt = tab.closed_by === "router" ? "tab_report_after_close" : "tab_late_draw";
      let taken = 0, shortfall = 0, kept = 0;
      const rows = fresh.map((d): [number, HistoryEntry["kind"], number, string, number] => {
        console.error(JSON.stringify({ evt, tabId, proofId: d.proofId }));
        const take = Math.min(balance, d.amountMicros);
        balance -= take;
        taken += take;
        shortfall += d.amountMicros - take;
        kept += d.amountMicros;
        return [d.at, "debit", d.amountMicros, d.proofId, balance];
      });
      if (shortfall > 0) console.error(JSON.stringify({ evt: "tab_shortfall", tabId, micros: shortfall }));
      if (taken > 0) this.addBalance(-taken);
      this.recordMany(rows);
      this.sql.exec("UPDATE tabs SET kept = kept + ? WHERE tab_id = ?", kept, tabId);
      return fresh.length;
    });
    return recorded;
  }

  // ---- disputes (P7) ------------------------------------------------------------------

  /**
   * Open a dispute about a payment claimed in this wallet (the caller has checked the
   * buyer's signature and the receipt's). One dispute per payment: asking again returns
   * the existing one (`created: false`), so a retried request is harmless.
   */
  async openDispute(req: OpenDisputeRequest): Promise<Result<{ dispute: DisputeRecord; created: boolean }, DisputeCode>> {
    const now = Date.now();
    const existing = this.disputeRow("proof_id", req.proofId);
    if (existing) return { ok: true, value: { dispute: existing, created: false } };
    const claim = this.sql.exec<{ method: string; amount: number; refunded_at: number | null }>("SELECT method, amount, refunded_at FROM claims WHERE proof_id = ?", req.proofId).toArray()[0];
    if (!claim) return { ok: false, code: "payment_not_found", message: "no such payment in your wallet (another key's receipt, older than the dispute window, or paid from a tab that has not closed yet: retry in a minute)" };
    if (claim.refunded_at !== null) return { ok: false, code: "already_refunded", message: "this payment was already refunded: there is nothing to dispute" };
    const open = this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM disputes WHERE status = 'open'").one().n;
    if (open >= MAX_OPEN_DISPUTES) return { ok: false, code: "too_many_disputes", message: `at most ${MAX_OPEN_DISPUTES} disputes can be open at once; wait for a resolution` };
    this.sql.exec(
      "INSERT INTO disputes (id, proof_id, request_id, method, amount, reason, note, status, opened_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?)",
      req.disputeId, req.proofId, req.requestId, claim.method, claim.amount, req.reason, req.note, now,
    );
    await this.indexDisputes();
    return { ok: true, value: { dispute: this.disputeRow("id", req.disputeId)!, created: true } };
  }

  /**
   * Ops decide a dispute. `refund` credits the payment back to this wallet exactly once
   * (the claim's refund mark, shared with B6 refunds, makes a second credit impossible);
   * `reject` closes it. Repeating the same decision changes nothing (`changed: false`);
   * the other decision on a resolved dispute is refused.
   */
  async resolveDispute(disputeId: string, decision: DisputeDecision, note: string | null): Promise<Result<{ dispute: DisputeRecord; changed: boolean }, DisputeCode>> {
    const now = Date.now();
    const dispute = this.disputeRow("id", disputeId);
    if (!dispute) return { ok: false, code: "dispute_not_found", message: "no such dispute" };
    const resolution = decision === "refund" ? "refunded" : "rejected";
    if (dispute.status === "resolved") {
      if (dispute.resolution === resolution) return { ok: true, value: { dispute, changed: false } };
      return { ok: false, code: "dispute_resolved", message: `this dispute was already resolved (${dispute.resolution})` };
    }
    let refunded = 0;
    if (decision === "refund") {
      const result = this.refundClaim(dispute.proofId, `dispute:${disputeId}`, now);
      // Already refunded (or gone): the buyer has the money; record that nothing more moved.
      refunded = result.ok ? result.value.refundedMicros : 0;
    }
    this.sql.exec(
      "UPDATE disputes SET status = 'resolved', resolution = ?, resolution_note = ?, refunded = ?, resolved_at = ?, version = version + 1, indexed = 0 WHERE id = ?",
      resolution, note, refunded, now, disputeId,
    );
    await this.indexDisputes();
    if (refunded > 0) await this.schedule(now + SPEND_FLUSH_MS);
    return { ok: true, value: { dispute: this.disputeRow("id", disputeId)!, changed: true } };
  }

  dispute(disputeId: string): DisputeRecord | null {
    return this.disputeRow("id", disputeId);
  }

  /** This buyer's disputes, newest first. */
  disputes(limit = 100): DisputeRecord[] {
    return this.sql.exec<DisputeRow>(`SELECT ${DISPUTE_COLUMNS} FROM disputes ORDER BY opened_at DESC, id DESC LIMIT ?`, Math.min(Math.max(limit, 0), 500)).toArray().map((r) => this.toDispute(r));
  }

  // ---- credit in ----------------------------------------------------------------------

  /** Add credit once per event id; a repeated event changes nothing and says so. */
  async topUp(req: TopUpRequest): Promise<Result<{ balanceMicros: number; credited: boolean }, WalletCode>> {
    if (!validAmount(req.amountMicros)) return { ok: false, code: "invalid_amount", message: "amount must be a positive whole number of micro-dollars" };
    const now = Date.now();
    this.ensureAccount(req.buyerId, now);
    const seen = this.sql.exec("SELECT 1 FROM topups WHERE event_id = ?", req.eventId).toArray().length > 0;
    if (seen) return { ok: true, value: { balanceMicros: this.balance(), credited: false } };
    const balance = this.write(() => {
      this.sql.exec("INSERT INTO topups (event_id, source, amount, at) VALUES (?, ?, ?, ?)", req.eventId, req.source, req.amountMicros, now);
      const balance = this.addBalance(req.amountMicros);
      this.record(now, "topup", req.amountMicros, req.eventId, balance);
      return balance;
    });
    await this.schedule(now + CLEANUP_BATCH_MS);
    return { ok: true, value: { balanceMicros: balance, credited: true } };
  }

  // ---- buyer settings and views -------------------------------------------------------

  /** B5: the buyer's own daily cap on spend (null removes it). */
  setDailyCap(buyerId: string, capMicros: number | null): Result<{ dailyCapMicros: number | null }, WalletCode> {
    if (capMicros !== null && !(Number.isSafeInteger(capMicros) && capMicros >= 0 && capMicros <= MAX_AMOUNT)) {
      return { ok: false, code: "invalid_amount", message: "cap must be a whole number of micro-dollars, or null" };
    }
    this.ensureAccount(buyerId, Date.now());
    this.sql.exec("UPDATE account SET daily_cap = ? WHERE id = 1", capMicros);
    if (this.mirror) this.mirror.daily_cap = capMicros;
    return { ok: true, value: { dailyCapMicros: capMicros } };
  }

  summary(historyLimit = 50): WalletSummary {
    const account = this.account();
    const history = this.sql
      .exec<{ at: number; kind: HistoryEntry["kind"]; amount: number; ref: string; balance: number }>("SELECT at, kind, amount, ref, balance FROM history ORDER BY id DESC LIMIT ?", Math.min(Math.max(historyLimit, 0), MAX_HISTORY))
      .toArray()
      .map((r) => ({ at: r.at, kind: r.kind, amountMicros: r.amount, ref: r.ref, balanceMicros: r.balance }));
    return {
      buyerId: account?.buyer_id ?? null,
      balanceMicros: account?.balance ?? 0,
      dailyCapMicros: account?.daily_cap ?? null,
      spentTodayMicros: this.netSpent(utcDay(Date.now())),
      heldMicros: this.held(),
      history,
    };
  }

  /** Spend per UTC day as this object knows it (the KV copy may lag by SPEND_FLUSH_MS). */
  spendDays(): SpendDay[] {
    return this.sql.exec<{ day: string; spent: number; refunded: number; requests: number }>("SELECT day, spent, refunded, requests FROM spend ORDER BY day").toArray()
      .map((r) => ({ day: r.day, spentMicros: r.spent, refundedMicros: r.refunded, requests: r.requests }));
  }

  /**
   * PR11: a deleted buyer account takes the spend history of the ids it held with it: the
   * per-day spend here and its KV copy, and the history list. What money needs stays: the
   * balance (the key can still spend it), claims (single use, refunds, disputes: their own
   * short retention), top-up event ids (a retried Stripe event must not credit twice) and
   * disputes. Spend counts again from the next payment on, today's budget included.
   */
  async eraseSpendHistory(buyerId: string): Promise<{ erasedDays: number; erasedEntries: number }> {
    // Payments accepted before this call are part of the history: let their group commit land first.
    if (this.queued.length > 0) await this.committed();
    const days = new Set(this.sql.exec<{ day: string }>("SELECT day FROM spend").toArray().map((r) => r.day));
    const entries = this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM history").one().n;
    this.sql.exec("DELETE FROM spend");
    this.sql.exec("DELETE FROM history");
    this.today = undefined; // the budget's mirror of today's spend: read again (now empty)
    // The KV copy, including days whose rows here were already cleaned up.
    const prefix = spendKey(buyerId, "");
    let cursor: string | undefined;
    do {
      const page = await this.env.SPEND.list({ prefix, cursor });
      for (const k of page.keys) days.add(k.name.slice(prefix.length));
      cursor = page.list_complete ? undefined : page.cursor;
    } while (cursor);
    for (const day of days) await this.env.SPEND.delete(spendKey(buyerId, day));
    return { erasedDays: days.size, erasedEntries: entries };
  }

  // ---- alarm: tabs settled, spend to KV, expired rows out ------------------------------

  override async alarm(): Promise<void> {
    this.nextAlarm = null;
    const now = Date.now();
    // Tabs their router never closed (its isolate ended): settled on the keys' reports.
    const unclosed = this.sql.exec<TabRow>("SELECT tab_id, granted, closed_at, closed_by FROM tabs WHERE closed_at IS NULL AND expires_at <= ?", now - TAB_SETTLE_GRACE_MS).toArray();
    if (unclosed.length > 0) this.write(() => { for (const tab of unclosed) this.finishTab(tab, "reports", now); });
    const buyerId = this.account()?.buyer_id;
    const dirty = this.sql.exec<{ day: string; spent: number; refunded: number; requests: number }>("SELECT day, spent, refunded, requests FROM spend WHERE dirty = 1").toArray();
    if (buyerId) {
      for (const row of dirty) {
        const value: SpendDay = { day: row.day, spentMicros: row.spent, refundedMicros: row.refunded, requests: row.requests };
        // A failed put throws: the alarm is retried and the row stays dirty.
        await this.env.SPEND.put(spendKey(buyerId, row.day), JSON.stringify(value), { expirationTtl: SPEND_TTL_SECONDS });
        this.sql.exec("UPDATE spend SET dirty = 0 WHERE day = ? AND spent = ? AND refunded = ? AND requests = ?", row.day, row.spent, row.refunded, row.requests);
        // Erased while the copy was on its way (eraseSpendHistory): take the copy back.
        if (this.sql.exec("SELECT 1 FROM spend WHERE day = ?", row.day).toArray().length === 0) await this.env.SPEND.delete(spendKey(buyerId, row.day));
      }
    }
    await this.indexDisputes();
    // A claim under an open dispute stays until the dispute is resolved; one of an open tab until the tab closes (its kept).
    this.sql.exec(`DELETE FROM claims WHERE expires_at < ? AND ${CLAIM_REMOVABLE}`, now - CLAIM_RETENTION_MS);
    // A closed tab answers its router's retries and places late reports as long as its claims last.
    this.sql.exec("DELETE FROM tabs WHERE closed_at < ?", now - CLAIM_RETENTION_MS);
    this.sql.exec("DELETE FROM disputes WHERE status = 'resolved' AND resolved_at < ? AND indexed = 1", now - DISPUTE_RETENTION_MS);
    this.sql.exec("DELETE FROM topups WHERE at < ?", now - TOPUP_RETENTION_MS);
    this.sql.exec("DELETE FROM spend WHERE day < ? AND dirty = 0", utcDay(now - SPEND_RETENTION_MS));
    this.sql.exec("DELETE FROM history WHERE at < ?", now - SPEND_RETENTION_MS);

    const oldestClaim = this.sql.exec<{ t: number | null }>(`SELECT min(expires_at) AS t FROM claims WHERE ${CLAIM_REMOVABLE}`).one().t;
    const oldestTab = this.sql.exec<{ t: number | null }>("SELECT min(closed_at) AS t FROM tabs").one().t;
    const nextSettle = this.sql.exec<{ t: number | null }>("SELECT min(expires_at) AS t FROM tabs WHERE closed_at IS NULL").one().t;
    const oldestResolved = this.sql.exec<{ t: number | null }>("SELECT min(resolved_at) AS t FROM disputes WHERE status = 'resolved'").one().t;
    const oldestTopUp = this.sql.exec<{ t: number | null }>("SELECT min(at) AS t FROM topups").one().t;
    const oldestHistory = this.sql.exec<{ t: number | null }>("SELECT min(at) AS t FROM history").one().t;
    const retention = [
      oldestClaim === null ? null : oldestClaim + CLAIM_RETENTION_MS,
      oldestTab === null ? null : oldestTab + CLAIM_RETENTION_MS,
      oldestTopUp === null ? null : oldestTopUp + TOPUP_RETENTION_MS,
      oldestHistory === null ? null : oldestHistory + SPEND_RETENTION_MS,
      oldestResolved === null ? null : oldestResolved + DISPUTE_RETENTION_MS,
    ].filter((t): t is number => t !== null);
    const stillDirty = this.sql.exec("SELECT 1 FROM spend WHERE dirty = 1 UNION ALL SELECT 1 FROM disputes WHERE indexed = 0 LIMIT 1").toArray().length > 0;
    // Retention clean-ups are batched (at most one an hour); a pending spend copy is not.
    // A tab's settlement is not: its unspent hold is the buyer's credit.
    const candidates = [
      ...retention.map((t) => Math.max(t, now + CLEANUP_BATCH_MS)),
      ...(stillDirty ? [now + SPEND_FLUSH_MS] : []),
      ...(nextSettle === null ? [] : [nextSettle + TAB_SETTLE_GRACE_MS]),
    ];
    if (candidates.length > 0) await this.schedule(Math.min(...candidates));
  }

  // ---- internals ----------------------------------------------------------------------

  private tabRow(tabId: string): TabRow | null {
    return this.sql.exec<TabRow>("SELECT tab_id, granted, closed_at, closed_by FROM tabs WHERE tab_id = ?", tabId).toArray()[0] ?? null;
  }

  /** closeTab's step, inside the caller's transaction. */
  private closeIn(req: CloseTabRequest, tab: TabRow, now: number): { releasedMicros: number; changed: boolean } {
    if (tab.closed_at !== null) return { releasedMicros: 0, changed: false };
    const balance = this.balance();
    const fresh = this.insertDraws(tab.tab_id, req.draws);
    this.recordMany(fresh.map((d) => [d.at, "debit", d.amountMicros, d.proofId, balance]));
    // Refunds the router made: recorded as for refundClaim, but not credited: their money
    // never left the hold and comes back with the release. Only this tab's claims not yet
    // refunded (a B6 or dispute refund already credited the balance).
    const reasons = new Map(req.draws.flatMap((d) => (d.refundReason === undefined ? [] : [[d.proofId, d.refundReason.slice(0, 64)] as const])));
    if (reasons.size > 0) {
      const due = this.sql.exec<{ proof_id: string; amount: number; day: string }>(
        "SELECT proof_id, amount, day FROM claims WHERE tab_id = ? AND refunded_at IS NULL AND proof_id IN (SELECT value FROM json_each(?))",
        tab.tab_id, JSON.stringify([...reasons.keys()]),
      ).toArray();
      if (due.length > 0) {
        this.sql.exec(
          "UPDATE claims SET refunded_at = ?, refund_reason = j.value->>1, refunded_in_tab = 1 FROM json_each(?) AS j WHERE claims.proof_id = j.value->>0",
          now, JSON.stringify(due.map((c) => [c.proof_id, reasons.get(c.proof_id)])),
        );
        const days = new Map<string, number>();
        for (const c of due) days.set(c.day, (days.get(c.day) ?? 0) + c.amount);
        for (const [day, refunded] of days) this.addSpend(day, 0, refunded, 0);
        this.recordMany(due.map((c) => [now, "refund", c.amount, c.proof_id, balance]));
        // A key reported it as served, the router as refunded: the router's word stands.
        const freshIds = new Set(fresh.map((d) => d.proofId));
        for (const c of due) if (!freshIds.has(c.proof_id)) console.error(JSON.stringify({ evt: "tab_refund_after_report", tabId: tab.tab_id, proofId: c.proof_id }));
      }
    }
    return { releasedMicros: this.finishTab(tab, "router", now), changed: true };
  }

  /** Close an open tab on its claims: keep what they spent, release the rest of the hold. Returns the release. */
  private finishTab(tab: TabRow, by: "router" | "reports", now: number): number {
    const kept = this.sql.exec<{ kept: number }>(`SELECT coalesce(sum(amount), 0) AS kept FROM claims WHERE tab_id = ? AND ${KEPT}`, tab.tab_id).one().kept;
    let release = tab.granted - kept;
    if (release < 0) {
      console.error(JSON.stringify({ evt: "tab_overdrawn", tabId: tab.tab_id, granted: tab.granted, kept }));
      release = 0;
    }
    if (release > 0) this.record(now, "release", release, tab.tab_id, this.addBalance(release));
    this.sql.exec("UPDATE tabs SET kept = ?, closed_at = ?, closed_by = ? WHERE tab_id = ?", kept, now, by, tab.tab_id);
    this.heldMirror = undefined;
    return release;
  }

  /**
   * Make claims of a tab's draws not claimed yet (the rest were claimed by a report, the
   * router's close, or another payment: single use), with their spend; returns the new ones.
   * A fixed number of statements whatever the list's size.
   */
  private insertDraws(tabId: string, draws: TabDraw[]): TabDraw[] {
    // A proof in a group commit still queued is claimed already (its insert must not conflict).
    const fresh = new Map<string, TabDraw>();
    for (const d of draws) if (!fresh.has(d.proofId) && !this.uncommitted.has(d.proofId)) fresh.set(d.proofId, d);
    if (fresh.size === 0) return [];
    const claimed = this.sql.exec<{ proof_id: string }>("SELECT proof_id FROM claims WHERE proof_id IN (SELECT value FROM json_each(?))", JSON.stringify([...fresh.keys()]));
    for (const r of claimed) fresh.delete(r.proof_id);
    const rows = [...fresh.values()];
    if (rows.length === 0) return rows;
    this.sql.exec(
      "INSERT INTO claims (proof_id, method, amount, debited, day, at, expires_at, tab_id) SELECT value->>0, 'credit', value->>1, 1, value->>2, value->>3, value->>4, ? FROM json_each(?)",
      tabId, JSON.stringify(rows.map((d) => [d.proofId, d.amountMicros, utcDay(d.at), d.at, d.expiresAt])),
    );
    const days = new Map<string, { spent: number; requests: number }>();
    for (const d of rows) {
      const day = days.get(utcDay(d.at)) ?? { spent: 0, requests: 0 };
      day.spent += d.amountMicros;
      day.requests++;
      days.set(utcDay(d.at), day);
    }
    for (const [day, d] of days) this.addSpend(day, d.spent, 0, d.requests);
    return rows;
  }

  /** Add to a day's spend row, and to today's mirror in step. */
  private addSpend(day: string, spent: number, refunded: number, requests: number) {
    this.sql.exec(
      "INSERT INTO spend (day, spent, refunded, requests, dirty) VALUES (?, ?, ?, ?, 1) ON CONFLICT (day) DO UPDATE SET spent = spent + excluded.spent, refunded = refunded + excluded.refunded, requests = requests + excluded.requests, dirty = 1",
      day, spent, refunded, requests,
    );
    if (this.today?.day === day) {
      this.today.spent += spent;
      this.today.refunded += refunded;
    }
  }

  /**
   * Credit still set aside by open tabs: each one's grant minus what its claims kept so far
   * (those are in spend rows already). Mirrored: the budget check of every debit reads it.
   */
  private held(): number {
    this.heldMirror ??= this.sql.exec<{ held: number }>(
      `SELECT coalesce(sum(max(0, t.granted - coalesce((SELECT sum(c.amount) FROM claims c WHERE c.tab_id = t.tab_id AND c.${KEPT}), 0))), 0) AS held FROM tabs t WHERE t.closed_at IS NULL`,
    ).one().held;
    return this.heldMirror;
  }

  /** The refund step itself, synchronous: exactly once per claim (B6 and dispute refunds alike). */
  private refundClaim(proofId: string, reason: string, now: number): Result<{ balanceMicros: number; refundedMicros: number }, WalletCode> {
    const claim = this.sql.exec<{ amount: number; day: string; refunded_at: number | null }>("SELECT amount, day, refunded_at FROM claims WHERE proof_id = ?", proofId).toArray()[0];
    if (!claim) return { ok: false, code: "unknown_proof", message: "no such payment in this wallet (unknown or past retention)" };
    if (claim.refunded_at !== null) return { ok: false, code: "already_refunded", message: "this payment was already refunded" };
    const balance = this.write(() => {
      this.sql.exec("UPDATE claims SET refunded_at = ?, refund_reason = ? WHERE proof_id = ?", now, reason.slice(0, 64), proofId);
      const balance = this.addBalance(claim.amount);
      this.sql.exec("UPDATE spend SET refunded = refunded + ?, dirty = 1 WHERE day = ?", claim.amount, claim.day);
      if (this.today?.day === claim.day) this.today.refunded += claim.amount;
      this.record(now, "refund", claim.amount, proofId, balance);
      return balance;
    });
    return { ok: true, value: { balanceMicros: balance, refundedMicros: claim.amount } };
  }

  private disputeRow(column: "id" | "proof_id", value: string): DisputeRecord | null {
    const row = this.sql.exec<DisputeRow>(`SELECT ${DISPUTE_COLUMNS} FROM disputes WHERE ${column} = ?`, value).toArray()[0];
    return row ? this.toDispute(row) : null;
  }

  private toDispute(r: DisputeRow): DisputeRecord {
    return {
      id: r.id, buyerId: this.account()?.buyer_id ?? "", requestId: r.request_id, proofId: r.proof_id, method: r.method,
      amountMicros: r.amount, reason: r.reason as DisputeReason, note: r.note, status: r.status as DisputeRecord["status"],
      resolution: r.resolution as DisputeRecord["resolution"], resolutionNote: r.resolution_note, refundedMicros: r.refunded,
      openedAt: r.opened_at, resolvedAt: r.resolved_at,
    };
  }

  /**
   * Copy changed disputes to KV `DISPUTES` (the ops index). A failed write leaves the row
   * dirty and brings the alarm forward; a row changed meanwhile stays dirty (version check).
   * Passes run one after another, so an older state can never land in KV after a newer one.
   */
  private indexDisputes(): Promise<void> {
    const pass = this.indexing.then(() => this.indexDisputesOnce());
    this.indexing = pass.catch(() => {});
    return pass;
  }

  private async indexDisputesOnce(): Promise<void> {
    const dirty = this.sql.exec<DisputeRow & { version: number }>(`SELECT ${DISPUTE_COLUMNS}, version FROM disputes WHERE indexed = 0`).toArray();
    for (const row of dirty) {
      const d = this.toDispute(row);
      const metadata: DisputeIndexMeta = { buyerId: d.buyerId, requestId: d.requestId, status: d.status, resolution: d.resolution, amountMicros: d.amountMicros, reason: d.reason, openedAt: d.openedAt };
      try {
        await this.env.DISPUTES.put(disputeIndexKey(d.id), JSON.stringify(d), {
          metadata,
          ...(d.resolvedAt === null ? {} : { expiration: Math.ceil((d.resolvedAt + DISPUTE_RETENTION_MS) / 1000) }),
        });
      } catch (err) {
        console.error(JSON.stringify({ evt: "dispute_index_failed", disputeId: d.id, error: err instanceof Error ? err.name : "unknown" }));
        await this.schedule(Date.now() + SPEND_FLUSH_MS);
        return;
      }
      this.sql.exec("UPDATE disputes SET indexed = 1 WHERE id = ? AND version = ?", d.id, row.version);
    }
  }

  /**
   * Synchronous from the first check to the decision: this is the atomic step. The checks
   * read memory (the account row, today's spend and the claims not yet committed, mirrored)
   * and the claims table; an accepted claim changes the mirrors at once and queues its
   * rows for the next group commit (committed()), which the caller awaits before it
   * answers: no answer says "paid" before the debit is durable, and concurrent debits of
   * one buyer share one storage commit instead of one each.
   */
  private claim(req: ClaimRequest, debit: boolean): Result<{ balanceMicros: number }, WalletCode> {
    if (!validAmount(req.amountMicros)) return { ok: false, code: "invalid_amount", message: "amount must be a positive whole number of micro-dollars" };
    const now = Date.now();
    const account = this.account();
    const balance = account?.balance ?? 0;
    const day = utcDay(now);
    // Replay first: a used credential says so whatever the balance is now.
    if (this.uncommitted.has(req.proofId) || this.sql.exec("SELECT 1 FROM claims WHERE proof_id = ?", req.proofId).toArray().length > 0) {
      return { ok: false, code: "replayed", message: "this payment credential was already used" };
    }
    if (debit && balance < req.amountMicros) {
      return { ok: false, code: "insufficient_balance", message: `balance ${balance} is below the price ${req.amountMicros} (micro-dollars); top up first` };
    }
    const cap = account?.daily_cap ?? null;
    // A payment made elsewhere is recorded whatever the cap: its money has already moved.
    if (debit && cap !== null && this.netSpent(day) + this.held() + req.amountMicros > cap) {
      return { ok: false, code: "budget_exceeded", message: `this would pass your daily budget of ${cap} micro-dollars` };
    }
    // Accepted: memory first (the next claim's checks see it), storage at the group commit.
    const after = debit ? balance - req.amountMicros : balance;
    this.mirror = { buyer_id: account?.buyer_id ?? req.buyerId, balance: after, daily_cap: cap };
    this.netSpent(day);
    this.today!.spent += req.amountMicros;
    this.uncommitted.add(req.proofId);
    this.queued.push({ buyerId: req.buyerId, proofId: req.proofId, method: req.method, amount: req.amountMicros, debit, day, at: now, expiresAt: req.expiresAt, balanceAfter: after });
    return { ok: true, value: { balanceMicros: after } };
  }

  /**
   * The group commit: resolves once every claim queued so far is durable (core/group-commit.ts:
   * batched under load, at once when idle). If it fails, nothing of the batch is written,
   * the mirrors are reloaded and every waiter throws: none of those requests is served.
   */
  private committed(): Promise<void> {
    return this.claimCommit.committed();
  }

  /**
   * A batch's rows in a fixed number of statements, whatever its size: one insert of the
   * claims, one balance update, one spend row per day, one insert into the history (and
   * the account row only while it may be missing from storage).
   */
  private writeQueued() {
    const batch = this.queued;
    const proofs = [...this.uncommitted];
    this.queued = [];
    try {
      this.write(() => {
        const first = batch[0];
        if (!first) return;
        if (!this.accountStored) {
          this.sql.exec("INSERT INTO account (id, buyer_id, balance, daily_cap, created_at) VALUES (1, ?, 0, NULL, ?) ON CONFLICT (id) DO NOTHING", first.buyerId, first.at);
        }
        this.sql.exec(
          "INSERT INTO claims (proof_id, method, amount, debited, day, at, expires_at) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?)",
          JSON.stringify(batch.map((c) => [c.proofId, c.method, c.amount, c.debit ? 1 : 0, c.day, c.at, c.expiresAt])),
        );
        const debited = batch.reduce((sum, c) => sum + (c.debit ? c.amount : 0), 0);
        if (debited > 0) this.sql.exec("UPDATE account SET balance = balance - ? WHERE id = 1", debited);
        const days = new Map<string, { spent: number; requests: number }>();
        for (const c of batch) {
          const d = days.get(c.day) ?? { spent: 0, requests: 0 };
          d.spent += c.amount;
          d.requests++;
          days.set(c.day, d);
        }
        for (const [day, d] of days) {
          this.sql.exec(
            "INSERT INTO spend (day, spent, refunded, requests, dirty) VALUES (?, ?, 0, ?, 1) ON CONFLICT (day) DO UPDATE SET spent = spent + excluded.spent, requests = requests + excluded.requests, dirty = 1",
            day, d.spent, d.requests,
          );
        }
        this.recordMany(batch.map((c) => [c.at, c.debit ? "debit" : "payment", c.amount, c.proofId, c.balanceAfter]));
      });
      this.accountStored = true;
    } finally {
      for (const p of proofs) this.uncommitted.delete(p);
    }
  }

  /** Run writes as one storage transaction; on failure the memory mirrors are reloaded from storage. */
  private write<T>(fn: () => T): T {
    try {
      return this.ctx.storage.transactionSync(fn);
    } catch (err) {
      this.mirror = undefined;
      this.today = undefined;
      this.heldMirror = undefined;
      this.accountStored = false;
      throw err;
    }
  }

  /** The account row, mirrored in memory (undefined: not read yet; null: no account). */
  private account(): AccountRow | null {
    if (this.mirror === undefined) {
      this.mirror = this.sql.exec<AccountRow>("SELECT buyer_id, balance, daily_cap FROM account WHERE id = 1").toArray()[0] ?? null;
      // Read from storage: the row is there (a failed write resets both, see write()).
      if (this.mirror !== null) this.accountStored = true;
    }
    return this.mirror;
  }

  private balance(): number {
    return this.account()?.balance ?? 0;
  }

  /** The row may be missing in storage while the mirror has it (a first claim still queued): always insert-if-missing. */
  private ensureAccount(buyerId: string, now: number) {
    this.sql.exec("INSERT INTO account (id, buyer_id, balance, daily_cap, created_at) VALUES (1, ?, 0, NULL, ?) ON CONFLICT (id) DO NOTHING", buyerId, now);
    if (this.mirror === null) this.mirror = undefined;
    this.accountStored = true;
  }

  /** Outside the group commit (top-ups, refunds): storage and mirror move by the same delta, so claims still queued stay counted. */
  private addBalance(delta: number): number {
    this.account();
    this.sql.exec("UPDATE account SET balance = balance + ? WHERE id = 1", delta);
    if (this.mirror) this.mirror.balance += delta;
    return this.mirror?.balance ?? delta;
  }

  /** Today's spend row, mirrored (the budget check reads it per debit). */
  private netSpent(day: string): number {
    if (this.today === undefined || this.today.day !== day) {
      const row = this.sql.exec<{ spent: number; refunded: number }>("SELECT spent, refunded FROM spend WHERE day = ?", day).toArray()[0];
      this.today = { day, spent: row?.spent ?? 0, refunded: row?.refunded ?? 0 };
    }
    return this.today.spent - this.today.refunded;
  }

  private record(at: number, kind: HistoryEntry["kind"], amount: number, ref: string, balance: number) {
    this.recordMany([[at, kind, amount, ref, balance]]);
  }

  private recordMany(rows: [at: number, kind: HistoryEntry["kind"], amount: number, ref: string, balance: number][]) {
    if (rows.length === 0) return;
    if (rows.length === 1) this.sql.exec("INSERT INTO history (at, kind, amount, ref, balance) VALUES (?, ?, ?, ?, ?)", ...rows[0]!);
    else this.sql.exec("INSERT INTO history (at, kind, amount, ref, balance) SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?)", JSON.stringify(rows));
    // Trimmed to MAX_HISTORY rows every HISTORY_TRIM inserts, not per insert.
    this.sinceTrim += rows.length;
    if (this.sinceTrim >= HISTORY_TRIM) {
      this.sinceTrim = 0;
      this.sql.exec("DELETE FROM history WHERE id <= (SELECT max(id) FROM history) - ?", MAX_HISTORY);
    }
  }

  /** Make sure an alarm fires no later than `at`. */
  private async schedule(at: number) {
    if (this.nextAlarm !== null && this.nextAlarm <= at) return;
    this.nextAlarm = at;
    await this.ctx.storage.setAlarm(at);
  }
}
