// mppx on the server: one Mppx instance per isolate (per env), built from mppx's core
// entry (no viem in the bundle unless the tempo method is switched on). It issues
// HMAC-bound challenges (MPP_SECRET_KEY), scoped to a route, expiring after
// CHALLENGE_TTL_MS, and runs each method's verification. The `credit` method checks the
// buyer's signature, hashes the buyer's DID into the buyer id at once, and claims + debits
// in the buyer's wallet object in one RPC.
import { Challenge, Errors, Method, Receipt } from "mppx";
import { Mppx } from "mppx/server/core";
import type { Env } from "../../core/env.ts";
import { fromBase64Url, sha256, sha256Hex, toBase64Url } from "../../core/encoding.ts";
import { DidError, importVerifyKey, parseDid, verifySignature } from "../../core/did.ts";
import { PaymentRefusal } from "./errors.ts";
import { CREDIT_METHOD, CURRENCY, credit, creditMessage } from "../../core/credit-method.ts";
import { proofStore } from "./atomic-store.ts";
import { creditChallenge } from "./credit-challenge.ts";
import { claimInWallet, drawOrClaim, issuingEpoch, notePaid, releaseProof, takeProof, type Draw } from "./tabs.ts";

/** How long a challenge can be answered. */
export const CHALLENGE_TTL_MS = 5 * 60_000;
export const TEMPO_METHOD = "tempo";


/** What a method's verification hands back to `charge` (inside an mppx Receipt). */
export interface VerifiedPayment {
  buyerId: string;
  amountMicros: number;
  method: string;
  proofId: string;
  /** Drawn on the buyer's tab in this isolate (tabs.ts), not claimed in the wallet. */
  draw?: Draw;
}

// ---- credit: verify the signature, hash the principal, claim + debit ------------------

/**
 * What a credential's source resolves to, by the SHA-256 of the source as sent (never by
 * the DID itself, B2): parsing the did:key (base58), hashing it into the buyer id and
 * importing the key (a P-256 key costs a square root) happen once per buyer per isolate,
 * not per request. Isolate memory only.
 */
interface Principal {
  parsed: ReturnType<typeof parseDid>;
  buyerId: string;
  key: CryptoKey;
}
const principals = new Map<string, Principal>();
const MAX_CACHED_PRINCIPALS = 1024;

async function principalOf(source: string): Promise<Principal> {
  const lookup = await sha256Hex(source);
  const cached = principals.get(lookup);
  if (cached) return cached;
  let parsed: ReturnType<typeof parseDid>;
  try {
    parsed = parseDid(source);
  } catch (err) {
    throw new PaymentRefusal("bad_signature", err instanceof DidError ? `source: ${err.message}` : "source is not a did:key");
  }
  // B2: from here on only the hash of the principal exists (the same hash when the source is canonical).
  const buyerId = parsed.did === source ? lookup : await sha256Hex(parsed.did);
  let key: CryptoKey;
  try {
    key = await importVerifyKey(parsed);
  } catch {
    throw new PaymentRefusal("bad_signature", "source is not a usable public key");
  }
  if (principals.size >= MAX_CACHED_PRINCIPALS) principals.delete(principals.keys().next().value!);
  const principal = { parsed, buyerId, key };
  principals.set(lookup, principal);
  return principal;
}

/**
 * The `credit` method's verification, after charge() checked the challenge (its id, expiry,
 * route scope and payload shape): the buyer's signature over the challenge id, the
 * principal hashed at once (B2), then the money: a proof bound to a router epoch (all
 * challenges issued since tabs) is taken here once and drawn on the buyer's tab, or claimed
 * + debited in the buyer's wallet in one RPC for a buyer without one (tabs.ts).
 */
