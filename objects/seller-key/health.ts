// A key's health (P4), as a pure state machine so it is easy to test and to persist.
// healthy -> cooling on a 429 (for Retry-After) or after repeated failures (circuit
// open, exponential backoff); cooling -> healthy after one successful half-open probe;
// any -> disabled on an upstream 401/403 (the seller must fix the key).
import type { HealthState } from "../../schema/wire.ts";
import type { SellerEventInput, WebhookEventType } from "../../core/events.ts";

export interface Health {
  state: HealthState;
  /** EWMA of success (1) and failure (0). */
  success: number;
  /** EWMA of time to first byte, ms. */
  latencyMs: number;
  coolingUntil: number;
  consecutiveFailures: number;
  /** Next circuit-open duration; doubles on each failed probe. */
  backoffMs: number;
  reason: string | null;
}

export type FailureKind = "server_error" | "timeout" | "network" | "stream_cut";

const ALPHA = 0.2;
const FAILURES_TO_OPEN = 3;
const BACKOFF_MIN_MS = 5_000;
const BACKOFF_MAX_MS = 5 * 60_000;
const RETRY_AFTER_DEFAULT_MS = 30_000;
const RETRY_AFTER_MAX_MS = 60 * 60_000;

export const initialHealth = (): Health => ({
  state: "healthy",
  success: 1,
  latencyMs: 0,
  coolingUntil: 0,
  consecutiveFailures: 0,
  backoffMs: BACKOFF_MIN_MS,
  reason: null,
});

/** 0..1: success rate, discounted for slow keys (2 s TTFB halves the score). */
export function score(h: Health): number {
  if (h.state === "disabled") return 0;
  return h.success / (1 + h.latencyMs / 2_000);
}

/** Whether a request may be tried now; a cooling key past its time is half-open. */
export function admits(h: Health, now: number): "yes" | "probe" | "no" {
  if (h.state === "healthy") return "yes";
  if (h.state === "cooling" && now >= h.coolingUntil) return "probe";
  return "no";
}

export function onSuccess(h: Health, latencyMs: number): Health {
  return {
    ...h,
    state: h.state === "disabled" ? "disabled" : "healthy",
    success: h.success + ALPHA * (1 - h.success),
    latencyMs: h.latencyMs === 0 ? latencyMs : h.latencyMs + ALPHA * (latencyMs - h.latencyMs),
    coolingUntil: h.state === "disabled" ? h.coolingUntil : 0,
    consecutiveFailures: 0,
    backoffMs: BACKOFF_MIN_MS,
    reason: h.state === "disabled" ? h.reason : null,
  };
}

export function onFailure(h: Health, kind: FailureKind, now: number, wasProbe: boolean): Health {
  const next: Health = { ...h, success: h.success * (1 - ALPHA), consecutiveFailures: h.consecutiveFailures + 1, reason: kind };
  if (h.state === "disabled") return { ...next, state: "disabled", reason: h.reason };
  if (wasProbe || next.consecutiveFailures >= FAILURES_TO_OPEN) {
    const backoff = wasProbe ? Math.min(h.backoffMs * 2, BACKOFF_MAX_MS) : h.backoffMs;
    return { ...next, state: "cooling", coolingUntil: now + backoff, backoffMs: backoff };
  }
  return next;
}

/** Upstream 429: cool down for Retry-After (seconds or an HTTP date), bounded. */
export function onRateLimited(h: Health, retryAfter: string | null, now: number): Health {
  if (h.state === "disabled") return h;
  return { ...h, state: "cooling", coolingUntil: now + retryAfterMs(retryAfter, now), reason: "upstream_429" };
}

/** Upstream 401/403, an undecryptable credential, or an operator: only the seller revives it. */
export function disabled(h: Health, reason: string): Health {
  return { ...h, state: "disabled", success: 0, reason };
}

/** Seller or operator re-enables a key (after fixing its credential). */
export function reenabled(h: Health): Health {
  return { ...initialHealth(), latencyMs: h.latencyMs };
}

export function retryAfterMs(value: string | null, now: number): number {
  if (!value) return RETRY_AFTER_DEFAULT_MS;
  const seconds = Number(value);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(value) - now;
  if (!Number.isFinite(ms) || ms < 0) return RETRY_AFTER_DEFAULT_MS;
  return Math.min(ms, RETRY_AFTER_MAX_MS);
}

/**
 * The seller event for a SellerKey health event, or null when there is none to send.
 * Only real state transitions notify: a second 429 while cooling, or an operator
 * disabling a key that is already disabled, is not news to the seller.
 *   key.disabled  -> key.disabled        (any state -> disabled: upstream 401/403, undecryptable credential, operator)
 *   key.cooling   -> key.health_changed  (healthy -> cooling: upstream 429 or repeated failures)
 *   key.recovered -> key.recovered       (cooling -> healthy after a probe; disabled -> healthy when re-enabled)
 */
export function keyHealthNotice(kind: string, keyId: string, before: Health, after: Health, detail: string): SellerEventInput | null {
  if (before.state === after.state) return null;
  const type: WebhookEventType | null =
    kind === "key.disabled" ? "key.disabled" : kind === "key.cooling" ? "key.health_changed" : kind === "key.recovered" ? "key.recovered" : null;
  if (type === null) return null;
  return {
    type,
    keyId,
    data: {
      state: after.state,
      previousState: before.state,
      reason: after.reason ?? (type === "key.recovered" ? "recovered" : null),
      detail,
      ...(after.state === "cooling" && after.coolingUntil > 0 ? { coolingUntil: new Date(after.coolingUntil).toISOString() } : {}),
    },
  };
}
