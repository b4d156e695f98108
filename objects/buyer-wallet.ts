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
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../worker/env.ts";
import { SPEND_TTL_SECONDS, spendKey, type SpendDay } from "../worker/payments/spend.ts";

export type WalletCode = "replayed" | "insufficient_balance" | "budget_exceeded" | "unknown_proof" | "already_refunded" | "invalid_amount";
export type WalletResult<T> = ({ ok: true } & T) | { ok: false; code: WalletCode; message: string };

export interface ClaimRequest {
  buyerId: string;
  /** The challenge id the credential answers: single use. */
  proofId: string;
  amountMicros: number;
  /** ms since epoch: the challenge's expiry (the claim must outlive it). */
  expiresAt: number;
  method: string;
}

export interface TopUpRequest {
  buyerId: string;
  /** Idempotency key: a Stripe checkout session, a faucet grant, a dispute resolution. */
  eventId: string;
  amountMicros: number;
  source: "stripe" | "faucet" | "dispute" | "usdc" | "ops";
}

export interface HistoryEntry {
  at: number;
  kind: "topup" | "debit" | "payment" | "refund";
  amountMicros: number;
  /** proof id (debit, payment, refund) or top-up event id. */
  ref: string;
  balanceMicros: number;
}

export interface WalletSummary {
  buyerId: string | null;
  balanceMicros: number;
  dailyCapMicros: number | null;
  spentTodayMicros: number;
  history: HistoryEntry[];
}

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
/** Largest single amount a wallet accepts: $1M in micro-dollars. */
const MAX_AMOUNT = 1_000_000_000_000;

const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);
const validAmount = (n: number) => Number.isSafeInteger(n) && n > 0 && n <= MAX_AMOUNT;