export async function verifyCredit(env: Env, credential: { challenge: Challenge.Challenge; payload: { signature: string }; source?: string }, requestId = ""): Promise<VerifiedPayment> {
  const { challenge } = credential;
  if (!credential.source) throw new PaymentRefusal("bad_signature", "a credit credential needs its source: the buyer's did:key");
  const { parsed, buyerId, key } = await principalOf(credential.source);
  let signature: Uint8Array;
  try {
    signature = fromBase64Url(credential.payload.signature);
  } catch {
    throw new PaymentRefusal("bad_signature", "signature is not base64url");
  }
  if (!(await verifySignature(parsed.alg, key, signature, creditMessage(challenge)))) {
    throw new PaymentRefusal("bad_signature", "the signature does not verify against the credential's source");
  }
  const amountMicros = Number(challenge.request.amount);
  const proofId = challenge.id;
  const expiresAt = Date.parse(challenge.expires ?? "");
  const epoch = epochOf(challenge);
  if (epoch !== undefined) {
    const taken = takeProof(epoch, proofId);
    if (taken === "elsewhere") throw new PaymentRefusal("challenge_elsewhere", "this challenge can only be paid at the instance that issued it, which no longer holds it; pay the fresh one");
    if (taken === "replayed") throw new PaymentRefusal("replayed", "this payment credential was already used");
    let kept = false;
    try {
      const draw = await drawOrClaim(env, { buyerId, proofId, requestId, amountMicros, expiresAt });
      kept = true;
      return { buyerId, amountMicros, method: CREDIT_METHOD, proofId, ...(draw ? { draw } : {}) };
    } finally {
      // Refused before any money moved (or unknown, and then the wallet's claim stands guard):
      // the proof may be paid again, as an unbound one may.
      if (!kept) releaseProof(epoch, proofId);
    }
  }
  // A 402's challenge (or one issued before epochs): the wallet's claim is its single use.
  // It counts toward the buyer's rate: a busy buyer's next challenges draw on a tab.
  notePaid(buyerId);
  await claimInWallet(env, { buyerId, proofId, amountMicros, expiresAt });
  return { buyerId, amountMicros, method: CREDIT_METHOD, proofId };
}

/** The router epoch a credit challenge is bound to (`t` in its opaque data), if any. */
function epochOf(challenge: Challenge.Challenge): string | undefined {
  const t = (challenge.meta as Record<string, unknown> | undefined)?.t;
  return typeof t === "string" ? t : undefined;
}

/** `credit` registered with mppx (its schemas, and the method list a 402 offers); charge() verifies it itself (verifyCredit). */
function creditServer(env: Env) {
  return Method.toServer(credit, {
    async verify({ credential }) {
      const verified = await verifyCredit(env, credential);
      // mppx's Receipt is a loose object: the verified payment rides along.
      return { ...verified, reference: verified.proofId, status: "success", timestamp: new Date().toISOString() } as Receipt.Receipt;
    },
  });
}

// ---- tempo (production only): USDC per request, replay markers in the proof store ----

export const tempoEnabled = (env: Env) => (env.TEMPO_RECIPIENT ?? "") !== "" && (env.TEMPO_CURRENCY ?? "") !== "";

async function tempoServer(env: Env) {
  // Imported only when switched on: it brings viem into the isolate.
  const { tempo } = await import("mppx/server");
  return tempo.charge({
    recipient: env.TEMPO_RECIPIENT as `0x${string}`,
    currency: env.TEMPO_CURRENCY as `0x${string}`,
    decimals: 6,
    testnet: env.TEMPO_TESTNET === "1",
    store: proofStore(env),
    storeKeyPrefix: "tempo:",
  });
}

// ---- the instance -------------------------------------------------------------------

type ChallengeFn = (options: Record<string, unknown>) => Promise<Challenge.Challenge>;

/** The part of an mppx server instance cn2 uses. */
interface MppxServer {
  challenge: Record<string, Record<string, ChallengeFn>>;
  verifyCredential(credential: string, options: { scope: string }): Promise<Receipt.Receipt>;
}

export interface Payments {
  mppx: MppxServer;
  secretKey: string;
  realm: string;
  /** Every enabled method by `${name}/${intent}`. */
  methods: Map<string, Method.AnyServer>;
}

