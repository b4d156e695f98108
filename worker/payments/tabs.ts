// Tabs (docs/payments.md, "Tabs"): a busy buyer's payments drawn in this isolate's memory.
//
// Per paid request the wallet call (an RPC to the buyer's object and its commit) was the
// largest cost of the paid path (docs/bench.md, fourth pass). A buyer making more than
// TAB_BUSY_DRAWS paid requests within RATE_WINDOW_MS here instead gets a tab: credit its wallet sets
// aside once (BuyerWallet.openTab, durable before any draw), drawn request by request in
// memory. What keeps the books exact without a call per request:
//
// - Single use. The next challenge a paid answer carries is bound to one of this isolate's
//   epochs (`t` in the HMAC-bound opaque data), and a proof bound to an epoch is taken only
//   here, where the epoch's set of used proofs lives. A proof bound to an epoch this
//   isolate does not hold (another isolate's, or one that ended) is refused with a fresh
//   challenge, unbound: no money moves. Epochs rotate (time, size), so the sets stay
//   bounded. A 402's challenges are unbound and claimed in the wallet, anywhere.
// - Durability. A draw's money left the wallet when the tab was granted. That it was spent
//   (not returned) is made durable by the serving key's own commit, which records the draw
//   with its earning before the answer leaves (H.tab, objects/seller-key/write-buffer.ts).
// - Settlement. The router closes each tab with the full list of its draws (refunds
//   included): the wallet records one claim per paid request and takes back what was not
//   spent. A tab whose isolate ended before closing it is settled by the wallet on the
//   draws the keys report (TAB_SETTLE_GRACE_MS after it expired).
//
// Buyers below the threshold keep the per-request claim in their wallet (claimInWallet, drawOrClaim).
import { waitUntil } from "cloudflare:workers";
import type { Env } from "../../core/env.ts";
import { CREDIT_METHOD } from "../../core/credit-method.ts";
import { walletStub } from "../../objects/buyer-wallet/stub.ts";
import type { CloseTabRequest, TabDraw } from "../../schema/wallet.ts";
import { PaymentRefusal, WALLET_TO_PAYMENT } from "./errors.ts";

/** A buyer with at least this many paid requests here within RATE_WINDOW_MS draws on a tab. */
export const TAB_BUSY_DRAWS = 4;
/** The rate's window: 4 in 2 s is a buyer at 2 requests a second. */
const RATE_WINDOW_MS = 2_000;
/** A tab is drawn on this long at most, then closed once its requests are done. */
export const TAB_MAX_MS = 10_000;
/**
 * A tab holds about this long's worth of the buyer's recent rate... Each renewal is a wallet
 * call and commit: at one second's worth, 50 buyers renewed 50 times a second (docs/bench.md,
 * seventh pass).
 */
const TAB_SPAN_MS = 5_000;
/** ...within these bounds, in requests. */
const TAB_MIN_DRAWS = 8;
const TAB_MAX_DRAWS = 1024;
/** An epoch issues challenges this long; its proofs are taken one more epoch after it. */
const EPOCH_MS = 5 * 60_000;
/** An epoch holding this many used proofs gives way early (memory bound: 2 epochs' worth). */
const EPOCH_MAX_USED = 100_000;
/** Buyers tracked per isolate (rates, tabs); idle ones go first past this. */
const MAX_BUYERS = 10_000;

interface Epoch {
  id: string;
  startedAt: number;
  used: Set<string>;
}

/** The isolate's epochs: the one issuing, and the one before it. */
let current: Epoch = newEpoch(Date.now());
let previous: Epoch | null = null;

function newEpoch(now: number): Epoch {
  return { id: crypto.randomUUID().replaceAll("-", "").slice(0, 16), startedAt: now, used: new Set() };
}

/** The epoch new challenges are bound to (rotating it when due). */
export function issuingEpoch(now = Date.now()): string {
  if (now - current.startedAt >= EPOCH_MS || current.used.size >= EPOCH_MAX_USED) {
    previous = current;
    current = newEpoch(now);
  }
  return current.id;
}

/**
 * Take a proof bound to epoch `epochId` for single use: "taken", "replayed", or "elsewhere"
 * (not an epoch of this isolate: another isolate's, or one that has ended). Synchronous:
 * concurrent copies of one credential find exactly one winner.
 */
export function takeProof(epochId: string, proofId: string): "taken" | "replayed" | "elsewhere" {
  issuingEpoch();
  const epoch = epochId === current.id ? current : epochId === previous?.id ? previous : null;
  if (!epoch) return "elsewhere";
  if (epoch.used.has(proofId)) return "replayed";
  epoch.used.add(proofId);
  return "taken";
}

