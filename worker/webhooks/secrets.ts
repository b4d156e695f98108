// Webhook signing secrets at rest. We sign every delivery, so we must hold the secret
// itself (a hash would be useless); it is stored AES-256-GCM encrypted under a Worker
// secret, WEBHOOK_SECRET_KEYS = JSON [{kid, key}] newest first (key: 32 bytes, base64 or
// base64url). New secrets are sealed under the first key; older kids keep decrypting
// until every secret sealed under them has been rotated, then the old key can go.
// The endpoint id is the GCM additional data: a ciphertext copied to another endpoint's
// row does not decrypt there. See schema/sql/0004_webhooks.sql for the table.
import { fromBase64Url, toBase64Url } from "../../core/vault.ts";
import { SECRET_PREFIX } from "./signing.ts";

export interface SecretKey {
  kid: string;
  key: CryptoKey;
}

export interface SealedSecret {
  kid: string;
  iv: Uint8Array;
  ciphertext: Uint8Array;
}

export class WebhookSecretError extends Error {
  readonly code: "webhook_keys_misconfigured" | "webhook_key_unknown" | "webhook_secret_undecryptable";
  constructor(code: WebhookSecretError["code"], message: string) {
    super(message);
    this.code = code;
  }
}

const KID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const SECRET_BYTES = 32;
const encoder = new TextEncoder();

const cache = new Map<string, Promise<SecretKey[]>>();

/** Parse and import WEBHOOK_SECRET_KEYS (cached per value). Errors never quote the secret. */
export function secretKeys(raw: string | undefined): Promise<SecretKey[]> {
  const value = raw ?? "";
  let keys = cache.get(value);
  if (!keys) {
    keys = importSecretKeys(value);
    keys.catch(() => cache.delete(value));
    cache.set(value, keys);
  }
  return keys;
}

async function importSecretKeys(raw: string): Promise<SecretKey[]> {
  const fail = (why: string): never => {
    throw new WebhookSecretError("webhook_keys_misconfigured", `WEBHOOK_SECRET_KEYS ${why}`);
  };
  if (raw === "") fail("is not set");
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    fail("is not valid JSON");
  }
  if (!Array.isArray(parsed) || parsed.length === 0) return fail("must be a non-empty JSON array of {kid, key}, newest first");
  const seen = new Set<string>();
  const out: SecretKey[] = [];
  for (const [i, entry] of parsed.entries()) {
    const { kid, key } = (entry ?? {}) as { kid?: unknown; key?: unknown };
    if (typeof kid !== "string" || !KID_RE.test(kid)) fail(`entry ${i}: kid must be 1-64 letters, digits, _ or -`);
    if (seen.has(kid as string)) fail(`entry ${i}: duplicate kid`);
    seen.add(kid as string);
    let bytes: Uint8Array | null = null;
    try {
      bytes = typeof key === "string" ? fromBase64Url(key.replace(/=+$/, "").replaceAll("+", "-").replaceAll("/", "_")) : null;
    } catch {
      bytes = null;
    }
    if (!bytes || bytes.length !== 32) fail(`entry ${i}: key must be 32 bytes in base64`);
    out.push({ kid: kid as string, key: await crypto.subtle.importKey("raw", bytes!, "AES-GCM", false, ["encrypt", "decrypt"]) });
  }
  return out;
}

const additionalData = (endpointId: string) => encoder.encode(`cn2/webhook-signing-secret/v1\u0000${endpointId}`);

/** A fresh signing secret: 32 random bytes, shown to the seller as whsec_<base64url>. */
export function newSigningSecret(): { secret: string; raw: Uint8Array } {
  const raw = crypto.getRandomValues(new Uint8Array(SECRET_BYTES));
  return { secret: SECRET_PREFIX + toBase64Url(raw), raw };
}

/** Seal the secret's 32 raw bytes under the newest key (ciphertext 48 bytes with the tag). */
export async function sealSecret(keys: SecretKey[], endpointId: string, raw: Uint8Array): Promise<SealedSecret> {
  const current = keys[0];
  if (!current) throw new WebhookSecretError("webhook_keys_misconfigured", "WEBHOOK_SECRET_KEYS holds no key");
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ciphertext = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: additionalData(endpointId) }, current.key, raw));
  return { kid: current.kid, iv, ciphertext };
}

/** The whsec_... string for a stored row. */
export async function openSecret(keys: SecretKey[], endpointId: string, sealed: SealedSecret): Promise<string> {
  const key = keys.find((k) => k.kid === sealed.kid);
  if (!key) throw new WebhookSecretError("webhook_key_unknown", `no WEBHOOK_SECRET_KEYS entry for kid ${sealed.kid}`);
  try {
    const raw = await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv, additionalData: additionalData(endpointId) }, key.key, sealed.ciphertext);
    return SECRET_PREFIX + toBase64Url(new Uint8Array(raw));
  } catch {
    throw new WebhookSecretError("webhook_secret_undecryptable", "webhook signing secret does not decrypt (wrong key or endpoint)");
  }
}
