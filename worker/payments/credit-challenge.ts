// The `credit` method's challenges, issued and checked without mppx's generic server path.
// Same wire format and the same id as mppx's: HMAC-SHA256 under MPP_SECRET_KEY over the
// challenge's binding input (the MPP spec's seven pipe-separated slots, §5.1.2.1.1), so
// mppx clients pay these challenges and mppx's Challenge.verify accepts them; the test
// (test/worker/credit-challenge.test.ts) compares both ways, field by field and byte by byte.
//
// Why not mppx's server for our own method: a paid request checks one challenge and
// issues one (cn2-next-challenge), and mppx's path validates both with zod schemas,
// resolves a route challenge and computes the HMAC in JavaScript (ox). On workerd's thread
// that was the largest single cost of a paid request (`bench --cpu-profile-paid`, docs/bench.md).
// Here the HMAC is WebCrypto's (native, the key imported once per secret), and the fields
// of our own method are checked directly. mppx still does the wire formats (serialize,
// deserialize) and everything for other methods (tempo).
import { Challenge, PaymentRequest } from "mppx";
import { CREDIT_INTENT, CREDIT_METHOD, CURRENCY } from "../../core/credit-method.ts";
import { fromBase64Url, toBase64Url } from "../../core/encoding.ts";

/** mppx's reserved meta key for a route scope (server/internal/scope.js). */
export const SCOPE_META_KEY = "_mppx_scope";

const HMAC_SHA256 = { name: "HMAC", hash: "SHA-256" } as const;
const utf8 = new TextEncoder();
const idKeys = new Map<string, Promise<CryptoKey>>();

/** MPP_SECRET_KEY as a WebCrypto HMAC-SHA256 key, imported once per secret (challenge ids; the receipt key is derived with it). */
export function secretHmacKey(secretKey: string): Promise<CryptoKey> {
  let key = idKeys.get(secretKey);
  if (!key) {
    key = crypto.subtle.importKey("raw", utf8.encode(secretKey), HMAC_SHA256, false, ["sign", "verify"]);
    idKeys.clear(); // one secret per deployment; a rotation replaces it
    idKeys.set(secretKey, key);
  }
  return key;
}

type Bound = Pick<Challenge.Challenge, "realm" | "method" | "intent" | "request" | "expires" | "digest" | "opaque" | "meta"> & { header?: string };

/** What the id binds, slot for slot as mppx's Challenge.computeId builds it (`request`: the request serialized, when already at hand). */
function bindingInput(c: Omit<Bound, "request"> & { request?: Bound["request"] }, request = PaymentRequest.serialize(c.request!)): string {
  const slots = [c.realm, c.method, c.intent, request, c.expires ?? "", c.digest ?? ""];
  if (c.header !== undefined && c.header.toLowerCase() !== "authorization") slots.push(c.header);
  slots.push(c.opaque ?? (c.meta ? PaymentRequest.serialize(c.meta) : ""));
  return slots.join("|");
}

/** base64url (no padding) of canonical JSON, as mppx's PaymentRequest.serialize (JCS), for our flat string records built with sorted keys. */
const canonical = (sorted: Record<string, string>) => toBase64Url(utf8.encode(JSON.stringify(sorted)));

/** Serialized requests by amount: a route's quote repeats. */
const requests = new Map<number, string>();

/** The `WWW-Authenticate: Payment` value of each challenge made here (see serializeChallenge). */
const serialized = new WeakMap<Challenge.Challenge, string>();

/**
 * A `credit` challenge for `amountMicros` on the route `scope`, expiring at `expires`
 * (an ISO date-time), made unique by `nonce`: what mppx's challenge function returns for
 * the same input.
 */
export async function creditChallenge(
  secretKey: string,
  realm: string,
  q: { amountMicros: number; scope: string; expires: string; nonce: string; description?: string; epoch?: string },
): Promise<Challenge.Challenge> {
  const amount = String(q.amountMicros);
  let request = requests.get(q.amountMicros);
  if (request === undefined) {
    request = canonical({ amount, currency: CURRENCY });
    if (requests.size >= 256) requests.clear();
    requests.set(q.amountMicros, request);
  }
  // `t`: the router epoch the proof can be taken in (worker/payments/tabs.ts); keys sorted, as JCS.
  const opaque = canonical(q.epoch === undefined ? { [SCOPE_META_KEY]: q.scope, n: q.nonce } : { [SCOPE_META_KEY]: q.scope, n: q.nonce, t: q.epoch });
  const input = bindingInput({ realm, method: CREDIT_METHOD, intent: CREDIT_INTENT, expires: q.expires, opaque }, request);
  const id = toBase64Url(new Uint8Array(await crypto.subtle.sign("HMAC", await secretHmacKey(secretKey), utf8.encode(input))));
  const challenge = {
    id, realm, method: CREDIT_METHOD, intent: CREDIT_INTENT, request: { amount, currency: CURRENCY },
    ...(q.description ? { description: q.description } : {}),
    expires: q.expires, meta: { n: q.nonce, [SCOPE_META_KEY]: q.scope, ...(q.epoch === undefined ? {} : { t: q.epoch }) }, opaque,
  } as Challenge.Challenge;
  const params = [
    authParam("id", id), authParam("realm", realm), authParam("method", CREDIT_METHOD), authParam("intent", CREDIT_INTENT), authParam("request", request),
    ...(q.description ? [authParam("description", q.description)] : []),
    authParam("expires", q.expires), authParam("opaque", opaque),
  ];
  serialized.set(challenge, `Payment ${params.join(", ")}`);
  return challenge;
}

/** A challenge as a `WWW-Authenticate: Payment` value: made here at issue, else by mppx. */
export const serializeChallenge = (challenge: Challenge.Challenge): string => serialized.get(challenge) ?? Challenge.serialize(challenge);

/** mppx's quoted auth-param (Challenge.js authParam): escapes, Latin-1 only, no line breaks. */
function authParam(name: string, value: string): string {
  if (/[\r\n]/.test(value)) throw new Error("Invalid quoted-string value.");
  const escaped = value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/[\u0100-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return `${name}="${escaped}"`;
}

/**
 * Was `challenge` issued under `secretKey`, unaltered? The id must be the HMAC of every
 * bound field; crypto.subtle.verify compares in constant time.
 */
export async function verifyChallengeId(secretKey: string, challenge: Challenge.Challenge): Promise<boolean> {
  let given: Uint8Array;
  try {
    given = fromBase64Url(challenge.id);
  } catch {
    return false;
  }
  let input: string;
  try {
    input = bindingInput(challenge as Bound);
  } catch {
    return false; // a request or meta that does not serialize was not issued here
  }
  return crypto.subtle.verify("HMAC", await secretHmacKey(secretKey), given, utf8.encode(input));
}
