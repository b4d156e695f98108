// What crosses to the upstream and back. An allow-list per provider decides which buyer
// headers go upstream, so the buyer's credentials, cookies, payment and our own headers
// never reach a provider; the seller's credential is injected the provider's way. The
// router applies the allow-list (keyRequestHeaders) before the key object, the only
// other party that sees them (key objects are reachable through this Worker alone).
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

/** Names only we may set on an answer (H in schema/wire.ts) and the payment receipt. */
const OURS = [...Object.values(H), "payment-receipt"];

/** The router's internal headers to a key object: never forwarded upstream. */
const INTERNAL = [H.requestId, H.paid] as const;

/** From what the router sent (already allow-listed): minus our internal headers, plus the credential. */
export function upstreamHeaders(provider: Provider, fromRouter: Headers, credential: string): Headers {
  const out = new Headers(fromRouter);
  for (const name of INTERNAL) out.delete(name);
  // The hop to the object may add framing headers of its own (content-length, host).
  for (const name of HOP_BY_HOP) out.delete(name);
  for (const [name, value] of Object.entries(provider.defaultHeaders)) if (!out.has(name)) out.set(name, value);
  if (provider.auth.kind === "bearer") out.set("authorization", `Bearer ${credential}`);
  else out.set(provider.auth.header, credential);
  return out;
}

/**
 * The upstream's answer headers for the buyer. Our own header names and the payment
 * receipt are dropped too: an upstream must not be able to fake a refusal (which the
 * router would act on), a price or a receipt.
 */
export function buyerResponseHeaders(provider: Provider, upstream: Headers): Headers {
  // A native copy, then deletes by name: cheaper than rebuilding entry by entry.
  const out = new Headers(upstream);
  for (const name of HOP_BY_HOP) out.delete(name);
  for (const name of provider.stripResponseHeaders) out.delete(name);
  for (const name of OURS) out.delete(name);
  return out;
}

/**
 * What the router sends a key object: the provider's allow-listed buyer headers only (the
 * object forwards no other), then our internal ones, always set by us.
 */
export function keyRequestHeaders(provider: Provider, incoming: Headers, internal: Readonly<Record<(typeof INTERNAL)[number], string>>): Headers {
  const out = new Headers();
  for (const name of provider.forwardHeaders) {
    const value = incoming.get(name);
    if (value !== null) out.set(name, value);
  }
  for (const name of INTERNAL) out.set(name, internal[name]);
  return out;
}
