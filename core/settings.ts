// Environment settings parsed once per isolate; a bad value fails loudly, naming the
// variable but never echoing a secret.
import * as v from "valibot";
import type { Env } from "./env.ts";
import { devSetting } from "./environment.ts";

const UpstreamOverrides = v.record(v.string(), v.pipe(v.string(), v.url()));
let overrides: { setting: string | undefined; dev: string | undefined; value: Record<string, string> } | null = null;

/**
 * Other hosts for the providers: development only (core/environment.ts); production has none.
 * Called per proxied request: the cache is keyed by the raw settings, so a hit costs two
 * comparisons and no string work.
 */
export function upstreamOverrides(env: Pick<Env, "UPSTREAM_BASE_URLS" | "CN2_DEV">): Record<string, string> {
  if (overrides && overrides.setting === env.UPSTREAM_BASE_URLS && overrides.dev === env.CN2_DEV) return overrides.value;
  const raw = devSetting(env, "UPSTREAM_BASE_URLS") ?? "{}";
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new Error("UPSTREAM_BASE_URLS is not valid JSON");
  }
  overrides = { setting: env.UPSTREAM_BASE_URLS, dev: env.CN2_DEV, value: v.parse(UpstreamOverrides, parsed) };
  return overrides.value;
}

export const numberSetting = (value: string | undefined, fallback: number) => {
  const n = Number(value);
  return value !== undefined && value !== "" && Number.isFinite(n) && n >= 0 ? n : fallback;
};
