// What crosses to the upstream and back. An allow-list per provider decides which buyer
// headers go upstream, so the buyer's credentials, cookies, payment and our own headers
// never reach a provider; the seller's credential is injected the provider's way.
import type { Provider } from "../schema/providers.ts";

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

export function upstreamHeaders(provider: Provider, incoming: Headers, credential: string): Headers {
  const out = new Headers();
  for (const name of provider.forwardHeaders) {
    const value = incoming.get(name);
    if (value !== null) out.set(name, value);
  }
  for (const [name, value] of Object.entries(provider.defaultHeaders)) if (!out.has(name)) out.set(name, value);
  if (provider.auth.kind === "bearer") out.set("authorization", `Bearer ${credential}`);
  else out.set(provider.auth.header, credential);
  return out;
}

/**
 * The upstream's answer headers for the buyer. Our own `cn2-` names and the payment
 * receipt are dropped too: an upstream must not be able to fake a refusal (which the
 * router would act on), a price or a receipt.
 */
export function buyerResponseHeaders(provider: Provider, upstream: Headers): Headers {
  const out = new Headers();
  for (const [name, value] of upstream) {
    if (HOP_BY_HOP.has(name) || name.startsWith("cn2-") || name === "payment-receipt" || provider.stripResponseHeaders.includes(name)) continue;
    out.append(name, value);
  }
  return out;
}

/**
 * What the router sends a key object: the provider's allow-listed buyer headers only (the
 * object forwards no other), then our internal ones, always set by us.
 */
export function keyRequestHeaders(provider: Provider, incoming: Headers, internal: Readonly<Record<string, string>>): Headers {
  const out = new Headers();
  for (const name of provider.forwardHeaders) {
    const value = incoming.get(name);
    if (value !== null) out.set(name, value);
  }
  for (const name in internal) out.set(name, internal[name]!);
  return out;
}
