// Whether a key takes one more request (P3, P4), as a pure function of what the key
// object holds in memory: paused, health, route allow-list, concurrency, requests per
// minute, price against what the buyer paid, daily and monthly budget, in that order.
// The object calls it synchronously before its first await, so concurrent requests
// cannot both pass a limit that only one of them fits.
import { priceFor, routeAllowed } from "../../schema/routes.ts";
import type { ErrorCode, KeyConfig } from "../../schema/wire.ts";
import { admits, type Health } from "./health.ts";
import { clip } from "../../core/http.ts";

const MINUTE = 60_000;

export interface AdmissionInput {
  config: KeyConfig;
  /** The provider's default routes, used when the key has no allow-list of its own. */
  defaultRoutes: readonly string[];
  health: Health;
  probeInFlight: boolean;
  inFlight: number;
  /** Admissions in the sliding minute before `now`, and the oldest of them. */
  inWindow: number;
  oldestHit: number | undefined;
  /** Budget spent in this UTC day and month, micro-dollars. */
  spentDay: number;
  spentMonth: number;
  /** What the router says the buyer paid (0: an operator's unpaid call). */
  paid: number;
  method: string;
  path: string;
  now: number;
}

export type Admission =
  | { ok: true; price: number; probe: boolean }
  | { ok: false; code: ErrorCode; message: string; retryAfterSeconds?: number };

const refuse = (code: ErrorCode, message: string, retryAfterMs?: number): Admission =>
  retryAfterMs === undefined ? { ok: false, code, message } : { ok: false, code, message, retryAfterSeconds: retryAfterSeconds(retryAfterMs) };

export const retryAfterSeconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

export function admit(a: AdmissionInput): Admission {
  const { config, now } = a;
  if (config.status === "paused") return refuse("key_paused", "key is paused by its seller");
  const verdict = admits(a.health, now);
  if (verdict === "no" || (verdict === "probe" && a.probeInFlight)) {
    return a.health.state === "disabled" ? refuse("key_disabled", "key is disabled") : refuse("key_cooling", "key is cooling down", a.health.coolingUntil - now);
  }
  const routes = config.allowedRoutes.length > 0 ? config.allowedRoutes : a.defaultRoutes;
  if (!routeAllowed(routes, a.method, a.path)) return refuse("route_not_allowed", `${clip(a.method, 16)} ${clip(a.path)} is not allowed on this key`);
  if (a.inFlight >= config.maxConcurrent) return refuse("concurrency_limit", `key serves at most ${config.maxConcurrent} requests at once`);
  if (a.inWindow >= config.requestsPerMinute) {
    return refuse("rate_limited", `key allows ${config.requestsPerMinute} requests per minute`, (a.oldestHit ?? now) + MINUTE - now);
  }
  const price = priceFor(config, a.method, a.path);
  // The router picked this key from a snapshot; if the seller has raised the price since,
  // what the buyer paid no longer covers it: the router tries another key.
  if (a.paid > 0 && price > a.paid) return refuse("price_above_paid", `key now costs ${price}, above the ${a.paid} paid`);
  if (config.dailyBudgetMicros !== null && a.spentDay + price > config.dailyBudgetMicros) return refuse("budget_exhausted", "key's daily budget is spent");
  if (config.monthlyBudgetMicros !== null && a.spentMonth + price > config.monthlyBudgetMicros) return refuse("budget_exhausted", "key's monthly budget is spent");
  return { ok: true, price, probe: verdict === "probe" };
}
