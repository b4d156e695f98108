// Public marketplace statistics (M2, PR20): GET /api/stats, no session, JSON. Mounted by
// worker/router.ts. The answer is the same for everyone for a minute: the edge keeps it
// (Cache-Control s-maxage) and this Worker keeps it in the data centre's cache (Workers
// Cache API), so repeated calls within the minute do not reach Postgres.
import type { IRequest } from "itty-router";
import type { Env } from "../../core/env.ts";
import { withDb } from "../../core/postgres.ts";
import { STATS_CACHE_SECONDS } from "../../schema/stats.ts";
import { loadMarketStats } from "./query.ts";

/** One cache entry whatever the query string or headers: a caller cannot make misses on purpose. */
const cacheKey = (request: Request) => new Request(new URL("/api/stats", request.url).toString(), { method: "GET" });

async function getStats(request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> {
  const key = cacheKey(request);
  const cached = await caches.default.match(key);
  if (cached) return cached;
  const stats = await withDb(env, ctx, loadMarketStats);
  const response = new Response(JSON.stringify(stats), {
    headers: {
      "content-type": "application/json",
      "cache-control": `public, max-age=${STATS_CACHE_SECONDS}, s-maxage=${STATS_CACHE_SECONDS}`,
      // Public aggregates, no credentials: any site may show them.
      "access-control-allow-origin": "*",
    },
  });
  // Stored before answering (a miss happens once a minute): the next call finds it.
  await caches.default.put(key, response.clone());
  return response;
}

export const statsRoutes = [
  ["get", "/api/stats", getStats],
] as const;
