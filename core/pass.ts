// The wire format of passes (docs/payments.md, "Passes"), shared by the router
// (worker/payments/passes.ts) and the buyer client (buyer/index.ts) so the two cannot drift.
//
//   request  cn2-pass: want                        (with a signed payment: grant me a pass)
//   answer   cn2-pass: <id>.<secret>.<max micros>.<expires ms>
//   request  cn2-pass: <id>.<seq>.<mac>            mac = HMAC-SHA256(secret, passProofInput(id, seq))
//
// id: 16 random bytes, secret and mac: 32 bytes, all base64url without padding.
import { fromBase64Url, toBase64Url } from "./encoding.ts";

/** `cn2-pass` on a signed request: it asks for a pass. */
export const PASS_WANTED = "want";

/** What a pass proof's mac signs. */
export const passProofInput = (id: string, seq: number) => `cn2-pass/v1|${id}|${seq}`;

export interface PassGrant {
  id: string;
  secret: Uint8Array;
  maxMicros: number;
  expiresAt: number;
}

const GRANT = /^([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})\.(\d{1,15})\.(\d{1,15})$/;
const PROOF = /^([A-Za-z0-9_-]{22})\.(\d{1,15})\.([A-Za-z0-9_-]{43})$/;

export const formatPassGrant = (g: PassGrant) => `${g.id}.${toBase64Url(g.secret)}.${g.maxMicros}.${g.expiresAt}`;

export function parsePassGrant(value: string): PassGrant | null {
  const m = GRANT.exec(value);
  return m ? { id: m[1]!, secret: fromBase64Url(m[2]!), maxMicros: Number(m[3]), expiresAt: Number(m[4]) } : null;
}

export const formatPassProof = (id: string, seq: number, mac: Uint8Array) => `${id}.${seq}.${toBase64Url(mac)}`;

export function parsePassProof(value: string): { id: string; seq: number; mac: Uint8Array } | null {
  const m = PROOF.exec(value);
  return m ? { id: m[1]!, seq: Number(m[2]), mac: fromBase64Url(m[3]!) } : null;
}
