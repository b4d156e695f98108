// The BuyerWallet object's boundary (B1, B2, B5, B6, P7): what the payment code and the
// ops tools send it and get back. RPC results are schema/result.ts's Result, with the
// wallet's own refusal codes. The object itself is objects/buyer-wallet/.

export type WalletCode = "replayed" | "insufficient_balance" | "budget_exceeded" | "unknown_proof" | "already_refunded" | "invalid_amount" | "unknown_tab";

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
  /** `hold`: credit set aside for a tab (its id in `ref`); `release`: what a closed tab did not spend, back. */
  kind: "topup" | "debit" | "payment" | "refund" | "hold" | "release";
  amountMicros: number;
  /** proof id (debit, payment, refund), top-up event id, or tab id (hold, release). */
  ref: string;
  balanceMicros: number;
}

export const DISPUTE_REASONS = ["not_served", "wrong_amount", "upstream_error", "duplicate_charge", "other"] as const;
export type DisputeReason = (typeof DISPUTE_REASONS)[number];
export type DisputeDecision = "refund" | "reject";
export type DisputeCode = "payment_not_found" | "already_refunded" | "too_many_disputes" | "dispute_not_found" | "dispute_resolved";

export interface OpenDisputeRequest {
  buyerId: string;
  /** Made by the caller: `dsp_` + a UUIDv7 in hex (time-ordered). */
  disputeId: string;
  /** The receipt's proof id: must be a payment claimed in this wallet. */
  proofId: string;
  /** The receipt's request id (its signature binds it to the proof). */
  requestId: string;
  reason: DisputeReason;
  /** The buyer's words, bounded by the caller. */
  note: string | null;
}

/** A dispute as its buyer sees it; `buyerId` is the hash (B2), for ops. */
export interface DisputeRecord {
  id: string;
  buyerId: string;
  requestId: string;
  proofId: string;
  method: string;
  /** What the disputed payment was. */
  amountMicros: number;
  reason: DisputeReason;
  note: string | null;
  status: "open" | "resolved";
  resolution: "refunded" | "rejected" | null;
  resolutionNote: string | null;
  /** What the resolution credited back (0 unless refunded, and 0 if the payment had already been refunded). */
  refundedMicros: number;
  openedAt: number;
  resolvedAt: number | null;
}

/** KV `DISPUTES` metadata: enough for the ops list without reading values. */
export interface DisputeIndexMeta {
  buyerId: string;
  requestId: string;
  status: DisputeRecord["status"];
  resolution: DisputeRecord["resolution"];
  amountMicros: number;
  reason: DisputeReason;
  openedAt: number;
}

export const disputeIndexKey = (disputeId: string) => `dispute:${disputeId}`;
/** Open disputes per buyer: enough for honest use, a bound on what one key can file. */
export const MAX_OPEN_DISPUTES = 20;

export interface WalletSummary {
  buyerId: string | null;
  balanceMicros: number;
  dailyCapMicros: number | null;
  spentTodayMicros: number;
  /** Credit set aside for open tabs (docs/payments.md, "Tabs"): what they do not spend comes back when they close. */
  heldMicros: number;
  history: HistoryEntry[];
}

// ---- tabs (docs/payments.md, "Tabs") ---------------------------------------------------
// A router isolate serving a busy buyer draws that buyer's payments from a tab: credit the
// wallet set aside once (openTab), drawn in the isolate's memory request by request. Each
// draw is made durable by the serving key's own commit (the key records it with its
// earning) and reported to the wallet by the key; the router closes the tab with its full
// list of draws. Either way the wallet ends with one claim per paid request, as if each had
// been debited alone.

/** One paid request drawn on a tab. */
export interface TabDraw {
  /** The challenge id the credential answered: single use, the refund and dispute handle. */
  proofId: string;
  requestId: string;
  amountMicros: number;
  /** ms since epoch: when it was drawn (its day for spend). */
  at: number;
  /** ms since epoch: the challenge's expiry (the claim outlives it by CLAIM_RETENTION_MS). */
  expiresAt: number;
  /** Set when the router refunded it before the tab closed (B6): recorded as a debit and its refund. */
  refundReason?: string;
}

export interface OpenTabRequest {
  buyerId: string;
  /** Made by the router: unique (a UUID). */
  tabId: string;
  /** What the router would like to hold; the grant may be less (balance, daily cap). */
  wantMicros: number;
  /** Refused below this (the price of the request that asks). */
  minMicros: number;
  /** ms since epoch: the router draws on it no later than this; see TAB_SETTLE_GRACE_MS. */
  expiresAt: number;
  /** The router's previous tab for this buyer, closed in the same call. */
  close?: CloseTabRequest;
}

export interface CloseTabRequest {
  tabId: string;
  /** Every draw the router made on the tab, refunded ones included. */
  draws: TabDraw[];
}

/** A tab the router never closed (its isolate ended) is settled on its keys' reports this long after it expired. */
export const TAB_SETTLE_GRACE_MS = 5 * 60_000;
