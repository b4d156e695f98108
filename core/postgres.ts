// Postgres from the Worker and its objects: the `postgres` driver over the Hyperdrive
// binding. Hyperdrive keeps the real connections to the database warm and pooled near
// it; a Worker's own sockets belong to the request (or alarm) that opened them, so each
// request gets one small client, shares it across everything it does, and ends it when
// it is done. Seller-scoped work goes through schema/tables.ts `asSeller` (role
// `authenticated` + the verified claims, as PostgREST sets them), so row-level security
// guards our own API too; service work through `asService`.
import postgres, { type Sql } from "postgres";
import { dbErrorName, sqlState } from "../schema/tables.ts";
import { ApiError } from "./http.ts";

export interface DbEnv {
  /** wrangler.toml [[hyperdrive]]; locally its localConnectionString (PGlite or PostgreSQL). */
  HYPERDRIVE?: Hyperdrive;
}

export type Db = Sql<{}>;

/** Connections one client may open. A request mostly runs its transactions one after another. */
const MAX_CONNECTIONS = 3;

/**
 * A client for one request or one alarm. `prepare: false`: a client lives for one request,
 * so named statements would never be reused, and unnamed ones suit Hyperdrive's
 * transaction pooling (and the embedded PGlite, where every connection shares one backend).
 * `fetch_types` stays on: text[] columns need the array type it fetches.
 */
export function connectDb(env: DbEnv, max = MAX_CONNECTIONS): Db {
  if (!env.HYPERDRIVE) throw new ApiError("db_unavailable", "the database is not configured (HYPERDRIVE binding)");
  return postgres(env.HYPERDRIVE.connectionString, {
    max,
    prepare: false,
    connect_timeout: 10,
    idle_timeout: 5,
    onnotice: () => {},
  });
}

/**
 * Run `fn` with a client that is ended afterwards: in the background when there is an
 * execution context (the response need not wait), else before returning. Database
 * failures become stable API errors (see `toApiError`).
 */
export async function withDb<T>(env: DbEnv, ctx: Pick<ExecutionContext, "waitUntil"> | null, fn: (sql: Db) => Promise<T>): Promise<T> {
  const sql = connectDb(env);
  try {
    return await fn(sql);
  } catch (error) {
    throw toApiError(error);
  } finally {
    const ended = sql.end({ timeout: 5 }).catch(() => {});
    if (ctx) ctx.waitUntil(ended);
    else await ended;
  }
}

/** Driver errors that mean "cannot talk to the database" rather than "the database said no". */
const CONNECTION_ERRORS = new Set(["CONNECTION_CLOSED", "CONNECTION_ENDED", "CONNECTION_DESTROYED", "CONNECT_TIMEOUT", "ECONNREFUSED", "ECONNRESET"]);

/**
 * An error from the database as an ApiError with a stable code: our own SQLSTATEs by
 * name, constraint violations as bad input, anything else as unavailable or internal.
 * Messages never carry the driver's text (it can quote row values).
 */
export function toApiError(error: unknown): unknown {
  if (error instanceof ApiError) return error;
  const name = dbErrorName(error);
  switch (name) {
    case "kyc_required":
      return new ApiError("kyc_required", "payouts are locked until identity verification (KYC) is approved");
    case "insufficient_balance":
      return new ApiError("insufficient_balance", "the amount exceeds the available balance");
    case "payout_preference_required":
      return new ApiError("payout_method_required", "set a payout method first (POST /api/payout/stripe/onboard, or PUT /api/payout with a USDC address)");
    case "payout_method_not_ready":
      return new ApiError("payout_method_not_ready", "the payout method is not ready: finish Stripe onboarding, or confirm the USDC address (POST /api/payout/confirm)");
    case "below_minimum":
      return new ApiError("below_minimum", "the amount available to pay out is below the minimum payout");
    case "payout_unit":
      return new ApiError("invalid_request", "the amount must be a whole number of the payout method's units (cents for Stripe)");
    case "payout_in_progress":
      return new ApiError("payout_in_progress", "a payout is already in progress; wait until it is paid or failed");
    case "seller_closed":
    case "seller_not_found":
      return new ApiError("account_closed", "this seller account is closed");
    case "check_violation":
    case "not_null_violation": {
      // The constraint's name says which rule (never the values).
      const constraint = (error as { constraint_name?: unknown }).constraint_name;
      return new ApiError("invalid_request", `the database refused the values${typeof constraint === "string" && /^[a-z0-9_]{1,63}$/.test(constraint) ? ` (${constraint})` : ""}`);
    }
    case "unique_violation":
      return new ApiError("conflict", "that already exists");
    case "insufficient_privilege":
      return new ApiError("forbidden", "not allowed");
  }
  const code = (error as { code?: unknown } | null)?.code;
  if (sqlState(error) === undefined && (typeof code === "string" ? CONNECTION_ERRORS.has(code) : isSocketError(error))) {
    console.error(JSON.stringify({ evt: "db_unavailable", code: typeof code === "string" ? code : "socket" }));
    return new ApiError("db_unavailable", "the database is unreachable; try again shortly");
  }
  if (sqlState(error) !== undefined) {
    console.error(JSON.stringify({ evt: "db_error", sqlstate: sqlState(error) }));
    return new ApiError("internal_error", "internal error");
  }
  return error;
}

function isSocketError(error: unknown): boolean {
  const message = error instanceof Error ? error.message : "";
  return /socket|network connection|connection (?:refused|lost|closed)/i.test(message);
}
