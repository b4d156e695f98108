// Shapes that cross a boundary (HTTP, RPC, KV), shared by the Worker, the objects,
// the CLI tools and the dashboard. Every input is parsed with these before use.
import * as v from "valibot";
import { PROVIDER_IDS } from "./providers.ts";

export const TIERS = ["standard", "premium", "economy"] as const;
export type Tier = (typeof TIERS)[number];
export const REGIONS = ["eu", "us", "asia", "global"] as const;
export type Region = (typeof REGIONS)[number];

export const ProviderId = v.picklist(PROVIDER_IDS, "unknown provider");
export const TierSchema = v.picklist(TIERS, "tier must be standard, premium or economy");
export const RegionSchema = v.picklist(REGIONS, "region must be eu, us, asia or global");

/** Money is integer micro-dollars (1 USD = 1_000_000) everywhere: never floats. */
export const Micros = v.pipe(v.number(), v.safeInteger("must be an integer number of micro-dollars"), v.minValue(0));

/** "METHOD /path" with `*` for one path segment's characters and `**` for any suffix. */
export const RoutePattern = v.pipe(
  v.string(),
  v.maxLength(200),
  v.regex(/^(GET|POST|PUT|PATCH|DELETE|\*) \/[A-Za-z0-9_.:\-/*{}]*$/, 'route must look like "POST /v1/chat/completions"'),
);

export const KeyIdSchema = v.pipe(v.string(), v.regex(/^k_[a-z0-9]{12,32}$/, "key id must be k_ followed by 12-32 lowercase letters or digits"));
/** A seller id is the seller's auth user id (Supabase `sub`), a UUID; lowercase as Postgres prints it. */
export const SellerIdSchema = v.pipe(v.string(), v.regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, "seller id must be a lowercase UUID (your account id: GET /api/me)"));

export const KEY_STATUSES = ["active", "paused"] as const;

/** A key's configuration as the seller sets it (S3). Never contains the credential. */
/** A price per request: at least one micro-dollar, so no key is ever an open proxy. */
export const Price = v.pipe(Micros, v.minValue(1, "a price must be at least 1 micro-dollar"));

export const KeyConfigSchema = v.strictObject({
  provider: ProviderId,
  priceMicros: Price,
  /** Per-route prices overriding priceMicros; first matching pattern wins. */
  routePrices: v.optional(v.array(v.strictObject({ route: RoutePattern, priceMicros: Price })), []),
  requestsPerMinute: v.pipe(v.number(), v.safeInteger(), v.minValue(1), v.maxValue(100_000)),
  maxConcurrent: v.pipe(v.number(), v.safeInteger(), v.minValue(1), v.maxValue(10_000)),
  /** Cap on what the key may be charged for per UTC day / month; null = none. */
  dailyBudgetMicros: v.optional(v.nullable(Micros), null),
  monthlyBudgetMicros: v.optional(v.nullable(Micros), null),
  /** Empty = the provider's default allow-list. */
  allowedRoutes: v.optional(v.pipe(v.array(RoutePattern), v.maxLength(100)), []),
  region: RegionSchema,
  tier: v.optional(TierSchema, "standard"),
  status: v.optional(v.picklist(KEY_STATUSES), "active"),
});
export type KeyConfig = v.InferOutput<typeof KeyConfigSchema>;
export type KeyConfigInput = v.InferInput<typeof KeyConfigSchema>;

/** A partial edit: provider cannot change (the credential belongs to one provider). */
export const KeyConfigPatchSchema = v.partial(v.omit(KeyConfigSchema, ["provider"]));
export type KeyConfigPatch = v.InferOutput<typeof KeyConfigPatchSchema>;

/** The vault envelope (S2): ECDH P-256 + HKDF-SHA-256 -> AES-256-GCM. base64url fields. */
export const EnvelopeSchema = v.strictObject({
  v: v.literal(1),
  kid: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{1,64}$/)),
  epk: v.looseObject({ kty: v.literal("EC"), crv: v.literal("P-256"), x: v.string(), y: v.string() }),
  salt: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{22}$/, "salt must be 16 bytes base64url")),
  iv: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]{16}$/, "iv must be 12 bytes base64url")),
  ct: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]+$/), v.maxLength(8192)),
});
export type Envelope = v.InferOutput<typeof EnvelopeSchema>;

/**
 * POST /api/keys. The seller is the signed-in one; `sellerId`, when sent, must be that
 * same id (the envelope's AAD binds it, so a client states what it sealed to).
 */
export const CreateKeySchema = v.strictObject({
  keyId: KeyIdSchema,
  sellerId: v.optional(SellerIdSchema),
  envelope: EnvelopeSchema,
  config: KeyConfigSchema,
});
export type CreateKeyInput = v.InferInput<typeof CreateKeySchema>;

export const HEALTH_STATES = ["healthy", "cooling", "disabled"] as const;
export type HealthState = (typeof HEALTH_STATES)[number];

/** One key as a pool snapshot lists it: everything the router needs to choose. */
export interface PoolMember {
  keyId: string;
  /** Where the key's object lives: EU keys are created in the EU jurisdiction. */
  home: Home;
  region: Region;
  tier: Tier;
  priceMicros: number;
  routePrices: readonly { route: string; priceMicros: number }[];
  /** 0..1, higher is better (EWMA success with a latency penalty). */
  health: number;
  state: HealthState;
  /** ms since epoch until which a cooling key should not be tried (0 = none). */
  coolingUntil: number;
  latencyMs: number;
}

export interface PoolSnapshot {
  provider: string;
  region: Region;
  tier: Tier;
  updatedAt: number;
  members: PoolMember[];
}

export type Home = "eu" | "default";