export class BuyerWallet extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private nextAlarm: number | null = null;

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
    `);
    void ctx.blockConcurrencyWhile(async () => {
      this.nextAlarm = await ctx.storage.getAlarm();
    });
  }

  // ---- the hot path -------------------------------------------------------------------

  /**
   * Claim a proof and debit its amount, atomically: either the proof is new, the balance
   * covers it and the day's budget allows it, and both happen; or nothing changes.
   */
  async claimAndDebit(req: ClaimRequest): Promise<WalletResult<{ balanceMicros: number }>> {
    const result = this.claim(req, true);
    if (result.ok) await this.schedule(Date.now() + SPEND_FLUSH_MS);
    return result;
  }

  /**
   * Record a proof paid outside the wallet (a per-request on-chain charge): single use,
   * counted as spend, refundable as credit. Nothing is debited.
   */
  async recordPayment(req: ClaimRequest): Promise<WalletResult<{ balanceMicros: number }>> {
    const result = this.claim(req, false);
    if (result.ok) await this.schedule(Date.now() + SPEND_FLUSH_MS);
    return result;
  }

  /** B6: credit a claimed proof back, exactly once. */
  async refund(proofId: string, reason: string): Promise<WalletResult<{ balanceMicros: number; refundedMicros: number }>> {
    const now = Date.now();
    const claim = this.sql.exec<{ amount: number; day: string; refunded_at: number | null }>("SELECT amount, day, refunded_at FROM claims WHERE proof_id = ?", proofId).toArray()[0];
    if (!claim) return { ok: false, code: "unknown_proof", message: "no such payment in this wallet (unknown or past retention)" };
    if (claim.refunded_at !== null) return { ok: false, code: "already_refunded", message: "this payment was already refunded" };
    this.sql.exec("UPDATE claims SET refunded_at = ?, refund_reason = ? WHERE proof_id = ?", now, reason.slice(0, 64), proofId);
    const balance = this.addBalance(claim.amount);
    this.sql.exec("UPDATE spend SET refunded = refunded + ?, dirty = 1 WHERE day = ?", claim.amount, claim.day);
    this.record(now, "refund", claim.amount, proofId, balance);
    await this.schedule(now + SPEND_FLUSH_MS);
    return { ok: true, balanceMicros: balance, refundedMicros: claim.amount };
  }

  // ---- credit in ----------------------------------------------------------------------

  /** Add credit once per event id; a repeated event changes nothing and says so. */
  async topUp(req: TopUpRequest): Promise<WalletResult<{ balanceMicros: number; credited: boolean }>> {
    if (!validAmount(req.amountMicros)) return { ok: false, code: "invalid_amount", message: "amount must be a positive whole number of micro-dollars" };
    const now = Date.now();
    this.ensureAccount(req.buyerId, now);
    const seen = this.sql.exec("SELECT 1 FROM topups WHERE event_id = ?", req.eventId).toArray().length > 0;
    if (seen) return { ok: true, balanceMicros: this.balance(), credited: false };
    this.sql.exec("INSERT INTO topups (event_id, source, amount, at) VALUES (?, ?, ?, ?)", req.eventId, req.source, req.amountMicros, now);
    const balance = this.addBalance(req.amountMicros);
    this.record(now, "topup", req.amountMicros, req.eventId, balance);
    await this.schedule(now + CLEANUP_BATCH_MS);
    return { ok: true, balanceMicros: balance, credited: true };
  }

  // ---- buyer settings and views -------------------------------------------------------

  /** B5: the buyer's own daily cap on spend (null removes it). */
  setDailyCap(buyerId: string, capMicros: number | null): WalletResult<{ dailyCapMicros: number | null }> {
    if (capMicros !== null && !(Number.isSafeInteger(capMicros) && capMicros >= 0 && capMicros <= MAX_AMOUNT)) {
      return { ok: false, code: "invalid_amount", message: "cap must be a whole number of micro-dollars, or null" };
    }
    this.ensureAccount(buyerId, Date.now());
    this.sql.exec("UPDATE account SET daily_cap = ? WHERE id = 1", capMicros);
    return { ok: true, dailyCapMicros: capMicros };
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
      history,
    };
  }

  /** Spend per UTC day as this object knows it (the KV copy may lag by SPEND_FLUSH_MS). */
  spendDays(): SpendDay[] {
    return this.sql.exec<{ day: string; spent: number; refunded: number; requests: number }>("SELECT day, spent, refunded, requests FROM spend ORDER BY day").toArray()
      .map((r) => ({ day: r.day, spentMicros: r.spent, refundedMicros: r.refunded, requests: r.requests }));
  }

  // ---- alarm: spend to KV, expired rows out -------------------------------------------

  override async alarm(): Promise<void> {
    this.nextAlarm = null;
    const now = Date.now();
    const buyerId = this.account()?.buyer_id;
    const dirty = this.sql.exec<{ day: string; spent: number; refunded: number; requests: number }>("SELECT day, spent, refunded, requests FROM spend WHERE dirty = 1").toArray();
    if (buyerId) {
      for (const row of dirty) {
        const value: SpendDay = { day: row.day, spentMicros: row.spent, refundedMicros: row.refunded, requests: row.requests };
        // A failed put throws: the alarm is retried and the row stays dirty.
        await this.env.SPEND.put(spendKey(buyerId, row.day), JSON.stringify(value), { expirationTtl: SPEND_TTL_SECONDS });
        this.sql.exec("UPDATE spend SET dirty = 0 WHERE day = ? AND spent = ? AND refunded = ? AND requests = ?", row.day, row.spent, row.refunded, row.requests);
      }
    }
    this.sql.exec("DELETE FROM claims WHERE expires_at < ?", now - CLAIM_RETENTION_MS);
    this.sql.exec("DELETE FROM topups WHERE at < ?", now - TOPUP_RETENTION_MS);
    this.sql.exec("DELETE FROM spend WHERE day < ? AND dirty = 0", utcDay(now - SPEND_RETENTION_MS));
    this.sql.exec("DELETE FROM history WHERE at < ?", now - SPEND_RETENTION_MS);

    const oldestClaim = this.sql.exec<{ t: number | null }>("SELECT min(expires_at) AS t FROM claims").one().t;
    const oldestTopUp = this.sql.exec<{ t: number | null }>("SELECT min(at) AS t FROM topups").one().t;
    const oldestHistory = this.sql.exec<{ t: number | null }>("SELECT min(at) AS t FROM history").one().t;
    const retention = [
      oldestClaim === null ? null : oldestClaim + CLAIM_RETENTION_MS,
      oldestTopUp === null ? null : oldestTopUp + TOPUP_RETENTION_MS,
      oldestHistory === null ? null : oldestHistory + SPEND_RETENTION_MS,
    ].filter((t): t is number => t !== null);
    const stillDirty = this.sql.exec("SELECT 1 FROM spend WHERE dirty = 1 LIMIT 1").toArray().length > 0;
    // Retention clean-ups are batched (at most one an hour); a pending spend copy is not.
    const candidates = [...retention.map((t) => Math.max(t, now + CLEANUP_BATCH_MS)), ...(stillDirty ? [now + SPEND_FLUSH_MS] : [])];
    if (candidates.length > 0) await this.schedule(Math.min(...candidates));
  }

  // ---- internals ----------------------------------------------------------------------

  /** Synchronous from the first check to the last write: this is the atomic step. */
  private claim(req: ClaimRequest, debit: boolean): WalletResult<{ balanceMicros: number }> {
    if (!validAmount(req.amountMicros)) return { ok: false, code: "invalid_amount", message: "amount must be a positive whole number of micro-dollars" };
    const now = Date.now();
    const taken = this.sql.exec("SELECT 1 FROM claims WHERE proof_id = ?", req.proofId).toArray().length > 0;
    if (taken) return { ok: false, code: "replayed", message: "this payment credential was already used" };
    const account = this.account();
    const balance = account?.balance ?? 0;
    if (debit && balance < req.amountMicros) {
      return { ok: false, code: "insufficient_balance", message: `balance ${balance} is below the price ${req.amountMicros} (micro-dollars); top up first` };
    }
    const day = utcDay(now);
    const cap = account?.daily_cap ?? null;
    // A payment made elsewhere is recorded whatever the cap: its money has already moved.
    if (debit && cap !== null && this.netSpent(day) + req.amountMicros > cap) {
      return { ok: false, code: "budget_exceeded", message: `this would pass your daily budget of ${cap} micro-dollars` };
    }
    this.ensureAccount(req.buyerId, now);
    this.sql.exec(
      "INSERT INTO claims (proof_id, method, amount, debited, day, at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
      req.proofId, req.method, req.amountMicros, debit ? 1 : 0, day, now, req.expiresAt,
    );
    const after = debit ? this.addBalance(-req.amountMicros) : balance;
    this.sql.exec(
      "INSERT INTO spend (day, spent, refunded, requests, dirty) VALUES (?, ?, 0, 1, 1) ON CONFLICT (day) DO UPDATE SET spent = spent + excluded.spent, requests = requests + 1, dirty = 1",
      day, req.amountMicros,
    );
    this.record(now, debit ? "debit" : "payment", req.amountMicros, req.proofId, after);
    return { ok: true, balanceMicros: after };
  }

  private account() {
    return this.sql.exec<{ buyer_id: string; balance: number; daily_cap: number | null }>("SELECT buyer_id, balance, daily_cap FROM account WHERE id = 1").toArray()[0] ?? null;
  }

  private balance(): number {
    return this.account()?.balance ?? 0;
  }

  private ensureAccount(buyerId: string, now: number) {
    this.sql.exec("INSERT INTO account (id, buyer_id, balance, daily_cap, created_at) VALUES (1, ?, 0, NULL, ?) ON CONFLICT (id) DO NOTHING", buyerId, now);
  }

  private addBalance(delta: number): number {
    return this.sql.exec<{ balance: number }>("UPDATE account SET balance = balance + ? WHERE id = 1 RETURNING balance", delta).one().balance;
  }

  private netSpent(day: string): number {
    const row = this.sql.exec<{ spent: number; refunded: number }>("SELECT spent, refunded FROM spend WHERE day = ?", day).toArray()[0];
    return row ? row.spent - row.refunded : 0;
  }

  private record(at: number, kind: HistoryEntry["kind"], amount: number, ref: string, balance: number) {
    this.sql.exec("INSERT INTO history (at, kind, amount, ref, balance) VALUES (?, ?, ?, ?, ?)", at, kind, amount, ref, balance);
    this.sql.exec("DELETE FROM history WHERE id <= (SELECT max(id) FROM history) - ?", MAX_HISTORY);
  }

  /** Make sure an alarm fires no later than `at`. */
  private async schedule(at: number) {
    if (this.nextAlarm !== null && this.nextAlarm <= at) return;
    this.nextAlarm = at;
    await this.ctx.storage.setAlarm(at);
  }
}
