// The buyer-facing proxy's entry (P1, B1): calls to a known provider skip the route table
// (the hot path), with the same request id and error handling as every other route; the
// table's catch-all sends anything else under a provider-looking prefix here too, where
// an unknown provider gets its error.
import type { IRequest } from "itty-router";
import { PROVIDER_IDS } from "../../schema/providers.ts";
import { H } from "../../schema/wire.ts";
import type { Env } from "../../core/env.ts";
import { ApiError, failedResponse, newRequestId, safeEqual, splitUrl, withRequestId } from "../../core/http.ts";
import { proxy } from "./proxy.ts";

const KNOWN_PROVIDERS: ReadonlySet<string> = new Set(PROVIDER_IDS);

/**
 * Unpaid proxy calls (health checks, benchmarks) need the proxy token, a secret of its own
 * (PROXY_TOKEN: revocable by rotating it, unset in production unless wanted), never the
 * ops token. A wrong `cn2-proxy-token` is an error, not a silent fall back to paying.
 */
export function isUnpaidCaller(request: Request, env: Env): boolean {
  const header = request.headers.get(H.proxyToken);
  if (header === null) return false;
  if (!env.PROXY_TOKEN || !safeEqual(header, env.PROXY_TOKEN)) throw new ApiError("unauthorized", `wrong ${H.proxyToken}`);
  return true;
}

/** Whether a request goes straight to the proxy: its first path segment names a provider. */
export function isProviderCall(url: string): boolean {
  const { pathname } = splitUrl(url);
  const end = pathname.indexOf("/", 1);
  return KNOWN_PROVIDERS.has(pathname.slice(1, end < 0 ? undefined : end));
}

/** The hot path: a provider call, outside the route table. */
export async function handleProviderCall(request: Request, env: Env): Promise<Response> {
  const requestId = newRequestId();
  try {
    return withRequestId(await proxy(request, env, requestId, isUnpaidCaller(request, env)), requestId);
  } catch (err) {
    return failedResponse(err, requestId);
  }
}

const proxyRoute = (req: IRequest, env: Env) => proxy(req, env, req.requestId as string, isUnpaidCaller(req, env));

/** Known providers never reach these (handleProviderCall); anything else is an unknown provider's error. */
export const proxyRoutes = [
  ["all", "/:provider/*", proxyRoute],
  ["all", "/:provider", proxyRoute],
] as const;
