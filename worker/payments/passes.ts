// Passes (docs/payments.md, "Passes"): a spending allowance a buyer's signature grants
// once, drawn on with a cheap proof per request instead of a signed credential each.
//
// A paid answer to a request that asked for one (`cn2-pass: want`) and paid with a signed
// credential carries a pass: an id, a secret, the most a request may cost (the amount that
// signature agreed to) and an expiry. The buyer's first such request gets one: a pass holds
// no money until its first draw, which opens the buyer's tab here (tabs.ts). It is bound to the buyer,
// to the route the signed request paid for, and to this isolate, where it lives in memory.
// Each later request on that route proves itself with `cn2-pass: <id>.<seq>.<mac>`, the mac
// an HMAC-SHA256 under the secret of the pass id and a sequence number the buyer never
// repeats. What keeps it as strong as a credential per request:
//
// - Single use (P6, PR23): a sequence number is taken once (a window of the latest
//   PASS_WINDOW numbers, and nothing older), synchronously after the mac verified.
// - Bound to the request: the pass pays for one route only, at most maxMicros a request;
//   a dearer quote is refused with a fresh challenge, which the buyer signs as before.
// - Durable before the answer: a pass's draws are tab draws, recorded with the serving
//   key's earning, settled when the tab closes, exactly as a signed proof's.
// - Bounded if the secret leaks: PASS_TTL_MS, the buyer's balance and daily budget (the
//   wallet checks both when it grants each tab), and only over TLS in production.
//
// A pass this isolate does not hold (another isolate's, expired, evicted) is refused with a
// fresh challenge: no money moves, and the buyer pays it the signed way (and gets a new pass).
import type { Env } from "../../core/env.ts";
import { toBase64Url } from "../../core/encoding.ts";
import { formatPassGrant, parsePassProof, passProofInput } from "../../core/pass.ts";
import type { PaymentCode } from "./errors.ts";
import { drawOrClaim, type Draw } from "./tabs.ts";

/** A pass is good for this long after it is granted. */
export const PASS_TTL_MS = 5 * 60_000;
/** Sequence numbers more than this far below a pass's highest are refused as replayed. */
const PASS_WINDOW = 4096;
/** Passes held per isolate; the oldest go first past this (their buyers fall back to signing). */
const MAX_PASSES = 20_000;
const HMAC_SHA256 = { name: "HMAC", hash: "SHA-256" } as const;
const utf8 = new TextEncoder();

interface Pass {
  id: string;
  buyerId: string;
  route: string;
  maxMicros: number;
  expiresAt: number;
  key: Promise<CryptoKey>;
  /** The highest sequence number taken, and those taken within PASS_WINDOW below it. */
  high: number;
  used: Set<number>;
}

const passes = new Map<string, Pass>();
/**
 * The buyer's passes for each route, oldest first: a buyer may run several clients (each
 * asks for its own), and past PASSES_PER_ROUTE a grant replaces the oldest.
 */
const byBuyerRoute = new Map<string, string[]>();
const PASSES_PER_ROUTE = 16;

/**
 * Grant `buyerId` a pass for `route` at up to `maxMicros` a request: the `cn2-pass` answer
 * header, `<id>.<secret>.<maxMicros>.<expiresAt ms>` (both base64url).
 */
