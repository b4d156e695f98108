// Webhook signatures (S6), the scheme receivers verify:
//
//   cn2-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>
//
// The key is the whole signing secret string as the seller received it ("whsec_..."),
// UTF-8 encoded; the body is the exact bytes we POST. The timestamp is signed with the
// body, so a receiver that refuses old timestamps (5 minutes by default) also refuses a
// replayed delivery. A header may carry several v1= values (a receiver accepts any that
// matches); we send one. verifySignature is what docs/webhooks.md shows receivers.

export const SIGNATURE_HEADER = "cn2-signature";
export const EVENT_ID_HEADER = "cn2-event-id";
export const EVENT_TYPE_HEADER = "cn2-event-type";
export const ATTEMPT_HEADER = "cn2-delivery-attempt";
export const SECRET_PREFIX = "whsec_";
export const DEFAULT_TOLERANCE_SECONDS = 300;

const encoder = new TextEncoder();

async function hmacKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
}

const hex = (bytes: ArrayBuffer) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");

/** hex HMAC-SHA256(secret, `${timestamp}.${body}`) */
export async function computeSignature(secret: string, timestamp: number, body: string): Promise<string> {
  return hex(await crypto.subtle.sign("HMAC", await hmacKey(secret), encoder.encode(`${timestamp}.${body}`)));
}

/** The cn2-signature header value for a body sent at `timestamp` (unix seconds). */
export async function signatureHeader(secret: string, timestamp: number, body: string): Promise<string> {
  return `t=${timestamp},v1=${await computeSignature(secret, timestamp, body)}`;
}

export type VerifyResult = { ok: true; timestamp: number } | { ok: false; reason: "malformed_header" | "timestamp_out_of_tolerance" | "signature_mismatch" };

/** Parse `t=...,v1=...[,v1=...]`; unknown schemes are ignored (forward compatible). */
export function parseSignatureHeader(header: string): { timestamp: number; signatures: string[] } | null {
  let timestamp: number | null = null;
  const signatures: string[] = [];
  for (const part of header.split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) return null;
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === "t") {
      if (!/^\d{1,12}$/.test(value) || timestamp !== null) return null;
      timestamp = Number(value);
    } else if (key === "v1") {
      if (!/^[0-9a-f]{64}$/.test(value)) return null;
      signatures.push(value);
    }
  }
  return timestamp === null || signatures.length === 0 ? null : { timestamp, signatures };
}

/**
 * Receiver side: check a delivery. `body` must be the raw request body, before any JSON
 * parsing. The comparison is constant-time (crypto.subtle.verify).
 */
export async function verifySignature(
  secret: string,
  header: string | null,
  body: string,
  options: { now?: number; toleranceSeconds?: number } = {},
): Promise<VerifyResult> {
  const parsed = header === null ? null : parseSignatureHeader(header);
  if (!parsed) return { ok: false, reason: "malformed_header" };
  const now = options.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - parsed.timestamp) > (options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS)) return { ok: false, reason: "timestamp_out_of_tolerance" };
  const key = await hmacKey(secret);
  const data = encoder.encode(`${parsed.timestamp}.${body}`);
  for (const sig of parsed.signatures) {
    const bytes = new Uint8Array(sig.match(/../g)!.map((h) => parseInt(h, 16)));
    if (await crypto.subtle.verify("HMAC", key, bytes, data)) return { ok: true, timestamp: parsed.timestamp };
  }
  return { ok: false, reason: "signature_mismatch" };
}
