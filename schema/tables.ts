// The Postgres side of the data: row shapes of the tables in schema/sql/, valibot schemas
// for what crosses into SQL, the stable error codes our migrations raise, and the helpers
// that run a transaction as a Supabase role (asSeller / asService / asAnon).
//
// Driver: the `postgres` package (tagged-template `sql`). The same helpers serve Node
// (tools, tests) and the Worker (Hyperdrive), so this module imports nothing from Node.
// Driver defaults to remember: int8 (bigint) columns arrive as strings, timestamptz as
// Date, jsonb parsed; arrays need the driver's type fetch (`fetch_types`, on by default).
import * as v from "valibot";
import { isAddress } from "viem";
import type { Sql, TransactionSql } from "postgres";
import { KeyIdSchema, type KeyConfig, type Home, type Region, type Tier } from "./wire.ts";

// ---------------------------------------------------------------------------------------
// Roles and claims, as Supabase's PostgREST sets them

/** The claims PostgREST would put in `request.jwt.claims`: the verified JWT payload. */
export type JwtClaims = { sub?: string; role?: string; aud?: string | string[]; email?: string } & Record<string, unknown>;

export const UuidSchema = v.pipe(v.string(), v.uuid("must be a UUID"));

type AnySql = Sql<any>;
type Tx = TransactionSql<any>;