/** A key as the seller API shows it: configuration and health, never the credential. */
export interface KeyView {
  keyId: string;
  sellerId: string;
  home: Home;
  config: KeyConfig;
  health: { state: HealthState; score: number; latencyMs: number; coolingUntil: number; reason: string | null };
  createdAt: number;
  /** The tier the key serves in: its config's, except premium, served in only while the record earns it. Null if the key object did not answer. */
  servingTier: Tier | null;
  /** The last day (or the key's life, if shorter): calls, the share that succeeded, the share of time in service. Null if the key object did not answer. */
  trackRecord: { calls: number; successRate: number; uptime: number; observedMs: number } | null;
}

/** KeyView plus live internals, for operators (M3). */
export interface KeyInspection extends KeyView {
  limiter: { windowCount: number; requestsPerMinute: number };
  inFlight: number;
  maxConcurrent: number;
  spend: { dayMicros: number; monthMicros: number };
  /** Not yet flushed to the ledger: the seller's share and the marketplace fee. */
  earnings: { unflushedMicros: number; feeMicros: number; servedCount: number };
  bufferedMetadata: number;
  /** Flushed metadata rows waiting to be enqueued for the analytics sink (objects/seller-key/analytics-outbox.ts). */
  analyticsOutbox?: number;
  credentialLoaded: boolean;
  events: { at: number; kind: string; detail: string }[];
}

/** One served or failed request as we record it (P5): no bodies, no buyer data. */
export interface RequestMeta {
  requestId: string;
  at: number;
  method: string;
  route: string;
  status: number;
  /** Time to the upstream's first byte (its response headers), ms. */
  latencyMs: number;
  /** Time to the answer's last byte, ms, from the same start; null until known (a stream still open) or when there is none (a failure). */
  durationMs: number | null;
  amountMicros: number;
  /** `undelivered`: served by the key, but broken off before its first byte reached the router (B6): not charged. */
  outcome: "served" | "refused" | "upstream_error" | "stream_cut" | "client_abort" | "undelivered";
}

export const poolName = (provider: string, region: Region, tier: Tier) => `${provider}:${region}:${tier}`;

/** Stable refusal/error codes. The router fails over on the retryable ones. */
export const ERROR_CODES = {
  // buyer input
  unknown_provider: 404,
  not_found: 404,
  invalid_tier: 400,
  invalid_max_price: 400,
  invalid_request: 400,
  invalid_json: 400,
  headers_too_large: 431,
  body_too_large: 413,
  route_not_allowed: 403,
  unauthorized: 401,
  csrf_failed: 403,
  // routing
  no_key_available: 503,
  no_eu_key_available: 503,
  price_cap_too_low: 422,
  // per-key refusals (retryable on another key)
  rate_limited: 429,
  concurrency_limit: 429,
  budget_exhausted: 429,
  key_disabled: 503,
  key_paused: 503,
  key_cooling: 503,
  key_not_found: 404,
  price_above_paid: 409,
  upstream_error: 502,
  upstream_timeout: 504,
  // seller/ops API
  key_exists: 409,
  /** A new key's id is malformed or was not made for the calling seller (core/key-id.ts): one answer for both. */
  invalid_key_id: 400,
  vault_key_unknown: 400,
  decrypt_failed: 422,
  internal_error: 500,
  // a development setting in production: the Worker refuses to serve (core/environment.ts)
  misconfigured: 503,
  // plain HTTP in production (PR22)
  https_required: 403,
  // disputes (P7, worker/payments/disputes.ts)
  invalid_receipt: 400,
  payment_not_found: 404,
  already_refunded: 409,
  dispute_not_found: 404,
  dispute_resolved: 409,
  too_many_disputes: 429,
  // seller accounts (worker/seller/sign-in.ts, core/postgres.ts, the seller API)
  auth_not_configured: 503,
  account_closed: 410,
  forbidden: 403,
  conflict: 409,
  db_unavailable: 503,
  /** A key could not report its tab draws to a wallet (docs/payments.md, "Tabs"): it is not removed. */
  wallet_unavailable: 503,
  kyc_required: 403,
  kyc_unavailable: 503,
  insufficient_balance: 409,
  payout_method_required: 409,
  payout_method_not_ready: 409,
  below_minimum: 409,
  payout_in_progress: 409,
  payout_not_found: 404,
  payout_not_retryable: 409,
  payouts_unavailable: 503,
  stripe_error: 502,
  invalid_signature: 401,
  // seller webhooks (worker/webhooks/)
  webhook_url_refused: 400,
  webhook_not_found: 404,
  // optional buyer accounts (B4, worker/buyer-account/)
  buyer_account_not_found: 404,
  buyer_id_not_attached: 404,
  buyer_id_attached_elsewhere: 409,
  too_many_buyer_ids: 409,
  /** The attach proof is missing, malformed, or its signature does not verify. */
  proof_invalid: 403,
  /** The attach proof's time is not within ±300 s of ours. */
  proof_expired: 403,
  /** The attach proof names another account: a signature made for one account attaches to no other. */
  proof_wrong_account: 403,
  /** The attach proof (its nonce) was used before. */
  proof_replayed: 409,
} as const;
export type ErrorCode = keyof typeof ERROR_CODES;

/** Refusals after which the router may try another key (no byte has reached the buyer). */
export const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  "rate_limited", "concurrency_limit", "budget_exhausted", "key_disabled", "key_paused",
  "key_cooling", "key_not_found", "price_above_paid", "upstream_error", "upstream_timeout", "route_not_allowed", "decrypt_failed",
]);

export interface ErrorBody {
  error: { code: ErrorCode; message: string };
  requestId?: string;
}

// The cn2 header names live in ./headers.ts (the buyer package ships them without valibot).
export { H } from "./headers.ts";
