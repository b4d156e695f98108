// The Stripe client of this deployment and the shapes its webhook shares, used by card
// top-ups (worker/payments/) and payouts (worker/payouts/) alike: the `stripe` package,
// whose fetch HTTP client runs in a Worker. The API base is the production one; only
// development (core/environment.ts) may point the client elsewhere (the tests' fake Stripe).
import Stripe from "stripe";
import * as v from "valibot";
import type { Env } from "./env.ts";
import { devSetting } from "./environment.ts";

/**
 * The Stripe client of this deployment, or null without STRIPE_SECRET_KEY. One per isolate
 * and key: the client holds no per-request state.
 */
let cached: { key: string; base: string; client: Stripe } | null = null;
export function stripeClient(env: Pick<Env, "STRIPE_SECRET_KEY" | "STRIPE_API_BASE" | "CN2_DEV">): Stripe | null {
  const key = env.STRIPE_SECRET_KEY;
  if (!key) return null;
  // Another host (the tests' fake Stripe) in development only (core/environment.ts).
  const base = devSetting(env, "STRIPE_API_BASE") ?? "https://api.stripe.com";
  if (cached && cached.key === key && cached.base === base) return cached.client;
  const url = new URL(base);
  const client = new Stripe(key, {
    httpClient: Stripe.createFetchHttpClient(),
    host: url.hostname,
    port: url.port || (url.protocol === "http:" ? 80 : 443),
    protocol: url.protocol === "http:" ? "http" : "https",
    // Retries reuse the request's idempotency key (ours, or the one the client adds).
    maxNetworkRetries: 2,
    timeout: 20_000,
    telemetry: false,
  });
  cached = { key, base, client };
  return client;
}

/** A Stripe endpoint's refusal, in the API's one error shape (code, message, the request id). */
export function problem(code: string, message: string, status: number, requestId?: string): Response {
  return new Response(JSON.stringify({ error: { code, message }, ...(requestId ? { requestId } : {}) }), { status, headers: { "content-type": "application/json" } });
}

/** Stripe's webhook acknowledgement. */
export const ack = (extra: Record<string, unknown>) => new Response(JSON.stringify({ received: true, ...extra }), { status: 200, headers: { "content-type": "application/json" } });

/** The envelope every Stripe event has; each handler parses its own object. */
export const EventSchema = v.looseObject({
  id: v.pipe(v.string(), v.maxLength(255)),
  type: v.pipe(v.string(), v.maxLength(255)),
  data: v.looseObject({ object: v.looseObject({}) }),
});
/** A verified Stripe event, as the webhook handler passes it on. */
export type StripeEventInput = v.InferOutput<typeof EventSchema>;
