// Fixtures for the db tests. The test connection is the database owner (postgres): it sets
// up rows directly, and switches to the API roles only through asSeller / asService /
// asAnon, exactly as the Worker will.
import { randomBytes, randomUUID } from "node:crypto";
import type { Sql } from "postgres";
import { expect, inject } from "vitest";
import { connect } from "../../tools/database.ts";
import { sqlState } from "../../schema/tables.ts";

/** A client of the database the global setup migrated (PGlite or PostgreSQL). */
export function sharedDb(max = 4): Sql {
  return connect(inject("dbUrl"), { max });
}

export const target = () => inject("dbTarget");

export const newKeyId = () => `k_${randomBytes(8).toString("hex")}`;
export const newRequestId = () => `req_${randomBytes(16).toString("hex")}`;
export const newFlushId = (keyId: string) => `${keyId}:${randomBytes(6).toString("hex")}`;
export const hex64 = () => randomBytes(32).toString("hex");

export interface SellerFixture {
  id: string;
  email: string;
  keyId: string;
  endpointId: string;
  payoutId: string;
  /** A refunded dispute's clawback of this seller's share (the dispute itself lives in the buyer's wallet). */
  clawbackDisputeId: string;
  requestId: string;
  flushId: string;
}

/** An auth user and seller row only. */
export async function createSeller(sql: Sql, label = "seller"): Promise<{ id: string; email: string }> {
  const id = randomUUID();
  const email = `${label}-${id.slice(0, 8)}@example.test`;
  await sql`insert into auth.users (id, email) values (${id}, ${email})`;
  await sql`insert into public.sellers (id, email, display_name) values (${id}, ${email}, ${label})`;
  return { id, email };
}

/**
 * A seller with one row in every seller table: a key, approved KYC, a Stripe payout
 * preference, a webhook endpoint with its (encrypted) secret and one delivery, 10.000000
 * USD of earnings, a 1.000000 USD payout, a dispute's clawback, raw and hourly request metadata.
 */
export async function createSellerWorld(sql: Sql, label = "seller"): Promise<SellerFixture> {
  const { id, email } = await createSeller(sql, label);
  const keyId = newKeyId();
  const requestId = newRequestId();
  const flushId = newFlushId(keyId);
  await sql`
    insert into public.keys (key_id, seller_id, provider, price_micros, requests_per_minute, max_concurrent, region, allowed_routes)
    values (${keyId}, ${id}, 'openai', 2000, 60, 4, 'us', ${["POST /v1/chat/completions"]})`;
  await sql`insert into public.kyc (seller_id, status) values (${id}, 'approved')`;
  await sql`insert into public.payout_preferences (seller_id, method, stripe_account_id) values (${id}, 'stripe_connect', ${`acct_${randomBytes(8).toString("hex")}`})`;
  const [endpoint] = await sql<{ id: string }[]>`
    insert into public.webhook_endpoints (seller_id, url) values (${id}, ${`https://hooks.example.test/${label}`}) returning id`;
  const endpointId = endpoint!.id;
  await sql`insert into public.webhook_signing_secrets (endpoint_id, kid, iv, ciphertext)
            values (${endpointId}, 'wh-1', ${randomBytes(12)}, ${randomBytes(48)})`;
  await sql`insert into public.webhook_deliveries (endpoint_id, seller_id, event_id, event_type, attempt, status_code, delivered_at)
            values (${endpointId}, ${id}, ${`evt_${randomBytes(8).toString("hex")}`}, 'key.disabled', 1, 200, now())`;
  await sql`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
            values (${flushId}, ${keyId}, ${id}, now() - interval '1 minute', now(), 10000000, 0, 5000)`;
  const [payout] = await sql<{ id: string }[]>`insert into public.payouts (seller_id, amount_micros) values (${id}, 1000000) returning id`;
  const clawbackDisputeId = `dsp_${randomBytes(16).toString("hex")}`;
  await sql`insert into public.clawbacks (dispute_id, request_id, key_id, seller_id, amount_micros)
            values (${clawbackDisputeId}, ${requestId}, ${keyId}, ${id}, 1800)`;
  await sql`insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, status, amount_micros)
            values (${requestId}, ${keyId}, 'openai', '/v1/chat/completions', 'POST', now(), 120, 200, 2000)`;
  await sql`insert into public.request_log_hourly (hour, key_id, provider, route, method, status, request_count, amount_micros, latency_ms_sum, latency_ms_max)
            values (date_trunc('hour', now()), ${keyId}, 'openai', '/v1/chat/completions', 'POST', 200, 1, 2000, 120, 120)`;
  return { id, email, keyId, endpointId, payoutId: payout!.id, clawbackDisputeId, requestId, flushId };
}

/** Await a statement expected to fail; return its SQLSTATE. */
export async function failure(run: () => Promise<unknown>): Promise<string> {
  try {
    await run();
  } catch (error) {
    const code = sqlState(error);
    if (code === undefined) throw error;
    return code;
  }
  expect.fail("the statement succeeded but should have been refused");
}
