// The BuyerWallet object's boundary (B1, B2, B5, B6, P7): what the payment code and the
// ops tools send it and get back. RPC results are schema/result.ts's Result, with the
// wallet's own refusal codes. The object itself is objects/buyer-wallet/.

export type WalletCode = "replayed" | "insufficient_balance" | "budget_exceeded" | "unknown_proof" | "already_refunded" | "invalid_amount";

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
  history: HistoryEntry[];
}
