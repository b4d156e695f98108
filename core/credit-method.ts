// The `credit` payment method (ours): anonymous prepaid credit. Shared by server and
// client, so it imports nothing Worker-specific.
//
//   challenge.request  { amount: "<micro-dollars>", currency: "usd" }
//   credential.payload { signature: base64url(sign(privateKey, creditMessage(challenge))) }
//   credential.source  the buyer's public key as a did:key
//
// The challenge id is an HMAC over every challenge field (realm, method, intent, request,
// expires, opaque with the route scope), so signing the id binds the signature to this
// amount, this route and this expiry; the server checks the HMAC, then the signature.
import { Method, z } from "mppx";
import { sign, type KeyAlg } from "./did.ts";
import { sha256Hex, toBase64Url } from "./encoding.ts";

export const CREDIT_METHOD = "credit";
export const CREDIT_INTENT = "charge";
export const CURRENCY = "usd";

export const credit = Method.from({
  name: CREDIT_METHOD,
  intent: CREDIT_INTENT,
  schema: {
    credential: {
      payload: z.object({
        signature: z.string().check(z.regex(/^[A-Za-z0-9_-]{86}$/, "signature must be 64 bytes base64url")),
      }),
    },
    request: z.object({
      amount: z.string().check(z.regex(/^\d{1,15}$/, "amount must be whole micro-dollars")),
      currency: z.literal(CURRENCY),
      description: z.optional(z.string()),
    }),
  },
});

/** What a buyer signs for a challenge: domain-separated, versioned. */
export const creditMessage = (challenge: { id: string; realm: string }) => `cn2-credit/v1\n${challenge.realm}\n${challenge.id}`;

// ---- signed account requests (balance, budget): no account, just the key ------------

/** Headers of a request signed by a buyer's key. */
export const ACCOUNT_HEADERS = { did: "cn2-buyer", time: "cn2-buyer-time", signature: "cn2-buyer-signature" } as const;
/** How far a signed account request's clock may be from ours. */
export const ACCOUNT_TOLERANCE_SECONDS = 300;

/** What a buyer signs to read its balance or set its budget. */
export const accountMessage = (m: { method: string; pathAndQuery: string; time: string; bodySha256: string }) =>
  `cn2-account/v1\n${m.method.toUpperCase()}\n${m.pathAndQuery}\n${m.time}\n${m.bodySha256}`;

/**
 * The headers that sign a request with a buyer key (the client half of the Worker's
 * checkAccountSignature): `pathAndQuery` and `body` exactly as sent.
 */
export async function accountRequestHeaders(
  key: { alg: KeyAlg; did: string; privateKey: CryptoKey },
  m: { method: string; pathAndQuery: string; body: string },
): Promise<Record<string, string>> {
  const time = String(Math.floor(Date.now() / 1000));
  const message = accountMessage({ method: m.method, pathAndQuery: m.pathAndQuery, time, bodySha256: await sha256Hex(m.body) });
  return {
    [ACCOUNT_HEADERS.did]: key.did,
    [ACCOUNT_HEADERS.time]: time,
    [ACCOUNT_HEADERS.signature]: toBase64Url(await sign(key.alg, key.privateKey, message)),
  };
}