const instances = new WeakMap<object, Promise<Payments>>();

export class PaymentsUnconfigured extends Error {
  override readonly name = "PaymentsUnconfigured";
}

export function payments(env: Env): Promise<Payments> {
  let instance = instances.get(env);
  if (!instance) {
    instance = build(env);
    instances.set(env, instance);
    instance.catch(() => instances.delete(env));
  }
  return instance;
}

async function build(env: Env): Promise<Payments> {
  const secretKey = env.MPP_SECRET_KEY ?? "";
  if (new TextEncoder().encode(secretKey).byteLength < 32) throw new PaymentsUnconfigured("MPP_SECRET_KEY must be set to at least 32 bytes (openssl rand -base64 32)");
  const realm = env.MPP_REALM || "cn2";
  const methods: Method.AnyServer[] = [creditServer(env)];
  if (tempoEnabled(env)) methods.push(await tempoServer(env));
  const mppx = Mppx.create({ methods, secretKey, realm }) as unknown as MppxServer;
  return { mppx, secretKey, realm, methods: new Map(methods.map((m) => [`${m.name}/${m.intent}`, m])) };
}

/**
 * What a challenge is scoped to: a hash of the route ("POST /openai/v1/chat/completions"),
 * never the route itself. The route carries the request path, which a buyer can make as
 * long as a URL may be: repeated in every challenge it would grow the 402's
 * WWW-Authenticate (and the next-challenge header) with it. 46 characters whatever the path.
 */
export async function routeScope(route: string): Promise<string> {
  let scope = scopes.get(route);
  if (scope === undefined) {
    scope = `r1.${toBase64Url(await sha256(route))}`;
    // Routes repeat (a few per provider): hash each once per isolate, bounded.
    if (scopes.size >= 256) scopes.clear();
    scopes.set(route, scope);
  }
  return scope;
}
const scopes = new Map<string, string>();

/**
 * Fresh challenges (one per enabled method, or the `credit` one only) for `route` at
 * `amountMicros`. `bound`: the credit one is bound to this isolate's epoch (tabs.ts), for
 * a paid answer's next challenge, whose call usually comes back over the same connection;
 * a 402's are not, so paying one works at any isolate (claimed in the wallet).
 */
export async function issueChallenges(env: Env, quote: { amountMicros: number; route: string; description?: string; expires?: Date; creditOnly?: boolean; bound?: boolean }): Promise<Challenge.Challenge[]> {
  if (!Number.isSafeInteger(quote.amountMicros) || quote.amountMicros <= 0) throw new RangeError("a quote is a positive whole number of micro-dollars");
  const p = await payments(env);
  const expires = (quote.expires ?? new Date(Date.now() + CHALLENGE_TTL_MS)).toISOString();
  // A nonce makes every challenge (and so every proof id) unique, even for equal quotes.
  const meta = { n: crypto.randomUUID().replaceAll("-", "") };
  const common = { scope: await routeScope(quote.route), meta, expires, ...(quote.description ? { description: quote.description } : {}) };
  // credit: the same challenge mppx would issue, made without its generic path (credit-challenge.ts).
  const out = [await creditChallenge(p.secretKey, p.realm, { amountMicros: quote.amountMicros, scope: common.scope, expires, nonce: meta.n, description: quote.description, ...(quote.bound ? { epoch: issuingEpoch() } : {}) })];
  if (!quote.creditOnly && p.methods.has(`${TEMPO_METHOD}/charge`)) {
    out.push(await p.mppx.challenge[TEMPO_METHOD]!.charge!({ ...common, amount: microsToDecimal(quote.amountMicros) }));
  }
  return out;
}

/** 1234567 -> "1.234567": tempo takes a decimal amount and 6 decimals (USDC). */
export const microsToDecimal = (micros: number) => `${Math.floor(micros / 1_000_000)}.${String(micros % 1_000_000).padStart(6, "0")}`;

export { Errors };
