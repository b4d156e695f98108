// The public marketplace statistics (M2, PR20) as GET /api/stats answers them, defined once
// for the Worker (which checks its own answer against it) and the dashboard's public page.
// Aggregates only: no field names or identifies a seller, a key, a buyer or a request.
// The figures come from public.market_stats() (schema/sql/0013_market_stats.sql), which
// also enforces the suppression rules.
import * as v from "valibot";
import { PROVIDER_IDS } from "./providers.ts";
import { REGIONS, TIERS } from "./wire.ts";

/** The time windows, newest first: the last 5 minutes, 30 minutes, day and week. */
export const STATS_WINDOWS = ["5m", "30m", "1d", "7d"] as const;
export type StatsWindowName = (typeof STATS_WINDOWS)[number];

/** A cell or a window with fewer distinct sellers than this shows no figures (PR20). */
export const MIN_SELLERS = 3;
/** How long the answer may be reused, by the edge cache and by browsers. */
export const STATS_CACHE_SECONDS = 60;

const Count = v.pipe(v.number(), v.safeInteger(), v.minValue(0));
const Ms = v.nullable(Count);
const Share = v.nullable(v.pipe(v.number(), v.minValue(0), v.maxValue(1)));

/** p50 / p90 / p99 in whole milliseconds (null: no successful request measured it). */
export const PercentilesSchema = v.strictObject({ p50: Ms, p90: Ms, p99: Ms });

/** One window of one cell. Suppressed: every figure null. */
export const StatsWindowSchema = v.strictObject({
  window: v.picklist(STATS_WINDOWS),
  suppressed: v.boolean(),
  /** Attempts that reached a provider (one per key tried), without those the buyer abandoned. */
  requests: v.nullable(Count),
  /** Share of those answered with a status below 400 and not cut, 0..1. */
  successRate: Share,
  /** OpenRouter's definition: successful / (successful + key or provider failures); 429s count on neither side. */
  uptime: Share,
  /** Time to the answer's last byte. */
  latencyMs: v.nullable(PercentilesSchema),
  /** Time to the provider's first byte (its response headers). */
  ttfbMs: v.nullable(PercentilesSchema),
});

/** One provider / region / tier. Suppressed: every figure null, every window suppressed. */
export const StatsCellSchema = v.strictObject({
  provider: v.picklist(PROVIDER_IDS),
  region: v.picklist(REGIONS),
  /** The tier the keys are listed in (a key listed premium serves in standard until it earns premium). */
  tier: v.picklist(TIERS),
  suppressed: v.boolean(),
  activeKeys: v.nullable(Count),
  /** The keys' base price per request, micro-dollars (per-route prices aside). */
  priceMicros: v.nullable(v.strictObject({ min: Count, median: Count, max: Count })),
  windows: v.array(StatsWindowSchema),
});

export const MarketStatsSchema = v.strictObject({
  /** When the figures were computed (ISO 8601); a cached answer keeps its time. */
  generatedAt: v.pipe(v.string(), v.isoTimestamp()),
  /** The suppression threshold: distinct sellers a cell or window needs to show figures. */
  minSellers: v.literal(MIN_SELLERS),
  cells: v.array(StatsCellSchema),
});

export type Percentiles = v.InferOutput<typeof PercentilesSchema>;
export type StatsWindow = v.InferOutput<typeof StatsWindowSchema>;
export type StatsCell = v.InferOutput<typeof StatsCellSchema>;
export type MarketStats = v.InferOutput<typeof MarketStatsSchema>;