export function grantPass(buyerId: string, route: string, maxMicros: number, now = Date.now()): string {
  const slot = `${buyerId} ${route}`;
  let mine = byBuyerRoute.get(slot);
  if (mine === undefined) byBuyerRoute.set(slot, (mine = []));
  // Expired ones go first, then the oldest past the bound (their holders sign again).
  while (mine.length > 0 && (mine.length >= PASSES_PER_ROUTE || !((passes.get(mine[0]!)?.expiresAt ?? 0) > now))) passes.delete(mine.shift()!);
  while (passes.size >= MAX_PASSES) {
    const oldest = passes.values().next().value!;
    passes.delete(oldest.id);
    const theirSlot = `${oldest.buyerId} ${oldest.route}`;
    const theirs = byBuyerRoute.get(theirSlot);
    theirs?.splice(theirs.indexOf(oldest.id), 1);
    if (theirs?.length === 0 && theirs !== mine) byBuyerRoute.delete(theirSlot);
  }
  const id = toBase64Url(crypto.getRandomValues(new Uint8Array(16)));
  const secret = crypto.getRandomValues(new Uint8Array(32));
  const expiresAt = now + PASS_TTL_MS;
  const key = crypto.subtle.importKey("raw", secret, HMAC_SHA256, false, ["verify"]);
  passes.set(id, { id, buyerId, route, maxMicros, expiresAt, key, high: 0, used: new Set() });
  mine.push(id);
  return formatPassGrant({ id, secret, maxMicros, expiresAt });
}

export type PassDraw =
  | { ok: true; buyerId: string; proofId: string; draw?: Draw }
  | { ok: false; code: PaymentCode; detail: string };

/**
 * Pay `quoteMicros` for a request on `route` with the `cn2-pass` proof `value`: a draw on
 * the buyer's tab here (busy buyers) or a claim in its wallet, or why not (then paying the
 * signed way can succeed). Throws a PaymentRefusal when the wallet refuses (balance, budget).
 */
export async function drawOnPass(env: Env, value: string, route: string, quoteMicros: number, requestId: string): Promise<PassDraw> {
  const proof = parsePassProof(value);
  if (!proof) return { ok: false, code: "malformed_credential", detail: "cn2-pass must be <pass id>.<sequence number>.<base64url HMAC-SHA256>" };
  const { id, seq, mac } = proof;
  const pass = passes.get(id);
  if (pass === undefined || pass.expiresAt <= Date.now()) {
    return { ok: false, code: "pass_unknown", detail: "this pass is not held here (expired, or granted elsewhere); pay the fresh challenge" };
  }
  if (pass.route !== route) return { ok: false, code: "wrong_route", detail: "this pass pays for another route" };
  if (!(await crypto.subtle.verify("HMAC", await pass.key, mac, utf8.encode(passProofInput(id, seq))))) {
    return { ok: false, code: "tampered", detail: "the pass proof does not verify" };
  }
  if (quoteMicros > pass.maxMicros) {
    return { ok: false, code: "price_above_pass", detail: `this request now costs ${quoteMicros} micro-dollars, more than the ${pass.maxMicros} this pass allows; pay the fresh challenge` };
  }
  // Taken synchronously after the await: concurrent copies of one proof find one winner.
  if (!take(pass, seq)) return { ok: false, code: "replayed", detail: "this pass proof was already used" };
  const proofId = `${id}.${seq}`;
  const { buyerId } = pass;
  try {
    // A busy buyer draws on its tab here; any other pays with a claim in its wallet, as a
    // signed payment does (one RPC, no hold): a pass alone sets nothing aside.
    const draw = await drawOrClaim(env, { buyerId, proofId, requestId, amountMicros: quoteMicros, expiresAt: pass.expiresAt });
    return { ok: true, buyerId, proofId, ...(draw ? { draw } : {}) };
  } catch (err) {
    // Refused or failed before money moved (or unknown, and then the wallet's claim on the
    // proof id stands guard): the number may be used again.
    pass.used.delete(seq);
    throw err;
  }
}

/** Take sequence number `seq` of `pass` once; false if used, or too old to tell. */
function take(pass: Pass, seq: number): boolean {
  if (seq <= pass.high - PASS_WINDOW || pass.used.has(seq)) return false;
  pass.used.add(seq);
  if (seq > pass.high) {
    pass.high = seq;
    if (pass.used.size > 2 * PASS_WINDOW) for (const n of pass.used) if (n <= seq - PASS_WINDOW) pass.used.delete(n);
  }
  return true;
}

/** Forget every pass of this isolate (tests: a restarted isolate). */
export function forgetPasses() {
  passes.clear();
  byBuyerRoute.clear();
}
