// Production is the default; development is opted into (M6). wrangler.toml describes
// production and sets none of the settings below. `npm start`, the tests and the bench
// opt into development with CN2_DEV = "1", and only then are the development conveniences
// honoured: free credit, the local sign-in and its keys, pinned JWKS, http and loopback
// webhook receivers, and other hosts for the providers, Stripe, Persona and Tinybird (which
// would send a seller's credential, the Stripe secret or the request metadata elsewhere).
//
// A development setting found in production is never silently ignored either: the Worker
// refuses every request with 503 `misconfigured`, naming the settings (never their
// values), and logs the same, until the setting is removed. So a forgotten variable
// cannot open the marketplace, and cannot go unnoticed.
import type { Env } from "./env.ts";

/** Settings that only development may set, and why each is dangerous in production. */
export const DEV_SETTINGS = {
  DEV_FAUCET: "gives free credit",
  AUTH_DEV_SIGNING_KEY: "signs sessions without Supabase",
  AUTH_JWKS: "trusts session keys other than Supabase's",
  DEV_WEBHOOKS_ALLOW_HTTP: "lets webhooks reach http and loopback receivers",
  UPSTREAM_BASE_URLS: "sends seller credentials to other hosts",
  STRIPE_API_BASE: "sends the Stripe secret to another host",
  PERSONA_API_BASE: "sends the Persona key to another host",
  TINYBIRD_API_BASE: "sends the Tinybird token and request metadata to another host",
} as const;
export type DevSetting = keyof typeof DEV_SETTINGS;
const NAMES = Object.keys(DEV_SETTINGS) as DevSetting[];

type EnvLike = Partial<Record<DevSetting | "CN2_DEV", string | undefined>>;

export const isDevelopment = (env: EnvLike | Env): boolean => (env as EnvLike).CN2_DEV === "1";

/** Whether a setting counts as set: anything but empty (and an empty JSON map for the upstreams). */
const isSet = (name: DevSetting, value: string | undefined) => value !== undefined && value.trim() !== "" && !(name === "UPSTREAM_BASE_URLS" && value.trim() === "{}");

/** A development setting's value, in development only; production never sees one. */
export function devSetting(env: EnvLike | Env, name: DevSetting): string | undefined {
  const value = (env as EnvLike)[name];
  return isDevelopment(env) && isSet(name, value) ? value : undefined;
}

/** The development settings present although this is production (empty when all is well). */
export function devSettingsInProduction(env: EnvLike | Env): DevSetting[] {
  if (isDevelopment(env)) return [];
  const e = env as EnvLike;
  return NAMES.filter((name) => isSet(name, e[name]));
}

/** Why this Worker refuses to serve, or null: one human sentence, names only, never values. */
export function misconfiguration(env: EnvLike | Env): string | null {
  const found = devSettingsInProduction(env);
  if (found.length === 0) return null;
  const what = found.map((name) => `${name} (${DEV_SETTINGS[name]})`).join(", ");
  return `development settings are set in production: ${what}. Remove them (wrangler.toml [vars] or wrangler secret delete), or set CN2_DEV=1 only outside production.`;
}
