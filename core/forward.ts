// What crosses to the upstream and back. An allow-list per provider decides which buyer
// headers go upstream, so the buyer's credentials, cookies, payment and our own headers
// never reach a provider; the seller's credential is injected the provider's way. The
// router applies the allow-list (keyRequestHeaders) before the key object, the only
// other party that sees them (key objects are reachable through this Worker alone).
import { SECURITY_HEADERS } from "./http.ts";
import type { Provider } from "../schema/providers.ts";
import { H } from "../schema/wire.ts";

/** Hop-by-hop headers (RFC 9110 §7.6.1) and ones the platform sets itself. */
const HOP_BY_HOP = new Set([
  "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
  "proxy-authenticate", "proxy-authorization", "content-length", "host",
]);

export function upstreamUrl(base: string, path: string, search: string, provider: Provider): string {
  if (!search || provider.stripQuery.length === 0) return base + path + search;
  const params = new URLSearchParams(search);
  for (const name of provider.stripQuery) params.delete(name);
  const rest = params.toString();
  return base + path + (rest ? `?${rest}` : "");
}

/** Statuses whose responses carry no body (a Response with one would be refused). */
const NULL_BODY: ReadonlySet<number> = new Set([101, 204, 205, 304]);

/** Names only we may set on an answer (H in schema/wire.ts) and the payment receipt. */
const OURS = [...Object.values(H), "payment-receipt"];

/** The router's internal headers to a key object: never forwarded upstream. */
const INTERNAL: ReadonlySet<string> = new Set([H.requestId, H.paid, H.tab]);

// Request headers are built as plain records and handed to fetch() once: each Headers
// object is a native allocation, and the request path is hot (bench --profile).

/**
 * What the router sends a key object: the provider's allow-listed buyer headers only (the
 * object forwards no other), then our internal ones, always set by us.
 */
export function keyRequestHeaders(provider: Provider, incoming: Headers, internal: Readonly<Record<typeof H.requestId | typeof H.paid | typeof H.tab, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of provider.forwardHeaders) {
    const value = incoming.get(name);
    if (value !== null) out[name] = value;
  }
  return Object.assign(out, internal);
}

/** From what the router sent (already allow-listed): minus our internal and framing headers, plus the credential. */
export function upstreamHeaders(provider: Provider, fromRouter: Headers, credential: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of fromRouter) if (!INTERNAL.has(name) && !HOP_BY_HOP.has(name)) out[name] = value;
  for (const name in provider.defaultHeaders) out[name] ??= provider.defaultHeaders[name]!;
  if (provider.auth.kind === "bearer") out.authorization = `Bearer ${credential}`;
  else out[provider.auth.header] = credential;
  return out;
}

/**
 * The buyer's answer: the upstream's status and headers, minus hop-by-hop, the provider's
 * account headers, and our own header names and the payment receipt (an upstream must not
 * be able to fake a refusal, which the router would act on, a price or a receipt).
 */
export function buyerResponse(provider: Provider, upstream: Response, body: BodyInit | null, ours: Readonly<Record<string, string>>): Response {
  const out = new Response(NULL_BODY.has(upstream.status) ? null : body, upstream);
  const headers = out.headers;
  for (const name of HOP_BY_HOP) headers.delete(name);
  for (const name of provider.stripResponseHeaders) headers.delete(name);
  for (const name of OURS) headers.delete(name);
  for (const name in ours) headers.set(name, ours[name]!);
  for (const name in SECURITY_HEADERS) headers.set(name, SECURITY_HEADERS[name]!);
  // An answer read whole says its length: the router then reads it whole too (worker/proxy/started.ts).
  if (body instanceof ArrayBuffer && out.body !== null) headers.set("content-length", String(body.byteLength));
  return out;
}
