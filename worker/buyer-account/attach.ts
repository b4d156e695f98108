// Attaching buyer ids to a buyer account by proving the buyer key, and detaching them (B4).
//
// A buyer id is the SHA-256 of the buyer key's did:key (B2): anyone can name one, so
// naming proves nothing. The attach request is signed with the key exactly as the balance
// call and disputes are (ACCOUNT_HEADERS: method, path, a time within ±300 s, the body's
// SHA-256; worker/payments/credit.ts), and its body binds the signature to this account and
// to a fresh nonce:
//   - a proof for another account is refused (proof_wrong_account), so a signed request
//     seen elsewhere (a log, a proxy) attaches the key to no account but its signer's choice;
//   - a nonce works once (claimed in the proof store until the proof's time window ends),
//     so the same request cannot attach again after a detach (proof_replayed);
//   - a stale time is refused (proof_expired), a bad or missing signature too (proof_invalid).
// The DID is hashed at once and goes no further. An id belongs to one account at a time.
import * as v from "valibot";
import { asService } from "../../schema/tables.ts";
import { AttachProofSchema, MAX_BUYER_IDS } from "../../schema/buyer-account.ts";
import { ACCOUNT_HEADERS, ACCOUNT_TOLERANCE_SECONDS } from "../../core/credit-method.ts";
import { BUYER_ID } from "../../core/did.ts";
import { ApiError, json, parseOr400 } from "../../core/http.ts";
import { checkAccountSignature } from "../payments/credit.ts";
import { proofStore } from "../payments/atomic-store.ts";
import { ensureBuyerAccount } from "../seller/sign-in.ts";
import { buyerRoute, signedInRoute } from "./account.ts";

const MAX_BODY_BYTES = 1024;

/**
 * POST /api/buyer/account/ids, signed with the buyer key: {accountId, nonce} -> 201
 * {buyerId, attachedAt} (200 if already attached here). The first attach opens the account.
 */
export const attachBuyerId = signedInRoute(async (c) => {
  const length = Number(c.request.headers.get("content-length") ?? "0");
  if (length > MAX_BODY_BYTES) throw new ApiError("body_too_large", `body over ${MAX_BODY_BYTES} bytes`);
  const text = await c.request.text();
  if (text.length > MAX_BODY_BYTES) throw new ApiError("body_too_large", `body over ${MAX_BODY_BYTES} bytes`);

  const signed = await checkAccountSignature(c.request, text);
  if (!signed.ok) {
    if (signed.reason === "stale") throw new ApiError("proof_expired", `attach proof: ${signed.message}; sign a fresh one`);
    throw new ApiError("proof_invalid", `attach proof: ${signed.message}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new ApiError("invalid_json", "body is not valid JSON");
  }
  const proof = parseOr400(AttachProofSchema, body, "attach proof");
  // The account id is the sign-in's id: checked before the account is made, so a refused proof changes nothing.
  if (proof.accountId !== c.identity.id) {
    throw new ApiError("proof_wrong_account", "this proof was signed for another account: sign {accountId, nonce} with your own account id");
  }
  // Claim the nonce for as long as the signature's time would still be accepted.
  const until = (Number(c.request.headers.get(ACCOUNT_HEADERS.time)) + ACCOUNT_TOLERANCE_SECONDS + 60) * 1000;
  if (!(await proofStore(c.env).tryClaim!(`cn2:attach:${signed.buyerId}:${proof.nonce}`, until))) {
    throw new ApiError("proof_replayed", "this attach proof was used before: sign a new one with a fresh nonce");
  }

  const buyerId = signed.buyerId;
  const account = await ensureBuyerAccount(c.sql, c.identity);
  const outcome = await asService(c.sql, async (tx) => {
    // One attach at a time per account, so the count below holds.
    await tx`select 1 from public.buyer_accounts where id = ${account.id} for update`;
    const [owner] = await tx<{ account_id: string; attached_at: Date }[]>`select account_id, attached_at from public.buyer_account_ids where buyer_id_hash = ${buyerId}`;
    if (owner) return owner.account_id === account.id ? { created: false, attachedAt: owner.attached_at } : null;
    const [held] = await tx<{ n: number }[]>`select count(*)::int as n from public.buyer_account_ids where account_id = ${account.id}`;
    if (held!.n >= MAX_BUYER_IDS) throw new ApiError("too_many_buyer_ids", `an account holds at most ${MAX_BUYER_IDS} buyer ids; detach one first`);
    const [row] = await tx<{ attached_at: Date }[]>`
      insert into public.buyer_account_ids (buyer_id_hash, account_id) values (${buyerId}, ${account.id})
      on conflict (buyer_id_hash) do nothing returning attached_at`;
    return row ? { created: true, attachedAt: row.attached_at } : null;
  });
  if (!outcome) throw new ApiError("buyer_id_attached_elsewhere", "this buyer key is attached to another account; detach it there first");
  return json({ buyerId, attachedAt: outcome.attachedAt.toISOString() }, outcome.created ? 201 : 200);
});

const BuyerIdParam = v.pipe(v.string(), v.regex(BUYER_ID, "a buyer id is 64 lowercase hex characters"));

/** DELETE /api/buyer/account/ids/:buyerId: detach (the account's own choice: no proof needed). */
export const detachBuyerId = buyerRoute(async (c) => {
  const buyerId = parseOr400(BuyerIdParam, c.request.params.buyerId ?? "", "buyer id");
  const removed = await c.asBuyer((tx) => tx`delete from public.buyer_account_ids where buyer_id_hash = ${buyerId}`);
  if (removed.count === 0) throw new ApiError("buyer_id_not_attached", "that buyer id is not attached to this account");
  return json({ buyerId, detached: true });
});
