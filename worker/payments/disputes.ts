// Billing disputes (P7, PR19): a buyer opens one from a `Payment-Receipt`; ops resolve it
// with a refund to the buyer's credit or a rejection.
//
//   POST /api/disputes           buyer-signed {receipt, reason, note?} -> 201 {dispute} (200 if it already exists)
//   GET  /api/disputes           buyer-signed -> {disputes}            (this buyer's, newest first)
//   GET  /api/disputes/:id       buyer-signed -> {dispute}
//   GET  /ops/disputes?status=open|resolved&limit=&cursor=  (ops token) -> {disputes, cursor}
//   GET  /ops/disputes/:id       (ops token) -> {dispute}
//   POST /ops/disputes/:id/resolve {decision: "refund"|"reject", note?}  (ops token) -> {dispute, changed}
//
// Who may dispute a payment: the buyer who made it. Receipts travel in logs and
// screenshots, so holding one proves nothing. The request is signed with the buyer's key
// exactly like the balance call (ACCOUNT_HEADERS); the DID is hashed at once (B2) and the
// receipt's proof id must be a payment claimed in *that* buyer's wallet. The receipt's own
// signature (an HMAC the Worker added when it issued it) proves which request the payment
// paid for; the amount comes from the wallet's claim, never from the buyer.
//
// Storage: the dispute lives in the buyer's BuyerWallet object, next to the claim it is
// about, so opening (claim checks + insert) and refunding (exactly once, through the same
// mark as B6 refunds) are each one atomic step. KV `DISPUTES` is the ops index (list by
// status, find the wallet by dispute id), written by the wallet; Postgres' `disputes`
// table (schema/sql/0007) can mirror it later with the same fields.
import * as v from "valibot";
import {
  DISPUTE_REASONS, disputeIndexKey,
  type DisputeCode, type DisputeIndexMeta, type DisputeRecord,
} from "../../schema/wallet.ts";
import type { Env } from "../../core/env.ts";
import { clawBackDispute } from "../payouts/clawback.ts";
import { ApiError, json, parseOr400, unwrap } from "../../core/http.ts";
import { readSignedJson, verifyAccountRequest } from "./credit.ts";
import { verifyReceipt } from "./index.ts";
import { retireTab } from "./tabs.ts";
import { toHex } from "../../core/encoding.ts";
import { walletStub } from "../../objects/buyer-wallet/stub.ts";

/** Longest free text a buyer or an operator can attach. */
export const MAX_NOTE_CHARS = 500;
const MAX_BODY_BYTES = 8 * 1024;
const MAX_RECEIPT_CHARS = 4096;

const DISPUTE_ID = /^dsp_[0-9a-f]{32}$/;
const REQUEST_ID = /^req_[A-Za-z0-9]{16,64}$/;

/** Printable text only: no control characters (a note ends up in ops tools and logs' neighbours). */
const Note = v.pipe(
  v.string(),
  v.trim(),
  v.maxLength(MAX_NOTE_CHARS, `note: at most ${MAX_NOTE_CHARS} characters`),
  v.regex(/^[^\p{Cc}\p{Cs}]*$/u, "note: no control characters"),
);

const OpenSchema = v.strictObject({
  receipt: v.pipe(v.string(), v.minLength(1, "receipt: the Payment-Receipt header value"), v.maxLength(MAX_RECEIPT_CHARS)),
  reason: v.picklist(DISPUTE_REASONS, `reason must be one of ${DISPUTE_REASONS.join(", ")}`),
  note: v.optional(v.nullable(Note), null),
});

const ResolveSchema = v.strictObject({
  decision: v.picklist(["refund", "reject"], 'decision must be "refund" or "reject"'),
  note: v.optional(v.nullable(Note), null),
});

const ListQuery = v.object({
  status: v.optional(v.picklist(["open", "resolved", "all"], "status must be open, resolved or all"), "open"),
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d{1,4}$/, "limit must be 1-1000"), v.transform(Number), v.minValue(1, "limit must be 1-1000"), v.maxValue(1000, "limit must be 1-1000")), "100"),
  cursor: v.optional(v.pipe(v.string(), v.maxLength(1024))),
});

/** `dsp_` + a UUIDv7 in hex: time-ordered (so the KV index lists oldest first) and a valid uuid for Postgres. */
export function newDisputeId(now = Date.now()): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let t = now;
  for (let i = 5; i >= 0; i--) {
    bytes[i] = t % 256;
    t = Math.floor(t / 256);
  }
  bytes[6] = (bytes[6]! & 0x0f) | 0x70;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  return `dsp_${toHex(bytes)}`;
}

// ---- buyers ---------------------------------------------------------------------------

/** POST /api/disputes (buyer-signed): open a dispute from a receipt. */
export async function openDisputeHandler(request: Request, env: Env): Promise<Response> {
  const { buyerId, body } = await readSignedJson(request, MAX_BODY_BYTES);
  const input = parseOr400(OpenSchema, body, "dispute");
  const receipt = await verifyReceipt(env, input.receipt);
  if (!receipt || !REQUEST_ID.test(receipt.requestId)) {
    throw new ApiError("invalid_receipt", "receipt: not a Payment-Receipt issued by this server, or altered (pass the header value exactly as received)");
  }
  if (receipt.refunded) throw new ApiError("already_refunded", "this receipt says the payment was refunded at once (B6): there is nothing to dispute");
  // A payment drawn on a tab this isolate holds is claimed in the wallet when the tab
  // closes: close it first (a tab held elsewhere closes within seconds; see the message).
  await retireTab(env, buyerId);
  const result = await walletStub(env, buyerId).openDispute({
    buyerId, disputeId: newDisputeId(), proofId: receipt.reference, requestId: receipt.requestId, reason: input.reason, note: input.note || null,
  });
  const { dispute, created } = unwrap(result);
  return json({ dispute: buyerView(dispute) }, created ? 201 : 200);
}