/** A proof whose payment was refused before any money moved (balance, budget): it may be paid again. */
export function releaseProof(epochId: string, proofId: string) {
  (epochId === current.id ? current : epochId === previous?.id ? previous : null)?.used.delete(proofId);
}

interface Tab {
  id: string;
  buyerId: string;
  granted: number;
  /** Drawn and not returned. */
  drawn: number;
  draws: TabDraw[];
  inFlight: number;
  expiresAt: number;
  /** No more draws: closed once inFlight is 0. */
  retired: boolean;
  closing: boolean;
}

/** A draw on a tab, as the payment carries it (proxy.ts settles it through finishDraw/returnDraw). */
export interface Draw {
  tab: Tab;
  draw: TabDraw;
  done: boolean;
}

interface Buyer {
  /** Paid requests here in the current window (from `windowStart`) and the one before: the rate. */
  windowStart: number;
  count: number;
  lastCount: number;
  tab: Tab | null;
  opening: Promise<void> | null;
}

const buyers = new Map<string, Buyer>();

function buyerState(buyerId: string): Buyer {
  let b = buyers.get(buyerId);
  if (b) {
    buyers.delete(buyerId); // most recent last: the first entries are the idlest
    buyers.set(buyerId, b);
    return b;
  }
  if (buyers.size >= MAX_BUYERS) {
    for (const [id, old] of buyers) {
      if (old.tab === null && old.opening === null) {
        buyers.delete(id);
        break;
      }
    }
  }
  b = { windowStart: 0, count: 0, lastCount: 0, tab: null, opening: null };
  buyers.set(buyerId, b);
  return b;
}

/** Paid requests of this buyer here in about the last RATE_WINDOW_MS (a sliding window of two fixed ones). */
function rate(b: Buyer, now: number): number {
  const elapsed = now - b.windowStart;
  if (elapsed >= RATE_WINDOW_MS) {
    b.lastCount = elapsed < 2 * RATE_WINDOW_MS ? b.count : 0;
    b.count = 0;
    b.windowStart = now - (elapsed % RATE_WINDOW_MS);
  }
  return b.count + Math.floor(b.lastCount * (1 - (now - b.windowStart) / RATE_WINDOW_MS));
}

/** Count one paid request of this buyer here: its rate, this one included. */
function noteRequest(b: Buyer, now: number): number {
  const before = rate(b, now);
  b.count++;
  return before + 1;
}

/** A payment claimed in the wallet (a 402's challenge): it counts toward the buyer's rate here. */
export function notePaid(buyerId: string) {
  noteRequest(buyerState(buyerId), Date.now());
}

/**
 * Draw `amountMicros` for proof `proofId` on the buyer's tab here, opening (or renewing) it
 * when needed; null when this buyer is not busy enough for a tab (claim per request).
 * Throws a PaymentRefusal when the wallet will not set enough aside (balance, daily budget).
 */
export async function drawOnTab(
  env: Env,
  req: { buyerId: string; proofId: string; requestId: string; amountMicros: number; expiresAt: number },
): Promise<Draw | null> {
  const now = Date.now();
  const b = buyerState(req.buyerId);
  const rate = noteRequest(b, now);
  if (b.tab === null && b.opening === null && rate < TAB_BUSY_DRAWS) return null;
  for (let attempt = 0; attempt < 3; attempt++) {
    const tab = b.tab;
    // Bounded in draws too (prices differ by route): the close carries every draw.
    if (tab && !tab.retired && Date.now() < tab.expiresAt && tab.granted - tab.drawn >= req.amountMicros && tab.draws.length < TAB_MAX_DRAWS) {
      const draw: TabDraw = { proofId: req.proofId, requestId: req.requestId, amountMicros: req.amountMicros, at: Date.now(), expiresAt: req.expiresAt };
      tab.drawn += req.amountMicros;
      tab.draws.push(draw);
      tab.inFlight++;
      return { tab, draw, done: false };
    }
    if (b.opening === null) b.opening = renew(env, req.buyerId, b, req.amountMicros, rate).finally(() => (b.opening = null));
    await b.opening;
  }
  // Others drew the fresh tab dry three times over: this one claims on its own.
  return null;
}

/** One payment claimed in the buyer's wallet (one RPC and commit, nothing held); throws a PaymentRefusal when refused. */
export async function claimInWallet(env: Env, req: { buyerId: string; proofId: string; amountMicros: number; expiresAt: number }): Promise<void> {
  const result = await walletStub(env, req.buyerId).claimAndDebit({ buyerId: req.buyerId, proofId: req.proofId, amountMicros: req.amountMicros, expiresAt: req.expiresAt, method: CREDIT_METHOD });
  if (!result.ok) throw new PaymentRefusal(WALLET_TO_PAYMENT[result.code], result.message);
}

/**
 * Pay one request: a draw on the buyer's tab here when it is busy (drawOnTab), else a claim
 * in its wallet. The draw, or null when it was claimed; throws a PaymentRefusal when refused.
 */
