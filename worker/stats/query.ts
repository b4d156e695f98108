// The public statistics from Postgres (M2, PR20): public.market_stats() called as anon (the
// role of a request without a session, which can read no table: only that function's
// aggregates), shaped into the answer schema/stats.ts defines. The suppression and opt-out
// rules live in the function itself (schema/sql/0013_market_stats.sql).
import * as v from "valibot";
import { asAnon } from "../../schema/tables.ts";
import { MarketStatsSchema, MIN_SELLERS, type MarketStats, type StatsCell, type StatsWindow } from "../../schema/stats.ts";
import type { Db } from "../../core/postgres.ts";

/** One row of public.market_stats(): a cell's figures repeated on each of its windows. int8 arrives as a string. */
interface MarketStatsRow {
  provider: string;
  region: string;
  tier: string;
  suppressed: boolean;
  active_keys: number | null;
  price_min_micros: string | null;
  price_median_micros: string | null;
  price_max_micros: string | null;
  window_name: string;
  window_suppressed: boolean;
  requests: string | null;
  success_rate: number | null;
  uptime: number | null;
  latency_p50_ms: number | null;
  latency_p90_ms: number | null;
  latency_p99_ms: number | null;
  ttfb_p50_ms: number | null;
  ttfb_p90_ms: number | null;
  ttfb_p99_ms: number | null;
}

const num = (x: string | number | null) => (x === null ? null : Number(x));

function windowOf(r: MarketStatsRow): StatsWindow {
  if (r.window_suppressed) {
    return { window: r.window_name as StatsWindow["window"], suppressed: true, requests: null, successRate: null, uptime: null, latencyMs: null, ttfbMs: null };
  }
  return {
    window: r.window_name as StatsWindow["window"],
    suppressed: false,
    requests: num(r.requests),
    successRate: r.success_rate,
    uptime: r.uptime,
    latencyMs: { p50: r.latency_p50_ms, p90: r.latency_p90_ms, p99: r.latency_p99_ms },
    ttfbMs: { p50: r.ttfb_p50_ms, p90: r.ttfb_p90_ms, p99: r.ttfb_p99_ms },
  };
}

/** The statistics now. The answer is checked against its schema: a field the schema does not name never goes out. */
export async function loadMarketStats(sql: Db): Promise<MarketStats> {
  const rows = await asAnon(sql, (tx) => tx<MarketStatsRow[]>`select * from public.market_stats()`);
  const cells: StatsCell[] = [];
  let cell: StatsCell | undefined;
  for (const r of rows) {
    if (!cell || cell.provider !== r.provider || cell.region !== r.region || cell.tier !== r.tier) {
      cell = {
        provider: r.provider as StatsCell["provider"],
        region: r.region as StatsCell["region"],
        tier: r.tier as StatsCell["tier"],
        suppressed: r.suppressed,
        activeKeys: r.suppressed ? null : r.active_keys,
        priceMicros: r.suppressed || r.price_min_micros === null
          ? null
          : { min: num(r.price_min_micros)!, median: num(r.price_median_micros)!, max: num(r.price_max_micros)! },
        windows: [],
      };
      cells.push(cell);
    }
    cell.windows.push(windowOf(r));
  }
  return v.parse(MarketStatsSchema, { generatedAt: new Date().toISOString(), minSellers: MIN_SELLERS, cells });
}
