// Why a payment was refused, as a stable code, and the 402 problem+json (RFC 9457) that
// carries it. The body has the Payment auth scheme's problem fields (type, title, status,
// detail, challengeId) plus cn2's own `code`, `requestId` and `error` object, so MPP
// clients and the providers' SDKs (which read `error.message`) both get something useful.

import type { WalletCode } from "../../schema/wallet.ts";

export const PAYMENT_CODES = {
  /** No credential: here is a challenge. */
  payment_required: { status: 402, type: "payment-required", title: "Payment Required" },
  /** The Authorization: Payment value does not decode. */
  malformed_credential: { status: 402, type: "malformed-credential", title: "Malformed Credential" },
  /** A method this server does not accept (or has not enabled). */
  unknown_method: { status: 402, type: "method-unsupported", title: "Method Unsupported" },
  /** The echoed challenge was not issued by this server, or was altered (HMAC mismatch). */
  tampered: { status: 402, type: "invalid-challenge", title: "Invalid Challenge" },
  /** The challenge expired before the credential arrived. */
  expired: { status: 402, type: "payment-expired", title: "Payment Expired" },
  /** The credential pays for another route. */
  wrong_route: { status: 402, type: "invalid-challenge", title: "Invalid Challenge" },
  /** The signature does not verify against the credential's source, or the source is not a usable key. */
  bad_signature: { status: 402, type: "verification-failed", title: "Verification Failed" },
  /** The challenge can only be paid where it was issued (a router epoch this instance does not hold): pay the fresh one. */
  challenge_elsewhere: { status: 402, type: "invalid-challenge", title: "Invalid Challenge" },
  /** A pass (cn2-pass) this instance does not hold: expired, or granted elsewhere; pay the fresh challenge. */
  pass_unknown: { status: 402, type: "invalid-challenge", title: "Invalid Challenge" },
  /** The quote is above what the pass allows a request: pay the fresh challenge. */
  price_above_pass: { status: 402, type: "payment-insufficient", title: "Payment Insufficient" },
  /** P6: this credential was already used. */
  replayed: { status: 402, type: "verification-failed", title: "Verification Failed" },
  /** The buyer's prepaid credit does not cover the price. */
  insufficient_balance: { status: 402, type: "payment-insufficient", title: "Payment Insufficient" },
  /** The buyer's own daily budget would be passed. */
  budget_exceeded: { status: 402, type: "payment-insufficient", title: "Payment Insufficient" },
  /** Another method's verification failed (e.g. an on-chain charge). */
  payment_failed: { status: 402, type: "verification-failed", title: "Verification Failed" },
  /** The payment machinery is unreachable: nothing was charged; retry. */
  payment_unavailable: { status: 503, type: "internal-payment-error", title: "Payment Unavailable" },
} as const;
export type PaymentCode = keyof typeof PAYMENT_CODES;

export const isPaymentCode = (code: string): code is PaymentCode => Object.hasOwn(PAYMENT_CODES, code);

/** A wallet's refusal as a payment refusal (claims, and tab grants alike). */
export const WALLET_TO_PAYMENT: Record<WalletCode, PaymentCode> = {
  replayed: "replayed",
  insufficient_balance: "insufficient_balance",
  budget_exceeded: "budget_exceeded",
  invalid_amount: "payment_failed",
  unknown_proof: "payment_failed",
  already_refunded: "payment_failed",
  unknown_tab: "payment_failed",
};

/** Thrown inside method verification; carries its stable code out through mppx. */
export class PaymentRefusal extends Error {
  override readonly name = "PaymentRefusal";
  readonly code: PaymentCode;
  constructor(code: PaymentCode, message: string) {
    super(message);
    this.code = code;
  }
}

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: PaymentCode;
  challengeId?: string;
  requestId: string;
  error: { code: PaymentCode; message: string };
}

export function problemResponse(
  code: PaymentCode,
  detail: string,
  opts: { requestId: string; challenges?: string[]; challengeId?: string; headers?: HeadersInit },
): Response {
  const def = PAYMENT_CODES[code];
  const body: ProblemBody = {
    type: `https://paymentauth.org/problems/${def.type}`,
    title: def.title,
    status: def.status,
    detail,
    code,
    ...(opts.challengeId ? { challengeId: opts.challengeId } : {}),
    requestId: opts.requestId,
    error: { code, message: detail },
  };
  const headers = new Headers(opts.headers);
  headers.set("content-type", "application/problem+json");
  headers.set("cache-control", "no-store");
  headers.set("cn2-request-id", opts.requestId);
  if (opts.challenges && opts.challenges.length > 0) headers.set("www-authenticate", opts.challenges.join(", "));
  return new Response(JSON.stringify(body), { status: def.status, headers });
}
