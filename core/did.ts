// A buyer is a keypair; its public key, written as a did:key, is the payer principal
// (`source` of a credit credential). Both sides use this module: the buyer client to sign,
// the Worker to verify. The Worker turns the DID into a buyer id (B2) at once and keeps
// only that hash: the DID itself is never stored or logged.
//
// did:key (W3C CCG): "did:key:z" + base58btc(multicodec varint || public key).
//   Ed25519: multicodec 0xed  -> prefix ed 01, 32-byte key          (did:key:z6Mk…)
//   P-256:   multicodec 0x1200 -> prefix 80 24, 33-byte compressed point (did:key:zDn…)
import { fromBase58, sha256Hex, toBase58 } from "./encoding.ts";

export type KeyAlg = "Ed25519" | "P-256";
export const KEY_ALGS: readonly KeyAlg[] = ["Ed25519", "P-256"];

const ED25519_PREFIX = [0xed, 0x01];
const P256_PREFIX = [0x80, 0x24];
const MAX_DID_LENGTH = 128;

export class DidError extends Error {
  override readonly name = "DidError";
}

export interface ParsedDid {
  alg: KeyAlg;
  /** Ed25519: the 32-byte key; P-256: the 33-byte compressed point. */
  publicKey: Uint8Array;
  /** The canonical spelling, the input of the buyer id hash. */
  did: string;
}

export function didFromPublicKey(alg: KeyAlg, publicKey: Uint8Array): string {
  const prefix = alg === "Ed25519" ? ED25519_PREFIX : P256_PREFIX;
  const key = alg === "P-256" && publicKey.length === 65 ? compressP256(publicKey) : publicKey;
  if (key.length !== (alg === "Ed25519" ? 32 : 33)) throw new DidError(`bad ${alg} public key length`);
  return `did:key:z${toBase58(new Uint8Array([...prefix, ...key]))}`;
}

/** Parse and normalise a did:key; throws DidError for anything else. */
export function parseDid(input: string): ParsedDid {
  if (typeof input !== "string" || input.length > MAX_DID_LENGTH) throw new DidError("not a did:key");
  const match = /^did:key:z([1-9A-HJ-NP-Za-km-z]+)$/.exec(input);
  if (!match) throw new DidError("not a did:key");
  let bytes: Uint8Array;
  try {
    bytes = fromBase58(match[1]!);
  } catch {
    throw new DidError("did:key is not base58btc");
  }
  if (bytes[0] === ED25519_PREFIX[0] && bytes[1] === ED25519_PREFIX[1] && bytes.length === 34) {
    const publicKey = bytes.slice(2);
    return { alg: "Ed25519", publicKey, did: didFromPublicKey("Ed25519", publicKey) };
  }
  if (bytes[0] === P256_PREFIX[0] && bytes[1] === P256_PREFIX[1] && (bytes.length === 35 || bytes.length === 67)) {
    const raw = bytes.slice(2);
    const publicKey = raw.length === 65 ? compressP256(raw) : raw;
    if (publicKey[0] !== 0x02 && publicKey[0] !== 0x03) throw new DidError("bad P-256 point");
    return { alg: "P-256", publicKey, did: didFromPublicKey("P-256", publicKey) };
  }
  throw new DidError("unsupported did:key type (Ed25519 or P-256 only)");
}

/** B2: the buyer id is the hex SHA-256 of the normalised principal. */
export async function buyerIdOf(did: string): Promise<string> {
  return sha256Hex(parseDid(did).did);
}

export const BUYER_ID = /^[0-9a-f]{64}$/;

// ---- signatures ----------------------------------------------------------------------

const algorithm = (alg: KeyAlg) => (alg === "Ed25519" ? { name: "Ed25519" } : { name: "ECDSA", namedCurve: "P-256" });
const signParams = (alg: KeyAlg) => (alg === "Ed25519" ? { name: "Ed25519" } : { name: "ECDSA", hash: "SHA-256" });

export async function importVerifyKey(parsed: ParsedDid): Promise<CryptoKey> {
  const raw = parsed.alg === "P-256" ? decompressP256(parsed.publicKey) : parsed.publicKey;
  try {
    return await crypto.subtle.importKey("raw", raw, algorithm(parsed.alg), false, ["verify"]);
  } catch {
    throw new DidError("public key does not import");
  }
}

export async function verifySignature(alg: KeyAlg, key: CryptoKey, signature: Uint8Array, message: string): Promise<boolean> {
  if (signature.length !== 64) return false; // Ed25519 and P-256 (IEEE P1363 r||s) are both 64 bytes
  try {
    return await crypto.subtle.verify(signParams(alg), key, signature, new TextEncoder().encode(message));
  } catch {
    return false;
  }
}

export async function sign(alg: KeyAlg, privateKey: CryptoKey, message: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign(signParams(alg), privateKey, new TextEncoder().encode(message)));
}

export function keyAlgorithm(alg: KeyAlg) {
  return algorithm(alg);
}

// ---- P-256 point compression (WebCrypto imports only uncompressed raw points) -------

const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;

function compressP256(raw: Uint8Array): Uint8Array {
  if (raw.length !== 65 || raw[0] !== 0x04) throw new DidError("bad P-256 point");
  const out = new Uint8Array(33);
  out[0] = (raw[64]! & 1) === 1 ? 0x03 : 0x02;
  out.set(raw.subarray(1, 33), 1);
  return out;
}

function decompressP256(compressed: Uint8Array): Uint8Array {
  const x = bytesToBigInt(compressed.subarray(1));
  if (x >= P) throw new DidError("bad P-256 point");
  const rhs = (((x * x) % P) * x - 3n * x + B) % P;
  const y0 = modPow((rhs + P) % P, (P + 1n) / 4n, P);
  if ((y0 * y0) % P !== (rhs + P) % P) throw new DidError("bad P-256 point");
  const odd = compressed[0] === 0x03;
  const y = (y0 & 1n) === (odd ? 1n : 0n) ? y0 : P - y0;
  const out = new Uint8Array(65);
  out[0] = 0x04;
  out.set(bigIntToBytes(x, 32), 1);
  out.set(bigIntToBytes(y, 32), 33);
  return out;
}

function modPow(base: bigint, exp: bigint, mod: bigint): bigint {
  let result = 1n;
  let b = base % mod;
  let e = exp;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % mod;
    b = (b * b) % mod;
    e >>= 1n;
  }
  return result;
}

function bytesToBigInt(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function bigIntToBytes(n: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}
