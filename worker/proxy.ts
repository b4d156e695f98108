// The buyer-facing proxy (P1, P2, B3): validate, pick keys, hand the request to a key
// object, fail over while no byte has reached the buyer, stream the answer back.
import * as v from "valibot";
import { isProviderId } from "../schema/providers.ts";
import { H, RETRYABLE, TierSchema, type ErrorCode } from "../schema/wire.ts";
import type { Env } from "./env.ts";
import { ApiError, errorResponse } from "./http.ts";
import { keyStub } from "./keys.ts";
import { localLoad, readPools, trackLoad } from "./pools.ts";
import { attemptOrder, buyerRegions, eligible, isEuCountry, type Candidate } from "./routing.ts";

/** At most this many keys are tried for one request. */
const MAX_ATTEMPTS = 3;
/** Total size of request headers we accept (names + values). */
const MAX_HEADER_BYTES = 32 * 1024;
/** Request bodies are held in memory so a failover can resend them. */
export const MAX_BODY_BYTES = 10 * 1024 * 1024;

const MaxPrice = v.pipe(v.string(), v.regex(/^\d{1,15}$/));

export interface ProxyTarget {
  provider: string;
  /** The provider's own path, e.g. /v1/chat/completions. */
  path: string;
}

export function parseTarget(url: URL): ProxyTarget {
  const match = /^\/([^/]+)(\/.*)?$/.exec(url.pathname);
  const provider = match?.[1] ?? "";
  if (!isProviderId(provider)) throw new ApiError("unknown_provider", `unknown provider "${provider.slice(0, 40)}"; known: openai, anthropic, google, groq`);
  return { provider, path: match?.[2] ?? "/" };
}

export async function proxy(request: Request, env: Env, requestId: string): Promise<Response> {
  const url = new URL(request.url);
  const { provider, path } = parseTarget(url);

  let headerBytes = 0;
  for (const [name, value] of request.headers) headerBytes += name.length + value.length;
  if (headerBytes > MAX_HEADER_BYTES) throw new ApiError("headers_too_large", `request headers exceed ${MAX_HEADER_BYTES} bytes`);

  const tierHeader = request.headers.get(H.tier);
  const tier = tierHeader === null ? "standard" : v.is(TierSchema, tierHeader) ? tierHeader : null;
  if (tier === null) throw new ApiError("invalid_tier", `${H.tier} must be standard, premium or economy`);
  const maxHeader = request.headers.get(H.maxPrice);
  if (maxHeader !== null && !v.is(MaxPrice, maxHeader)) throw new ApiError("invalid_max_price", `${H.maxPrice} must be a whole number of micro-dollars`);
  const maxPrice = maxHeader === null ? null : Number(maxHeader);

  // The edge country is used for this decision only and never stored (PR10).
  const country = (request.cf?.country as string | undefined) ?? request.headers.get("cf-ipcountry");
  const regions = buyerRegions(country);
  const snapshots = await readPools(env, provider, regions, tier);
  const constraints = { method: request.method, path, regions, maxPrice: null, now: Date.now() };
  const capped = eligible(snapshots, { ...constraints, maxPrice });
  if (capped.length === 0) {
    if (maxPrice !== null && eligible(snapshots, constraints).length > 0) throw new ApiError("price_cap_too_low", `no ${provider} key is priced at or below ${maxPrice} micro-dollars for this route`);
    if (isEuCountry(country)) throw new ApiError("no_eu_key_available", `no EU-hosted ${provider} key is available in the ${tier} tier; EU buyers are served by EU keys only`);
    throw new ApiError("no_key_available", `no ${provider} key is available in the ${tier} tier`);
  }

  const body = await bufferBody(request);
  const order = attemptOrder(capped, localLoad, Math.random, MAX_ATTEMPTS);
  const refusals: Response[] = [];
  for (const key of order) {
    const res = await tryKey(env, key, request, url, path, body, requestId);
    const code = res.headers.get(H.refusal) as ErrorCode | null;
    if (code === null) return served(res);
    if (!RETRYABLE.has(code)) return res;
    refusals.push(res);
    if (request.signal.aborted) break;
  }
  return combineRefusals(refusals, requestId);
}

async function tryKey(env: Env, key: Candidate, request: Request, url: URL, path: string, body: ArrayBuffer | null, requestId: string): Promise<Response> {
  const headers = new Headers(request.headers);
  headers.set(H.requestId, requestId);
  trackLoad(key.keyId, 1);
  try {
    return await keyStub(env, key.keyId, key.home).fetch(`https://key${path}${url.search}`, {
      method: request.method,
      headers,
      body,
      signal: request.signal,
    });
  } catch {
    return errorResponse("upstream_error", "key object unavailable", { requestId, headers: { [H.refusal]: "upstream_error" } });
  } finally {
    trackLoad(key.keyId, -1);
  }
}

async function bufferBody(request: Request): Promise<ArrayBuffer | null> {
  if (request.method === "GET" || request.method === "HEAD" || request.body === null) return null;
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > MAX_BODY_BYTES) throw new ApiError("body_too_large", `request body exceeds ${MAX_BODY_BYTES} bytes`);
  const buf = await request.arrayBuffer();
  if (buf.byteLength > MAX_BODY_BYTES) throw new ApiError("body_too_large", `request body exceeds ${MAX_BODY_BYTES} bytes`);
  return buf;
}

function served(res: Response): Response {
  const out = new Response(res.body, res);
  out.headers.delete(H.refusal);
  return out;
}

/** Every tried key refused: one refusal kind is passed on as is, a mix becomes 503. */
async function combineRefusals(refusals: Response[], requestId: string): Promise<Response> {
  const codes = refusals.map((r) => r.headers.get(H.refusal) as ErrorCode);
  const last = refusals[refusals.length - 1];
  if (last && codes.every((c) => c === codes[0])) {
    const out = new Response(last.body, last);
    out.headers.delete(H.refusal);
    return out;
  }
  const retryAfter = refusals.map((r) => Number(r.headers.get("retry-after"))).filter((n) => n > 0);
  const headers: Record<string, string> = retryAfter.length ? { "retry-after": String(Math.min(...retryAfter)) } : {};
  return errorResponse("no_key_available", `all ${refusals.length} keys tried refused: ${[...new Set(codes)].join(", ")}`, { requestId, headers });
}
