// The buyer's key and what it signs: key generation and serialisation, the `credit`
// client method, signed account calls. The paying fetch that wraps mppx's client lives in
// index.ts, which re-exports all of this (the package's one entry point).
import { Credential, Method } from "mppx";
import { buyerIdOf, didFromPublicKey, keyAlgorithm, KEY_ALGS, sign, type KeyAlg } from "../core/did.ts";
import { fromBase64Url, sha256Hex, toBase64Url } from "../core/encoding.ts";
import { ACCOUNT_HEADERS, accountMessage, credit, creditMessage } from "../core/credit-method.ts";

export type { KeyAlg };
export { buyerIdOf };

/** What a buyer keeps (secret: it spends the buyer's credit). */
export interface BuyerKeyFile {
  version: 1;
  alg: KeyAlg;
  /** The public identity, derivable from the key; kept for readability. */
  did: string;
  privateJwk: JsonWebKey;
}

export interface BuyerKey {
  alg: KeyAlg;
  did: string;
  /** SHA-256 of the DID: what cn2 knows the buyer by (top-ups name it). */
  buyerId: string;
  privateKey: CryptoKey;
  file: BuyerKeyFile;
}

export type PrivateKeyInput = string | BuyerKeyFile | BuyerKey;

export async function generateBuyerKey(alg: KeyAlg = "Ed25519"): Promise<BuyerKey> {
  const pair = (await crypto.subtle.generateKey(keyAlgorithm(alg), true, ["sign", "verify"])) as CryptoKeyPair;
  const privateJwk = (await crypto.subtle.exportKey("jwk", pair.privateKey)) as JsonWebKey;
  return loadBuyerKey({ version: 1, alg, did: didOfJwk(alg, privateJwk), privateJwk });
}

export function serializeBuyerKey(key: BuyerKey | BuyerKeyFile): string {
  const file = "file" in key ? key.file : key;
  return JSON.stringify(file, null, 2);
}

export async function loadBuyerKey(input: PrivateKeyInput): Promise<BuyerKey> {
  if (typeof input === "object" && "privateKey" in input) return input;
  const file = typeof input === "string" ? (JSON.parse(input) as BuyerKeyFile) : input;
  if (file?.version !== 1 || !KEY_ALGS.includes(file.alg) || typeof file.privateJwk !== "object") {
    throw new Error("not a cn2 buyer key (expected {version: 1, alg, did, privateJwk})");
  }
  const did = didOfJwk(file.alg, file.privateJwk);
  if (file.did && file.did !== did) throw new Error("buyer key file: did does not match the key");
  const privateKey = await crypto.subtle.importKey("jwk", file.privateJwk, keyAlgorithm(file.alg), false, ["sign"]);
  return { alg: file.alg, did, buyerId: await buyerIdOf(did), privateKey, file: { ...file, did } };
}

function didOfJwk(alg: KeyAlg, jwk: JsonWebKey): string {
  if (!jwk.x || (alg === "P-256" && !jwk.y)) throw new Error("buyer key: JWK has no public part");
  const pub = alg === "Ed25519" ? fromBase64Url(jwk.x) : new Uint8Array([0x04, ...fromBase64Url(jwk.x), ...fromBase64Url(jwk.y!)]);
  return didFromPublicKey(alg, pub);
}

/** mppx client method: answers `credit` challenges with a signature by `key`. */
export function creditClient(key: BuyerKey | Promise<BuyerKey>): Method.Client<typeof credit> {
  return Method.toClient(credit, {
    async createCredential({ challenge }) {
      const k = await key;
      const signature = toBase64Url(await sign(k.alg, k.privateKey, creditMessage(challenge)));
      return Credential.serialize({ challenge, payload: { signature }, source: k.did });
    },
  });
}

// ---- credit account calls (no account: requests are signed with the key) -------------

export interface WalletView {
  buyerId: string;
  balanceMicros: number;
  dailyCapMicros: number | null;
  spentTodayMicros: number;
  /** Credit set aside for open tabs (a busy buyer's payments drawn in cn2's memory): what they do not spend comes back when they close. */
  heldMicros: number;
  history: { at: number; kind: string; amountMicros: number; ref: string; balanceMicros: number }[];
  spend: { day: string; spentMicros: number; refundedMicros: number; requests: number }[];
}

interface CallOptions {
  baseUrl: string;
  fetch?: typeof globalThis.fetch;
}

export class Cn2BuyerError extends Error {
  override readonly name = "Cn2BuyerError";
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call<T>(opts: CallOptions, method: string, path: string, body: unknown, key?: BuyerKey): Promise<T> {
  const text = body === undefined ? "" : JSON.stringify(body);
  const headers: Record<string, string> = body === undefined ? {} : { "content-type": "application/json" };
  if (key) {
    const time = String(Math.floor(Date.now() / 1000));
    const message = accountMessage({ method, pathAndQuery: path, time, bodySha256: await sha256Hex(text) });
    headers[ACCOUNT_HEADERS.did] = key.did;
    headers[ACCOUNT_HEADERS.time] = time;
    headers[ACCOUNT_HEADERS.signature] = toBase64Url(await sign(key.alg, key.privateKey, message));
  }
  const res = await (opts.fetch ?? globalThis.fetch)(new URL(path, opts.baseUrl), { method, headers, ...(body === undefined ? {} : { body: text }) });
  const data = (await res.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
  if (!res.ok) throw new Cn2BuyerError(res.status, data?.error?.code ?? "http_error", data?.error?.message ?? `HTTP ${res.status}`);
  return data as T;
}

/** Balance, daily cap, today's spend, recent history and tracked spend per day. */
export async function getBalance(opts: CallOptions & { privateKey: PrivateKeyInput }): Promise<WalletView> {
  return call(opts, "GET", "/api/credit/balance", undefined, await loadBuyerKey(opts.privateKey));
}

/** B5: cap what this key may spend per UTC day (null: no cap). */
export async function setDailyBudget(opts: CallOptions & { privateKey: PrivateKeyInput }, dailyCapMicros: number | null) {
  return call<{ buyerId: string; dailyCapMicros: number | null }>(opts, "PUT", "/api/credit/budget", { dailyCapMicros }, await loadBuyerKey(opts.privateKey));
}

/** Local development only (DEV_FAUCET=1): free credit. */
export async function requestFaucet(opts: CallOptions & { buyerId: string; amountMicros: number }) {
  return call<{ buyerId: string; creditedMicros: number; balanceMicros: number }>(opts, "POST", "/api/credit/faucet", { buyerId: opts.buyerId, amountMicros: opts.amountMicros });
}

/** A Stripe Checkout page that tops up this buyer's credit once paid. */
export async function startTopUp(opts: CallOptions & { buyerId: string; amountMicros: number; successUrl?: string; cancelUrl?: string }) {
  const { baseUrl: _b, fetch: _f, ...body } = opts;
  return call<{ sessionId: string; url: string; amountMicros: number }>(opts, "POST", "/api/credit/topup", body);
}

/** "1.25" USD -> 1250000 micro-dollars (exact; at most 6 decimals). */
export function usdToMicros(usd: string): number {
  const m = /^(\d{1,9})(?:\.(\d{1,6}))?$/.exec(usd.trim());
  if (!m) throw new Error(`not a dollar amount: "${usd}"`);
  return Number(m[1]) * 1_000_000 + Number((m[2] ?? "").padEnd(6, "0"));
}

export const microsToUsd = (micros: number) => `${Math.floor(micros / 1_000_000)}.${String(micros % 1_000_000).padStart(6, "0")}`;
