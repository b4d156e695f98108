// The key vault (S2): a seller's credential is sealed on the seller's side (browser or
// CLI) to the vault's public key and opened only by the key's Durable Object.
//
//   shared = ECDH-P256(ephemeral private, vault public)       fresh ephemeral per envelope
//   aesKey = HKDF-SHA-256(shared, salt, "cn2 vault v1 " + kid) -> AES-256-GCM
//   ct     = AES-GCM(aesKey, iv, plaintext, AAD = "cn2-vault-v1|seller|keyId|kid")
//
// The AAD binds a ciphertext to one seller and one key id, so an envelope copied to
// another key or seller does not open. WebCrypto only: the same module runs in workerd,
// in a browser and in the Node CLI. Nothing thrown from here carries plaintext, a private
// JWK or derived secrets: messages are fixed strings and original errors are dropped.
import type { Envelope } from "../schema/wire.ts";

export interface VaultPublicKey { kid: string; jwk: JsonWebKey }
export interface VaultPrivateKey { kid: string; jwk: JsonWebKey }
/** What an envelope is bound to (its AAD). */
export interface KeyBinding { sellerId: string; keyId: string }

export type VaultErrorCode = "vault_key_unknown" | "decrypt_failed" | "vault_misconfigured";

export class VaultError extends Error {
  code: VaultErrorCode;
  constructor(code: VaultErrorCode, message: string) {
    super(message);
    this.name = "VaultError";
    this.code = code;
  }
}

/** Kid shape accepted in envelopes (EnvelopeSchema) and in the secret. */
const KID_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** A P-256 coordinate or scalar: 32 bytes, base64url without padding. */
const P256_FIELD_RE = /^[A-Za-z0-9_-]{43}$/;
/** Keeps the envelope's ct under EnvelopeSchema's 8192 base64url characters. */
export const MAX_CREDENTIAL_BYTES = 4096;

const ECDH = { name: "ECDH", namedCurve: "P-256" } as const;
const VERSION = 1 as const;

// ---------------------------------------------------------------------------------
// Keys

/** A new vault key pair (for `.dev.vars`, tests, or `wrangler secret put`). */
export async function generateVaultKey(kid: string): Promise<{ publicKey: VaultPublicKey; privateKey: VaultPrivateKey }> {
  if (!KID_RE.test(kid)) throw new TypeError("vault kid must be 1-64 letters, digits, _ or -");
  const pair = (await crypto.subtle.generateKey(ECDH, true, ["deriveBits"])) as CryptoKeyPair;
  const jwk = (await crypto.subtle.exportKey("jwk", pair.privateKey)) as JsonWebKey;
  const privateKey: VaultPrivateKey = { kid, jwk: { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y, d: jwk.d } };
  return { publicKey: publicKeysOf([privateKey])[0]!, privateKey };
}

/**
 * Parse the VAULT_PRIVATE_KEYS secret: a JSON array of {kid, jwk}, newest first. Checks
 * shape synchronously; errors name the entry and the rule, never the secret's content.
 */
export function parseVaultPrivateKeys(secret: string): VaultPrivateKey[] {
  const fail = (why: string): never => {
    throw new VaultError("vault_misconfigured", `VAULT_PRIVATE_KEYS ${why}`);
  };
  let parsed: unknown;
  try {
    parsed = JSON.parse(secret);
  } catch {
    // The SyntaxError message quotes the input: drop it.
    fail("is not valid JSON");
  }
  if (!Array.isArray(parsed)) return fail("must be a JSON array of {kid, jwk}, newest first");
  if (parsed.length === 0) fail("holds no key");
  const seen = new Set<string>();
  return parsed.map((entry: unknown, i): VaultPrivateKey => {
    const at = `entry ${i}`;
    if (!isRecord(entry)) return fail(`${at} must be an object {kid, jwk}`);
    const { kid, jwk } = entry;
    if (typeof kid !== "string" || !KID_RE.test(kid)) return fail(`${at}: kid must be 1-64 letters, digits, _ or -`);
    if (seen.has(kid)) fail(`${at}: duplicate kid`);
    seen.add(kid);
    if (!isRecord(jwk) || jwk.kty !== "EC" || jwk.crv !== "P-256") return fail(`${at}: jwk must be an EC P-256 key`);
    for (const field of ["x", "y", "d"] as const) {
      const value = jwk[field];
      if (typeof value !== "string" || !P256_FIELD_RE.test(value)) fail(`${at}: jwk.${field} missing or malformed (private key required)`);
    }
    return { kid, jwk: { kty: "EC", crv: "P-256", x: jwk.x as string, y: jwk.y as string, d: jwk.d as string } };
  });
}

/** The public halves, same order and kids: only kty/crv/x/y survive (no `d`, no extras). */
export function publicKeysOf(privateKeys: VaultPrivateKey[]): VaultPublicKey[] {
  return privateKeys.map(({ kid, jwk }) => ({ kid, jwk: { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y } }));
}

// ---------------------------------------------------------------------------------
// Seal and open