async function asRole<T>(sql: AnySql, role: "authenticated" | "anon" | "service_role", claims: JwtClaims, fn: (tx: Tx) => Promise<T>): Promise<T> {
  const result = await sql.begin(async (tx) => {
    // Both are transaction-local: they end with this transaction, so a pooled connection
    // never carries one seller's identity into the next query. The role name is one of
    // three literals (a utility statement cannot take a parameter); the claims are bound.
    await tx.unsafe(`set local role ${role}`);
    await tx`select set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
    return fn(tx);
  });
  return result as T;
}

/**
 * Run `fn` in a transaction as the seller, exactly as PostgREST does for a request that
 * carries the seller's JWT: `set local role authenticated` and the claims in
 * `request.jwt.claims`, so `auth.uid()` is the seller and row-level security applies.
 * Pass the verified JWT payload as `claims` when there is one (email, aud, exp ...);
 * `sub` and `role` are always the seller and `authenticated`.
 */
export function asSeller<T>(sql: AnySql, sellerId: string, fn: (tx: Tx) => Promise<T>, claims: JwtClaims = {}): Promise<T> {
  const sub = v.parse(UuidSchema, sellerId);
  return asRole(sql, "authenticated", { aud: "authenticated", ...claims, sub, role: "authenticated" }, fn);
}

/** Run `fn` as service_role: bypasses row-level security, still bound by the grants. */
export function asService<T>(sql: AnySql, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return asRole(sql, "service_role", { role: "service_role" }, fn);
}

/** Run `fn` as anon, the role of a request without a JWT. It can read none of our tables. */
export function asAnon<T>(sql: AnySql, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return asRole(sql, "anon", { role: "anon" }, fn);
}

// ---------------------------------------------------------------------------------------
// Error codes raised by our triggers and functions (SQLSTATE class CN), and the Postgres
// ones callers commonly map.

export const DB_ERRORS = {
  /** earnings_ledger / payouts: a financial record cannot be changed, deleted or truncated. */
  append_only: "CN001",
  /** payouts: KYC is not approved. */
  kyc_required: "CN002",
  /** payouts: the amount exceeds the available balance. */
  insufficient_balance: "CN003",
  /** record_earnings: the flush id was recorded before with different figures. */
  flush_conflict: "CN004",
  /** earnings / payouts for a seller whose account is closed. */
  seller_closed: "CN005",
  /** payouts: no payout preference (or no seller). */
  payout_preference_required: "CN006",
  /** close_seller_account: no open account with that id. */
  seller_not_found: "CN007",
  /** request_payout: Stripe payouts not enabled yet, or the USDC address not confirmed. */
  payout_method_not_ready: "CN008",
  /** request_payout: the amount (rounded down to the method's unit) is below the minimum. */
  below_minimum: "CN009",
  /** payouts: the amount is not a whole number of the method's units (cents, token units). */
  payout_unit: "CN010",
  /** request_payout: the seller already has a payout requested or sent. */
  payout_in_progress: "CN011",
  insufficient_privilege: "42501",
  check_violation: "23514",
  unique_violation: "23505",
  foreign_key_violation: "23503",
  not_null_violation: "23502",
} as const;
export type DbErrorName = keyof typeof DB_ERRORS;

/** The SQLSTATE of an error thrown by the driver, if it is a database error. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** Our name for a database error, e.g. "kyc_required", or undefined. */
export function dbErrorName(error: unknown): DbErrorName | undefined {
  const code = sqlState(error);
  return code === undefined ? undefined : (Object.keys(DB_ERRORS) as DbErrorName[]).find((k) => DB_ERRORS[k] === code);
}

// ---------------------------------------------------------------------------------------
// Money. int8 arrives from the driver as a string; micro-dollars are safe integers.

/** int8 as the driver returns it (a decimal string), or a number/bigint we passed in. */
export type Int8 = string;

export function micros(value: string | number | bigint): number {
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`not a micro-dollar amount: ${String(value)}`);
  return n;
}

// ---------------------------------------------------------------------------------------
// Row shapes (as the driver returns them with default options)

export interface SellerRow {
  id: string;
  email: string | null;
  display_name: string | null;
  github_id: Int8 | null;
  stats_opt_out: boolean;
  created_at: Date;
  deleted_at: Date | null;
}

export interface KeyRow {
  key_id: string;
  seller_id: string;
  provider: string;
  price_micros: Int8;
  route_prices: { route: string; priceMicros: number }[];
  requests_per_minute: number;
  max_concurrent: number;
  daily_budget_micros: Int8 | null;
  monthly_budget_micros: Int8 | null;
  allowed_routes: string[];
  region: Region;
  tier: Tier;
  status: "active" | "paused" | "disabled";
  home: Home;
  created_at: Date;
  updated_at: Date;
}

export const KYC_STATUSES = ["not_started", "pending", "needs_review", "approved", "declined", "expired"] as const;
export type KycStatus = (typeof KYC_STATUSES)[number];
export interface KycRow {
  seller_id: string;
  status: KycStatus;
  updated_at: Date;
}

export const PAYOUT_METHODS = ["stripe_connect", "usdc_tempo"] as const;
export type PayoutMethod = (typeof PAYOUT_METHODS)[number];
export const PAYOUT_SCHEDULES = ["daily", "weekly", "monthly", "manual"] as const;
export type PayoutSchedule = (typeof PAYOUT_SCHEDULES)[number];
export interface PayoutPreferenceRow {
  seller_id: string;
  method: PayoutMethod;
  stripe_account_id: string | null;
  evm_address: string | null;
  /** Stripe's account.updated said payouts are enabled (0011). */
  stripe_payouts_enabled: boolean;
  /** The seller confirmed the USDC address (0011). */
  evm_confirmed_at: Date | null;
  schedule: PayoutSchedule;
  updated_at: Date;
}

/** requested -> sent -> paid | failed (0011); canceled is kept for ops. */
export const PAYOUT_STATUSES = ["requested", "sent", "paid", "failed", "canceled"] as const;
export interface PayoutRow {
  id: string;
  seller_id: string | null;
  pseudonym: string | null;
  method: PayoutMethod;
  destination: string | null;
  amount_micros: Int8;
  status: (typeof PAYOUT_STATUSES)[number];
  external_ref: string | null;
  failure_code: string | null;
  requested_at: Date;
  completed_at: Date | null;
  /** The amount in the rail's unit: cents (Stripe) or TIP-20 base units (0011). */
  amount_units: Int8 | null;
  schedule_key: string | null;
  retry_of: string | null;
  sent_at: Date | null;
}

export interface WebhookEndpointRow {
  id: string;
  seller_id: string;
  url: string;
  events: string[];
  enabled: boolean;
  created_at: Date;
  updated_at: Date;
}

/** service_role only. AES-256-GCM(secret) under the Worker secret named by kid. */
export interface WebhookSigningSecretRow {
  endpoint_id: string;
  kid: string;
  iv: Uint8Array;
  ciphertext: Uint8Array;
  created_at: Date;
}

export interface WebhookDeliveryRow {
  id: Int8;
  endpoint_id: string;
  seller_id: string;
  event_id: string;
  event_type: string;
  attempt: number;
  status_code: number | null;
  error: string | null;
  duration_ms: number | null;
  next_attempt_at: Date | null;
  delivered_at: Date | null;
  created_at: Date;
}

export interface EarningsLedgerRow {
  id: Int8;
  flush_id: string;
  key_id: string;
  seller_id: string | null;
  pseudonym: string | null;
  period_start: Date;
  period_end: Date;
  amount_micros: Int8;
  fee_micros: Int8;
  request_count: number;
  created_at: Date;
}

export interface SellerBalanceRow {
  seller_id: string;
  earned_micros: Int8;
  withdrawn_micros: Int8;
  /** Negative after a dispute clawback that followed a payout: the next payout nets it. */
  available_micros: Int8;
  clawed_back_micros: Int8;
}

export const REQUEST_OUTCOMES = ["served", "refused", "upstream_error", "stream_cut", "client_abort", "undelivered"] as const;
export interface RequestLogRow {
  request_id: string;
  key_id: string;
  provider: string;
  route: string;
  method: string;
  at: Date;
  /** Time to first byte (0013 documents it). */
  latency_ms: number;
  status: number;
  amount_micros: Int8;
  outcome: (typeof REQUEST_OUTCOMES)[number];
  /** Time to the last byte; null when unknown (0013). */
  duration_ms: number | null;
}

/** An optional buyer account (B4): the auth user id, its email, nothing more (0009, 0014). */
export interface BuyerAccountRow {
  id: string;
  email: string;
  created_at: Date;
}

/** A buyer id attached to an account after a proof by its key (0014). */
export interface BuyerAccountIdRow {
  buyer_id_hash: string;
  account_id: string;
  attached_at: Date;
}

/**
 * The buyer account of an auth user, created on first use and kept in step with the
 * verified email, as service_role (as for sellers: the user may insert its own row but not
 * update it). The auth user must exist: for one that is gone this throws the driver's
 * foreign-key error (23503), which callers turn into 401.
 */
export async function upsertBuyerAccount(tx: AnySql | Tx, id: string, email: string): Promise<BuyerAccountRow> {
  const [row] = await tx<BuyerAccountRow[]>`
    insert into public.buyer_accounts (id, email) values (${v.parse(UuidSchema, id)}, ${email})
    on conflict (id) do update set email = excluded.email where public.buyer_accounts.email is distinct from excluded.email
    returning *`;
  if (row) return row;
  const [existing] = await tx<BuyerAccountRow[]>`select * from public.buyer_accounts where id = ${id}`;
  return existing!;
}

// ---------------------------------------------------------------------------------------
// Inputs that cross into SQL. The database re-checks formats with constraints; these give
// clear errors first and do what SQL cannot (EIP-55 checksums).

const MicrosInput = v.pipe(v.number(), v.safeInteger("must be an integer number of micro-dollars"), v.minValue(0));
const RequestId = v.pipe(v.string(), v.regex(/^req_[A-Za-z0-9]{16,64}$/, "request id must be req_ followed by 16-64 letters or digits"));

export const StripeAccountIdSchema = v.pipe(
  v.string(),
  v.regex(/^acct_[A-Za-z0-9]{10,64}$/, "Stripe account id must look like acct_1AbC..."),
);

/** An EVM address with a valid EIP-55 checksum (all-lowercase is accepted and checksummed by the API). */
export const EvmAddressSchema = v.pipe(
  v.string(),
  v.regex(/^0x[0-9A-Fa-f]{40}$/, "wallet address must be 0x followed by 40 hex digits"),
  v.check((a) => a.toLowerCase() !== "0x0000000000000000000000000000000000000000", "wallet address must not be the zero address"),
  v.check((a) => isAddress(a, { strict: true }), "wallet address checksum (EIP-55) does not match"),
);

export const PayoutPreferenceSchema = v.variant("method", [
  v.strictObject({ method: v.literal("stripe_connect"), stripeAccountId: StripeAccountIdSchema }),
  v.strictObject({ method: v.literal("usdc_tempo"), evmAddress: EvmAddressSchema }),
]);
export type PayoutPreferenceInput = v.InferOutput<typeof PayoutPreferenceSchema>;

/** A seller's own profile as GET /api/me answers it (the dashboard and the CLI read it). */
export interface SellerProfile {
  id: string;
  email: string | null;
  displayName: string | null;
  githubId: string | null;
  statsOptOut: boolean;
  createdAt: string;
  kyc: { status: KycStatus; updatedAt: string | null };
}

export const SellerProfilePatchSchema = v.strictObject({
  displayName: v.optional(
    v.nullable(v.pipe(v.string(), v.trim(), v.minLength(1), v.maxLength(80), v.regex(/^[^\p{Cc}]*$/u, "display name must not contain control characters"))),
  ),
  statsOptOut: v.optional(v.boolean()),
});

/** One earnings flush from a key object (the alarm's accumulator). */
export const EarningsFlushSchema = v.pipe(
  v.strictObject({
    flushId: v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.:-]{8,128}$/, "flush id must be 8-128 of [A-Za-z0-9_.:-]")),
    keyId: KeyIdSchema,
    sellerId: UuidSchema,
    periodStart: v.date(),
    periodEnd: v.date(),
    amountMicros: MicrosInput,
    feeMicros: MicrosInput,
    requestCount: v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(2_147_483_647)),
  }),
  v.check((f) => f.periodEnd >= f.periodStart, "period must not end before it starts"),
  v.check((f) => f.feeMicros <= f.amountMicros, "fee cannot exceed the amount"),
);
export type EarningsFlush = v.InferOutput<typeof EarningsFlushSchema>;

/** Record a flush idempotently: true if recorded now, false if it already was. Run as service_role. */
export async function recordEarnings(tx: AnySql | Tx, flush: EarningsFlush): Promise<boolean> {
  const f = v.parse(EarningsFlushSchema, flush);
  const [row] = await tx<{ recorded: boolean }[]>`
    select public.record_earnings(${f.flushId}, ${f.keyId}, ${f.sellerId}, ${f.periodStart}, ${f.periodEnd},
                                  ${f.amountMicros}, ${f.feeMicros}, ${f.requestCount}) as recorded`;
  return row!.recorded;
}

export const RequestLogEntrySchema = v.strictObject({
  requestId: RequestId,
  keyId: KeyIdSchema,
  provider: v.pipe(v.string(), v.regex(/^[a-z][a-z0-9-]{1,31}$/)),
  route: v.pipe(v.string(), v.maxLength(512), v.regex(/^\/[^?#\s]*$/, "route is a path without query string")),
  method: v.picklist(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
  at: v.date(),
  latencyMs: v.pipe(v.number(), v.safeInteger(), v.minValue(0)),
  durationMs: v.nullable(v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(2_147_483_647))),
  status: v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(599)),
  amountMicros: MicrosInput,
  outcome: v.picklist(REQUEST_OUTCOMES),
});

// ---------------------------------------------------------------------------------------
// Key configuration <-> keys row

/** The insertable columns of a keys row for a validated KeyConfig (schema/wire.ts). */
export function keyConfigToRow(keyId: string, sellerId: string, home: Home, config: KeyConfig) {
  return {
    key_id: keyId,
    seller_id: sellerId,
    provider: config.provider,
    price_micros: config.priceMicros,
    route_prices: config.routePrices,
    requests_per_minute: config.requestsPerMinute,
    max_concurrent: config.maxConcurrent,
    daily_budget_micros: config.dailyBudgetMicros,
    monthly_budget_micros: config.monthlyBudgetMicros,
    allowed_routes: config.allowedRoutes,
    region: config.region,
    tier: config.tier,
    status: config.status,
    home,
  };
}

/** A keys row back to the wire KeyConfig (a status of "disabled" reads as "paused"). */
export function rowToKeyConfig(row: KeyRow): KeyConfig {
  return {
    provider: row.provider as KeyConfig["provider"],
    priceMicros: micros(row.price_micros),
    routePrices: row.route_prices,
    requestsPerMinute: row.requests_per_minute,
    maxConcurrent: row.max_concurrent,
    dailyBudgetMicros: row.daily_budget_micros === null ? null : micros(row.daily_budget_micros),
    monthlyBudgetMicros: row.monthly_budget_micros === null ? null : micros(row.monthly_budget_micros),
    allowedRoutes: row.allowed_routes,
    region: row.region,
    tier: row.tier,
    status: row.status === "active" ? "active" : "paused",
  };
}