export async function drawOrClaim(
  env: Env,
  req: { buyerId: string; proofId: string; requestId: string; amountMicros: number; expiresAt: number },
): Promise<Draw | null> {
  const draw = await drawOnTab(env, req);
  if (draw === null) await claimInWallet(env, req);
  return draw;
}

/** Retire the buyer's tab (closed once its requests are done) and open the next one. */
async function renew(env: Env, buyerId: string, b: Buyer, amountMicros: number, rate: number): Promise<void> {
  const old = b.tab;
  let close: CloseTabRequest | undefined;
  if (old) {
    old.retired = true;
    // Done with: closed by the same call that opens the next (one RPC, not two).
    if (old.inFlight === 0 && !old.closing) {
      old.closing = true;
      close = { tabId: old.id, draws: old.draws };
    }
  }
  const draws = Math.min(TAB_MAX_DRAWS, Math.max(TAB_MIN_DRAWS, Math.ceil((rate * TAB_SPAN_MS) / RATE_WINDOW_MS)));
  const tab: Tab = {
    id: crypto.randomUUID(), buyerId, granted: 0, drawn: 0, draws: [], inFlight: 0,
    expiresAt: Date.now() + TAB_MAX_MS, retired: false, closing: false,
  };
  const result = await walletStub(env, buyerId).openTab({
    buyerId, tabId: tab.id, wantMicros: amountMicros * draws, minMicros: amountMicros, expiresAt: tab.expiresAt, ...(close ? { close } : {}),
  }).catch((err: unknown) => err as Error);
  if (result instanceof Error || !result.ok) {
    b.tab = null;
    // Failed or refused, the call may or may not have closed the old tab: closeTab is
    // idempotent, so it is closed on its own.
    if (old && close) {
      old.closing = false;
      closeLater(env, old);
    }
    if (result instanceof Error) throw result;
    throw new PaymentRefusal(WALLET_TO_PAYMENT[result.code], result.message);
  }
  tab.granted = result.value.grantedMicros;
  b.tab = tab;
  // The tab's end: once past its time and its requests are done (waitUntil keeps the
  // isolate at it after the response; TAB_MAX_MS is within its limits).
  waitUntil(new Promise<void>((done) => setTimeout(done, TAB_MAX_MS)).then(() => {
    if (b.tab === tab) b.tab = null;
    tab.retired = true;
    if (tab.inFlight === 0) return close1(env, tab);
  }));
}

/** The request paid by `d` is done and charged (served, or the charge stands). */
export function finishDraw(env: Env, d: Draw) {
  if (d.done) return;
  d.done = true;
  settle(env, d.tab);
}

/** B6: the request paid by `d` is refunded: its amount goes back to the tab, once. */
export function returnDraw(env: Env, d: Draw, reason: string): boolean {
  if (d.done) return false;
  d.done = true;
  d.draw.refundReason = reason.slice(0, 64);
  d.tab.drawn -= d.draw.amountMicros;
  settle(env, d.tab);
  return true;
}

function settle(env: Env, tab: Tab) {
  tab.inFlight--;
  if (tab.retired && tab.inFlight === 0) closeLater(env, tab);
}

function closeLater(env: Env, tab: Tab) {
  waitUntil(close1(env, tab));
}

/** Close a retired tab with every draw it made; retried a few times, then left to the wallet's settlement on the keys' reports. */
async function close1(env: Env, tab: Tab): Promise<void> {
  if (tab.closing) return;
  tab.closing = true;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const result = await walletStub(env, tab.buyerId).closeTab({ tabId: tab.id, draws: tab.draws });
      if (result.ok || result.code === "unknown_tab") return;
    } catch {
      // the wallet restarting: try again
    }
  }
  console.error(JSON.stringify({ evt: "tab_close_failed", tabId: tab.id }));
}

/**
 * Retire this buyer's tab here, if it has one: closed now when none of its requests is
 * under way (else when the last one is done). Disputes call it so the payment disputed is
 * claimed in the wallet first.
 */
export async function retireTab(env: Env, buyerId: string): Promise<void> {
  const b = buyers.get(buyerId);
  if (b) await retire(env, b);
}

async function retire(env: Env, b: Buyer): Promise<void> {
  const tab = b.tab;
  if (!tab) return;
  b.tab = null;
  tab.retired = true;
  if (tab.inFlight === 0) await close1(env, tab);
}

/**
 * Retire every tab of this isolate now: each closes once its requests are done (those
 * with none close before this resolves). For an orderly stop, and for tests that read the
 * wallet's books without waiting TAB_MAX_MS.
 */
export async function retireTabs(env: Env): Promise<void> {
  await Promise.all([...buyers.values()].map((b) => retire(env, b)));
}