/** Seal a credential to the vault key (seller side). */
export async function encryptCredential(plaintext: string, publicKey: VaultPublicKey, binding: KeyBinding): Promise<Envelope> {
  const { kid } = publicKey;
  if (!KID_RE.test(kid)) throw new TypeError("vault public key has a malformed kid");
  const aad = additionalData(binding, kid);
  const data = new TextEncoder().encode(plaintext);
  if (data.byteLength > MAX_CREDENTIAL_BYTES) throw new RangeError(`credential longer than ${MAX_CREDENTIAL_BYTES} bytes`);

  let vaultKey: CryptoKey;
  try {
    vaultKey = await crypto.subtle.importKey("jwk", publicJwk(publicKey.jwk), ECDH, false, []);
  } catch {
    throw new TypeError("vault public key is not a valid EC P-256 key");
  }
  const ephemeral = (await crypto.subtle.generateKey(ECDH, true, ["deriveBits"])) as CryptoKeyPair;
  const salt = randomBytes(16);
  const iv = randomBytes(12);
  const aesKey = await deriveAesKey(ephemeral.privateKey, vaultKey, salt, kid, "encrypt");
  const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: aad }, aesKey, data);
  const epk = (await crypto.subtle.exportKey("jwk", ephemeral.publicKey)) as JsonWebKey;
  return {
    v: VERSION,
    kid,
    epk: { kty: "EC", crv: "P-256", x: epk.x!, y: epk.y! },
    salt: toBase64Url(salt),
    iv: toBase64Url(iv),
    ct: toBase64Url(new Uint8Array(ct)),
  };
}

/** Open an envelope (inside the key's Durable Object). Picks the vault key by kid. */
export async function decryptCredential(envelope: Envelope, privateKeys: VaultPrivateKey[], binding: KeyBinding): Promise<string> {
  const vaultKey = privateKeys.find((k) => k.kid === envelope.kid);
  if (!vaultKey) {
    const named = typeof envelope.kid === "string" && KID_RE.test(envelope.kid) ? ` "${envelope.kid}"` : "";
    throw new VaultError("vault_key_unknown", `no live vault key with kid${named}`);
  }
  const aad = additionalData(binding, vaultKey.kid);

  let privateKey: CryptoKey;
  try {
    privateKey = await crypto.subtle.importKey("jwk", privateJwk(vaultKey.jwk), ECDH, false, ["deriveBits"]);
  } catch {
    throw new VaultError("vault_misconfigured", `vault private key "${vaultKey.kid}" cannot be imported`);
  }

  // Any failure from here on (bad epk point, bad base64, tag mismatch, wrong AAD) is the
  // same opaque error: which step failed tells an attacker nothing useful and the
  // original exceptions are not carried along.
  try {
    if (envelope.v !== VERSION || envelope.epk?.kty !== "EC" || envelope.epk.crv !== "P-256") throw 0;
    const ephemeral = await crypto.subtle.importKey("jwk", publicJwk(envelope.epk), ECDH, false, []);
    const salt = fromBase64Url(envelope.salt);
    const iv = fromBase64Url(envelope.iv);
    if (salt.byteLength !== 16 || iv.byteLength !== 12) throw 0;
    const aesKey = await deriveAesKey(privateKey, ephemeral, salt, vaultKey.kid, "decrypt");
    const pt = await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData: aad }, aesKey, fromBase64Url(envelope.ct));
    // ignoreBOM keeps a leading U+FEFF: the credential comes back byte for byte.
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(pt);
  } catch {
    throw new VaultError("decrypt_failed", "credential envelope does not decrypt for this key and seller");
  }
}

// ---------------------------------------------------------------------------------
// Helpers

/** ECDH -> HKDF-SHA-256 -> non-extractable AES-256-GCM key; the shared bits never leave. */
async function deriveAesKey(own: CryptoKey, peer: CryptoKey, salt: Uint8Array, kid: string, usage: "encrypt" | "decrypt"): Promise<CryptoKey> {
  // `public` is spelled `$public` in workers-types; the runtime wants `public`. Typed from
  // deriveBits itself, so the module also checks against the DOM's types (the dashboard).
  const ecdh = { name: "ECDH", public: peer } as unknown as Parameters<typeof crypto.subtle.deriveBits>[0];
  const shared = await crypto.subtle.deriveBits(ecdh, own, 256);
  const ikm = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  const hkdf = { name: "HKDF", hash: "SHA-256", salt, info: new TextEncoder().encode(`cn2 vault v1 ${kid}`) };
  return crypto.subtle.deriveKey(hkdf, ikm, { name: "AES-GCM", length: 256 }, false, [usage]);
}

function additionalData({ sellerId, keyId }: KeyBinding, kid: string): Uint8Array<ArrayBuffer> {
  // "|" separates the fields, so a field containing it would make the AAD ambiguous.
  for (const part of [sellerId, keyId]) {
    if (typeof part !== "string" || part.length === 0 || part.includes("|")) {
      throw new TypeError("key binding needs a non-empty sellerId and keyId without '|'");
    }
  }
  return new Uint8Array(new TextEncoder().encode(`cn2-vault-v1|${sellerId}|${keyId}|${kid}`));
}

function publicJwk(jwk: JsonWebKey): JsonWebKey {
  return { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y };
}

function privateJwk(jwk: JsonWebKey): JsonWebKey {
  return { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y, d: jwk.d };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  return crypto.getRandomValues(new Uint8Array(n));
}

export function toBase64Url(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw new TypeError("not base64url");
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  const binary = atob(b64);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}
