// Tinybird's Events API, the production analytics sink (M4): one POST per queue batch,
//
//   POST {TINYBIRD_HOST}/v0/events?name={TINYBIRD_DATASOURCE}&wait=true
//   Authorization: Bearer {TINYBIRD_TOKEN}      (a token with DATASOURCE:APPEND)
//   body: NDJSON, one request's metadata per line
//
// answered `{"successful_rows": N, "quarantined_rows": M}`. `wait=true` makes a 200 mean
// the rows are written (without it a 202 only means accepted), so a failure is retried
// rather than lost. One plain fetch: no SDK is worth a dependency for it.
//
// The host is a production setting (https only). Development may point TINYBIRD_API_BASE
// at a loopback fake (test/fake-tinybird.ts); in production that setting is refused
// (core/environment.ts) and ignored here.
import type { AnalyticsRow } from "../../schema/analytics.ts";
import { devSetting } from "../../core/environment.ts";
import { numberSetting } from "../../core/settings.ts";

export interface TinybirdEnv {
  TINYBIRD_TOKEN?: string;
  TINYBIRD_HOST?: string;
  TINYBIRD_DATASOURCE?: string;
  TINYBIRD_API_BASE?: string;
  ANALYTICS_TIMEOUT_MS?: string;
  CN2_DEV?: string;
}

export const DEFAULT_TINYBIRD_HOST = "https://api.tinybird.co";
export const DEFAULT_DATASOURCE = "cn2_requests";
const DEFAULT_TIMEOUT_MS = 10_000;

/** Why a batch did not reach the sink; `retryAfterSeconds` when the sink said when to come back. */
export class SinkError extends Error {
  override readonly name = "SinkError";
  readonly reason: string;
  readonly retryAfterSeconds: number | undefined;
  constructor(reason: string, retryAfterSeconds?: number) {
    super(reason);
    this.reason = reason;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** The API base the token is sent to: the dev override in development only, else TINYBIRD_HOST (https). */
export function tinybirdBase(env: TinybirdEnv): string {
  const override = devSetting(env, "TINYBIRD_API_BASE");
  if (override) return override.replace(/\/+$/, "");
  const host = (env.TINYBIRD_HOST ?? "").trim() || DEFAULT_TINYBIRD_HOST;
  let url: URL;
  try {
    url = new URL(host);
  } catch {
    throw new SinkError("tinybird_host_invalid");
  }
  // The token never travels in the clear.
  if (url.protocol !== "https:") throw new SinkError("tinybird_host_not_https");
  return url.origin;
}

/** The data source's name (Tinybird: letters, digits, underscores). */
export function datasource(env: TinybirdEnv): string {
  const name = (env.TINYBIRD_DATASOURCE ?? "").trim() || DEFAULT_DATASOURCE;
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(name)) throw new SinkError("tinybird_datasource_invalid");
  return name;
}

/** ClickHouse's DateTime64(3) text form, in UTC: 2026-12-02 03:04:05.678. */
export const clickhouseTime = (ms: number) => new Date(ms).toISOString().replace("T", " ").slice(0, 23);

/** The NDJSON body: one line per row, `at` as DateTime64(3) text. */
export function ndjson(rows: AnalyticsRow[]): string {
  let out = "";
  for (const r of rows) out += JSON.stringify({ ...r, at: clickhouseTime(r.at) }) + "\n";
  return out;
}

/** Post one batch; resolves with Tinybird's counts, or throws a SinkError (retry). */
export async function postEvents(env: TinybirdEnv, rows: AnalyticsRow[]): Promise<{ successful: number; quarantined: number }> {
  const token = env.TINYBIRD_TOKEN?.trim();
  if (!token) throw new SinkError("tinybird_token_missing");
  const url = `${tinybirdBase(env)}/v0/events?name=${encodeURIComponent(datasource(env))}&wait=true`;
  const signal = AbortSignal.timeout(numberSetting(env.ANALYTICS_TIMEOUT_MS, DEFAULT_TIMEOUT_MS) || DEFAULT_TIMEOUT_MS);
  let res: Response;
  let text: string;
  try {
    res = await fetch(url, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/x-ndjson" }, body: ndjson(rows), signal, redirect: "manual" });
    text = await res.text();
  } catch (error) {
    throw new SinkError(error instanceof Error && (error.name === "TimeoutError" || error.name === "AbortError") ? "tinybird_timeout" : "tinybird_unreachable");
  }
  if (res.status === 429) {
    const after = Number(res.headers.get("retry-after"));
    throw new SinkError("tinybird_429", Number.isFinite(after) && after > 0 ? Math.ceil(after) : undefined);
  }
  if (res.status !== 200 && res.status !== 202) throw new SinkError(`tinybird_${res.status}`);
  let counts: { successful_rows?: unknown; quarantined_rows?: unknown } = {};
  try {
    counts = JSON.parse(text) as typeof counts;
  } catch {
    // An answer without counts still accepted the rows.
  }
  return {
    successful: typeof counts.successful_rows === "number" ? counts.successful_rows : rows.length,
    quarantined: typeof counts.quarantined_rows === "number" ? counts.quarantined_rows : 0,
  };
}
