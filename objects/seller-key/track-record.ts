// A key's track record over the last day (P2): its upstream calls, the ones that failed
// for reasons of the key's own (5xx, timeouts, unreachable, cut streams, 401/403, 429),
// and how long it was out of service (cooling or disabled). Premium is earned from this
// record and lost with it. Pure functions over a small value the key object persists,
// like health.ts; hourly buckets keep it to at most 25 entries.
import type { Tier } from "../../schema/wire.ts";

export const WINDOW_MS = 24 * 3_600_000;
const BUCKET_MS = 3_600_000;

export interface Bucket {
  /** Start of the hour (epoch ms). */
  start: number;
  calls: number;
  failures: number;
  /** Out-of-service time that ended in this hour. */
  downMs: number;
}

export interface TrackRecord {
  buckets: Bucket[];
  /** Out of service since (epoch ms), or null while in service. */
  downSince: number | null;
}

export interface TrackSummary {
  /** Upstream calls in the window. */
  calls: number;
  /** Share of those calls that did not fail for the key's own reasons (0 with no calls). */
  successRate: number;
  /** Share of the observed window the key was in service. */
  uptime: number;
  /** The window observed: a day, or the key's age if younger. */
  observedMs: number;
}

/** To earn premium a key needs at least `minCalls` in the window and both bars; to keep it, the lower ones. */
export const PREMIUM_BARS = {
  earn: { successRate: 0.99, uptime: 0.995 },
  keep: { successRate: 0.98, uptime: 0.99 },
} as const;

export const emptyTrackRecord = (): TrackRecord => ({ buckets: [], downSince: null });

function bucketAt(t: TrackRecord, now: number): Bucket {
  const start = now - (now % BUCKET_MS);
  let last = t.buckets[t.buckets.length - 1];
  if (!last || last.start !== start) {
    last = { start, calls: 0, failures: 0, downMs: 0 };
    t.buckets.push(last);
    while (t.buckets.length > 0 && !inWindow(t.buckets[0]!, now)) t.buckets.shift();
  }
  return last;
}

const inWindow = (b: Bucket, now: number) => b.start + BUCKET_MS > now - WINDOW_MS;

/** One upstream call's outcome (client aborts and buyer errors are not the key's: not recorded as failures). */
export function recordCall(t: TrackRecord, now: number, ok: boolean): void {
  const b = bucketAt(t, now);
  b.calls++;
  if (!ok) b.failures++;
}

/** A call counted as answered turned out to fail (its stream was cut). */
export function recordLateFailure(t: TrackRecord, now: number): void {
  bucketAt(t, now).failures++;
}

export function wentDown(t: TrackRecord, now: number): void {
  t.downSince ??= now;
}

export function cameUp(t: TrackRecord, now: number): void {
  if (t.downSince === null) return;
  bucketAt(t, now).downMs += Math.max(0, now - t.downSince);
  t.downSince = null;
}

/** The record over the last day (or since `since`, the key's creation, if later). */
export function summarize(t: TrackRecord, now: number, since: number): TrackSummary {
  const from = Math.max(now - WINDOW_MS, since);
  let calls = 0;
  let failures = 0;
  let downMs = 0;
  for (const b of t.buckets) {
    if (!inWindow(b, now)) continue;
    calls += b.calls;
    failures += b.failures;
    downMs += b.downMs;
  }
  if (t.downSince !== null) downMs += Math.max(0, now - Math.max(t.downSince, from));
  const observedMs = Math.max(1, now - from);
  return {
    calls,
    successRate: calls > 0 ? Math.max(0, calls - failures) / calls : 0,
    uptime: Math.min(1, Math.max(0, 1 - downMs / observedMs)),
    observedMs,
  };
}

/**
 * The tier a key serves in. Sellers choose economy or standard outright; premium is only
 * asked for: the key serves there while its record earns it (then keeps it above the lower
 * bars, so it does not flap), and in standard otherwise.
 */
export function servingTier(asked: Tier, current: Tier, s: TrackSummary, minCalls: number): Tier {
  if (asked !== "premium") return asked;
  const bar = current === "premium" ? PREMIUM_BARS.keep : PREMIUM_BARS.earn;
  return s.calls >= minCalls && s.successRate >= bar.successRate && s.uptime >= bar.uptime ? "premium" : "standard";
}
