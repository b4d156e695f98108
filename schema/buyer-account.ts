// The optional buyer account (B4, PR11) on the wire: the routes, the attach proof a buyer
// key signs, and what the API answers. Shared by the Worker (worker/buyer-account/) and the
// buyer CLI. The account is the auth user (the same Supabase Auth as sellers); buyer ids
// are attached to it only with a signature by their key, and anonymous buying does not
// change: an account only shows and tops up what its ids already are.
import * as v from "valibot";

export const BUYER_ACCOUNT_PATH = "/api/buyer/account";
/** POST: attach the buyer id whose key signed the request (ACCOUNT_HEADERS over this path and the body). */
export const ATTACH_PATH = `${BUYER_ACCOUNT_PATH}/ids`;
export const HISTORY_PATH = `${BUYER_ACCOUNT_PATH}/history`;
export const ACCOUNT_TOPUP_PATH = `${BUYER_ACCOUNT_PATH}/topup`;

/** Buyer ids one account may hold. */
export const MAX_BUYER_IDS = 20;
/** How far back the spend history goes: B5 keeps spend tracking 90 days. */
export const HISTORY_DAYS = 90;

/**
 * The body of an attach request, signed with the buyer key (the signature covers the body's
 * SHA-256, the path and a time within ±300 s): the account it is for, so a signature made
 * for one account attaches to no other, and a fresh nonce, so it attaches once.
 */
export const AttachProofSchema = v.strictObject({
  accountId: v.pipe(v.string(), v.uuid("accountId must be your account id (GET /api/buyer/account)")),
  nonce: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{16,64}$/, "nonce must be 16-64 base64url characters, fresh for each attach")),
});
export type AttachProof = v.InferOutput<typeof AttachProofSchema>;

/** A fresh attach body for `accountId`. */
export function newAttachProof(accountId: string): AttachProof {
  const bytes = crypto.getRandomValues(new Uint8Array(18));
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return { accountId, nonce: btoa(bin).replaceAll("+", "-").replaceAll("/", "_") };
}

export interface AttachedBuyerId {
  /** B2: SHA-256 of the buyer key's did:key. */
  buyerId: string;
  attachedAt: string;
}

export interface BuyerAccountView {
  id: string;
  email: string;
  createdAt: string;
  buyerIds: AttachedBuyerId[];
}

export interface SpendDayView {
  /** YYYY-MM-DD, UTC. */
  day: string;
  spentMicros: number;
  refundedMicros: number;
  requests: number;
}

export interface WalletEntryView {
  /** ms since the epoch. */
  at: number;
  /** `hold`/`release`: credit set aside for a tab and what it did not spend, back (docs/payments.md, "Tabs"). */
  kind: "topup" | "debit" | "payment" | "refund" | "hold" | "release";
  amountMicros: number;
  /** The payment's proof id (debit, payment, refund), the top-up's event id, or the tab id (hold, release). */
  ref: string;
  balanceMicros: number;
}

export interface SpendTotals {
  spentMicros: number;
  refundedMicros: number;
  requests: number;
}

export interface BuyerIdHistory extends AttachedBuyerId {
  balanceMicros: number;
  days: SpendDayView[];
  entries: WalletEntryView[];
  totals: SpendTotals;
}

/** GET /api/buyer/account/history: the spend of every attached id over the last `days` days. */
export interface BuyerAccountHistory {
  /** The first UTC day included. */
  since: string;
  days: number;
  buyerIds: BuyerIdHistory[];
  totals: SpendTotals;
}

export interface BuyerAccountDeleted {
  deleted: true;
  detachedBuyerIds: number;
  erasedSpendDays: number;
  /** The sign-in itself was deleted too (false when it still holds a seller account). */
  signInDeleted: boolean;
}