/** GET /api/disputes (buyer-signed): this buyer's disputes. */
export async function listOwnDisputesHandler(request: Request, env: Env): Promise<Response> {
  const buyerId = await verifyAccountRequest(request, "");
  return json({ disputes: (await walletStub(env, buyerId).disputes(100)).map(buyerView) });
}

/** GET /api/disputes/:id (buyer-signed): one of this buyer's disputes. */
export async function getOwnDisputeHandler(request: Request, env: Env, id: string | undefined): Promise<Response> {
  const buyerId = await verifyAccountRequest(request, "");
  const dispute = await walletStub(env, buyerId).dispute(disputeIdOf(id));
  if (!dispute) throw new ApiError("dispute_not_found", "no such dispute for this buyer key");
  return json({ dispute: buyerView(dispute) });
}

// ---- ops ------------------------------------------------------------------------------

/** GET /ops/disputes?status=open (default) | resolved | all, oldest first, paged by cursor. */
export async function listDisputesHandler(request: Request, env: Env): Promise<Response> {
  const url = new URL(request.url);
  const query = parseOr400(ListQuery, Object.fromEntries(url.searchParams), "query");
  const limit = Number(query.limit);
  const disputes: (DisputeIndexMeta & { id: string })[] = [];
  let cursor: string | undefined = query.cursor;
  // A page holds at most `limit` keys, so the answer does too; pages with no match are
  // skipped (a few at most per call) so a long run of resolved disputes does not look empty.
  for (let pages = 0; pages < 10; pages++) {
    const page: KVNamespaceListResult<DisputeIndexMeta> = await env.DISPUTES.list<DisputeIndexMeta>({ prefix: "dispute:", limit, ...(cursor ? { cursor } : {}) });
    for (const k of page.keys) {
      if (!k.metadata || (query.status !== "all" && k.metadata.status !== query.status)) continue;
      disputes.push({ id: k.name.slice("dispute:".length), ...k.metadata });
    }
    cursor = page.list_complete ? undefined : page.cursor;
    if (disputes.length > 0 || !cursor) break;
  }
  return json({ disputes, cursor: cursor ?? null });
}

/** GET /ops/disputes/:id: the dispute as its wallet holds it now. */
export async function getDisputeHandler(env: Env, id: string | undefined): Promise<Response> {
  const { disputeId, buyerId } = await locate(env, id);
  const dispute = await walletStub(env, buyerId).dispute(disputeId);
  if (!dispute) throw new ApiError("dispute_not_found", `no dispute ${disputeId}`);
  return json({ dispute });
}

/** POST /ops/disputes/:id/resolve {decision, note?}: refund (exactly once) or reject. */
export async function resolveDisputeHandler(request: Request, env: Env, id: string | undefined): Promise<Response> {
  const { disputeId, buyerId } = await locate(env, id);
  const text = await request.text();
  if (text.length > MAX_BODY_BYTES) throw new ApiError("body_too_large", `body over ${MAX_BODY_BYTES} bytes`);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new ApiError("invalid_json", "body is not valid JSON");
  }
  const input = parseOr400(ResolveSchema, body, "resolution");
  const result = await walletStub(env, buyerId).resolveDispute(disputeId, input.decision, input.note || null);
  const { dispute, changed } = unwrap(result);
  // A refund claws back the serving seller's share (exactly once per dispute); repeating
  // the same resolution retries a clawback that was still pending.
  let clawback: unknown = null;
  if (dispute.resolution === "refunded" && dispute.refundedMicros > 0) {
    clawback = await clawBackDispute(env, { disputeId, requestId: dispute.requestId, refundedMicros: dispute.refundedMicros })
      .catch(() => ({ status: "pending", reason: "db_unavailable" }));
  }
  return json({ dispute, changed, clawback });
}

// ---- helpers --------------------------------------------------------------------------

function disputeIdOf(id: string | undefined): string {
  if (!id || !DISPUTE_ID.test(id)) throw new ApiError("invalid_request", "a dispute id looks like dsp_ followed by 32 hex digits");
  return id;
}

/** Which wallet holds a dispute: the ops index knows (KV; a just-opened dispute is there at once, or after the wallet's retry). */
async function locate(env: Env, id: string | undefined): Promise<{ disputeId: string; buyerId: string }> {
  const disputeId = disputeIdOf(id);
  const { metadata } = await env.DISPUTES.getWithMetadata<DisputeIndexMeta>(disputeIndexKey(disputeId));
  if (!metadata) throw new ApiError("dispute_not_found", `no dispute ${disputeId}`);
  return { disputeId, buyerId: metadata.buyerId };
}

/** What the buyer sees: everything but its own buyer id (it knows it). */
function buyerView(d: DisputeRecord): Omit<DisputeRecord, "buyerId"> {
  const { buyerId: _b, ...rest } = d;
  return rest;
}

