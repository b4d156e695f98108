// The webhook tables (schema/sql/0004_webhooks.sql) as functions of a `postgres` client.
// Seller-facing reads and writes run as the seller (asSeller: role `authenticated` with
// the seller's claims), so row-level security decides what exists for them: another
// seller's endpoint is simply not found. Signing secrets and the delivery log are written
// as service_role only (the seller role has no grant on secrets, and only SELECT on the log).
import type { DeliveryState, DeliveryView, EndpointView } from "../../schema/webhooks.ts";
import type { Sql } from "postgres";
import { asSeller, asService, type WebhookDeliveryRow, type WebhookEndpointRow } from "../../schema/tables.ts";
import type { WebhookEventType } from "../../core/events.ts";
import { newSigningSecret, openSecret, sealSecret, type SecretKey } from "./secrets.ts";

type AnySql = Sql<any>;

/** Endpoints one seller may register. */
export const MAX_ENDPOINTS_PER_SELLER = 10;

export type { DeliveryState, DeliveryView, EndpointView };

const iso = (d: Date | null) => (d === null ? null : d.toISOString());

export function endpointView(row: WebhookEndpointRow): EndpointView {
  return { id: row.id, url: row.url, events: row.events, enabled: row.enabled, createdAt: row.created_at.toISOString(), updatedAt: row.updated_at.toISOString() };
}

export function deliveryView(row: WebhookDeliveryRow): DeliveryView {
  return {
    eventId: row.event_id,
    eventType: row.event_type,
    attempt: row.attempt,
    statusCode: row.status_code,
    error: row.error,
    durationMs: row.duration_ms,
    createdAt: row.created_at.toISOString(),
    nextAttemptAt: iso(row.next_attempt_at),
    deliveredAt: iso(row.delivered_at),
    state: row.delivered_at !== null ? "delivered" : row.next_attempt_at !== null ? "retrying" : "failed",
  };
}

export class TooManyEndpoints extends Error {}

/**
 * Register an endpoint and its signing secret; returns the secret in clear, once.
 * The endpoint row is written as the seller (RLS checks it is theirs), the sealed secret
 * as service_role. Two transactions, because a transaction has one role at a time; if
 * the second fails, the first is undone, so no endpoint exists without a secret.
 */
export async function createEndpoint(
  sql: AnySql,
  sellerId: string,
  input: { url: string; events: readonly WebhookEventType[] },
  keys: SecretKey[],
): Promise<{ endpoint: EndpointView; secret: string }> {
  const row = await asSeller(sql, sellerId, async (tx) => {
    // Serialise this seller's registrations, so the limit holds under concurrency.
    await tx`select pg_advisory_xact_lock(hashtext('cn2.webhook_endpoints'), hashtext(${sellerId}))`;
    const [count] = await tx<{ n: number }[]>`select count(*)::int as n from public.webhook_endpoints`;
    if (count!.n >= MAX_ENDPOINTS_PER_SELLER) throw new TooManyEndpoints();
    const [created] = await tx<WebhookEndpointRow[]>`
      insert into public.webhook_endpoints (seller_id, url, events)
      values (${sellerId}, ${input.url}, ${[...input.events]}::text[])
      returning *`;
    return created!;
  });
  try {
    const secret = await storeNewSecret(sql, row.id, keys);
    return { endpoint: endpointView(row), secret };
  } catch (error) {
    await asService(sql, (tx) => tx`delete from public.webhook_endpoints where id = ${row.id}`).catch(() => {});
    throw error;
  }
}

async function storeNewSecret(sql: AnySql, endpointId: string, keys: SecretKey[]): Promise<string> {
  const { secret, raw } = newSigningSecret();
  const sealed = await sealSecret(keys, endpointId, raw);
  await asService(sql, (tx) => tx`
    insert into public.webhook_signing_secrets (endpoint_id, kid, iv, ciphertext)
    values (${endpointId}, ${sealed.kid}, ${sealed.iv}, ${sealed.ciphertext})
    on conflict (endpoint_id) do update
      set kid = excluded.kid, iv = excluded.iv, ciphertext = excluded.ciphertext, created_at = now()`);
  return secret;
}

export async function listEndpoints(sql: AnySql, sellerId: string): Promise<EndpointView[]> {
  const rows = await asSeller(sql, sellerId, (tx) => tx<WebhookEndpointRow[]>`select * from public.webhook_endpoints order by created_at, id`);
  return rows.map(endpointView);
}

/** The seller's endpoint, or null when it does not exist or is not theirs (RLS). */
export async function getEndpoint(sql: AnySql, sellerId: string, endpointId: string): Promise<EndpointView | null> {
  const [row] = await asSeller(sql, sellerId, (tx) => tx<WebhookEndpointRow[]>`select * from public.webhook_endpoints where id = ${endpointId}`);
  return row ? endpointView(row) : null;
}

/** Delete (with its secret and delivery log, by cascade); false when not the seller's. */
export async function deleteEndpoint(sql: AnySql, sellerId: string, endpointId: string): Promise<boolean> {
  const rows = await asSeller(sql, sellerId, (tx) => tx`delete from public.webhook_endpoints where id = ${endpointId} returning id`);
  return rows.length > 0;
}

/**
 * Replace the signing secret; returns the new one in clear, once, or null when the
 * endpoint is not the seller's. The old secret stops working at once.
 */
export async function rotateSecret(sql: AnySql, sellerId: string, endpointId: string, keys: SecretKey[]): Promise<string | null> {
  if (!(await getEndpoint(sql, sellerId, endpointId))) return null;
  return storeNewSecret(sql, endpointId, keys);
}

/** The delivery log of one endpoint, newest first; null when the endpoint is not the seller's. */
export async function listDeliveries(
  sql: AnySql,
  sellerId: string,
  endpointId: string,
  options: { limit: number; eventId?: string },
): Promise<DeliveryView[] | null> {
  return asSeller(sql, sellerId, async (tx) => {
    const [endpoint] = await tx`select id from public.webhook_endpoints where id = ${endpointId}`;
    if (!endpoint) return null;
    const rows = await tx<WebhookDeliveryRow[]>`
      select * from public.webhook_deliveries
      where endpoint_id = ${endpointId} ${options.eventId ? tx`and event_id = ${options.eventId}` : tx``}
      order by created_at desc, id desc
      limit ${options.limit}`;
    return rows.map(deliveryView);
  });
}

// ---------------------------------------------------------------------------------------
// Service side: the queue consumer

/** Enabled endpoints of the seller that subscribe to `type` (no filter = every type). */
export async function endpointsFor(sql: AnySql, sellerId: string, type: string): Promise<string[]> {
  const rows = await asService(sql, (tx) => tx<{ id: string }[]>`
    select id from public.webhook_endpoints
    where seller_id = ${sellerId} and enabled and (cardinality(events) = 0 or ${type} = any(events))
    order by created_at, id`);
  return rows.map((r) => r.id);
}

export interface DeliveryTarget {
  url: string;
  enabled: boolean;
  /** null when the secret row is missing. */
  sealed: { kid: string; iv: Uint8Array; ciphertext: Uint8Array } | null;
}

/** What a delivery needs, read fresh for every attempt (URL edits, rotation and deletion apply at once). */
export async function deliveryTarget(sql: AnySql, endpointId: string, sellerId: string): Promise<DeliveryTarget | null> {
  const [row] = await asService(sql, (tx) => tx<{ url: string; enabled: boolean; kid: string | null; iv: Uint8Array | null; ciphertext: Uint8Array | null }[]>`
    select e.url, e.enabled, s.kid, s.iv, s.ciphertext
    from public.webhook_endpoints e
    left join public.webhook_signing_secrets s on s.endpoint_id = e.id
    where e.id = ${endpointId} and e.seller_id = ${sellerId}`);
  if (!row) return null;
  const sealed = row.kid !== null && row.iv !== null && row.ciphertext !== null ? { kid: row.kid, iv: new Uint8Array(row.iv), ciphertext: new Uint8Array(row.ciphertext) } : null;
  return { url: row.url, enabled: row.enabled, sealed };
}

export async function signingSecret(keys: SecretKey[], endpointId: string, target: DeliveryTarget): Promise<string | null> {
  return target.sealed ? openSecret(keys, endpointId, target.sealed) : null;
}

export interface AttemptRecord {
  endpointId: string;
  sellerId: string;
  eventId: string;
  eventType: string;
  statusCode: number | null;
  error: string | null;
  durationMs: number | null;
  delivered: boolean;
  /** When the next attempt is due; null when there will be none. */
  nextAttemptAt: Date | null;
}

/**
 * One row per attempt. The attempt number is the next for this (endpoint, event), so a
 * redelivered queue message continues the count instead of colliding with it. Returns
 * the number written (0 when the endpoint is gone: nothing to log against).
 */
export async function recordAttempt(sql: AnySql, a: AttemptRecord): Promise<number> {
  const rows = await asService(sql, (tx) => tx<{ attempt: number }[]>`
    insert into public.webhook_deliveries
      (endpoint_id, seller_id, event_id, event_type, attempt, status_code, error, duration_ms, next_attempt_at, delivered_at)
    select ${a.endpointId}::uuid, ${a.sellerId}::uuid, ${a.eventId}::text, ${a.eventType}::text,
           coalesce((select max(d.attempt) from public.webhook_deliveries d
                     where d.endpoint_id = ${a.endpointId}::uuid and d.event_id = ${a.eventId}::text), 0) + 1,
           ${a.statusCode}::int, ${a.error}::text, ${a.durationMs}::int,
           ${a.delivered ? null : a.nextAttemptAt}::timestamptz, ${a.delivered ? new Date() : null}::timestamptz
    where exists (select 1 from public.webhook_endpoints e where e.id = ${a.endpointId}::uuid and e.seller_id = ${a.sellerId}::uuid)
    on conflict (endpoint_id, event_id, attempt) do nothing
    returning attempt`);
  return rows[0]?.attempt ?? 0;
}

/**
 * Dead-lettered: no attempt is scheduled any more. Clears next_attempt_at on the
 * event's rows for that endpoint (the log then reads "failed"); when no attempt was ever
 * logged (the consumer itself kept failing), writes one row saying so.
 */
export async function markFailed(sql: AnySql, m: { endpointId: string; sellerId: string; eventId: string; eventType: string }): Promise<void> {
  await asService(sql, async (tx) => {
    const [endpoint] = await tx`select id from public.webhook_endpoints where id = ${m.endpointId} and seller_id = ${m.sellerId}`;
    if (!endpoint) return;
    const updated = await tx`
      update public.webhook_deliveries set next_attempt_at = null
      where endpoint_id = ${m.endpointId} and event_id = ${m.eventId} and delivered_at is null and next_attempt_at is not null
      returning id`;
    if (updated.length > 0) return;
    const [logged] = await tx`select 1 from public.webhook_deliveries where endpoint_id = ${m.endpointId} and event_id = ${m.eventId} limit 1`;
    if (logged) return;
    await tx`
      insert into public.webhook_deliveries (endpoint_id, seller_id, event_id, event_type, attempt, error)
      values (${m.endpointId}, ${m.sellerId}, ${m.eventId}, ${m.eventType}, 1, 'dead_lettered')
      on conflict (endpoint_id, event_id, attempt) do nothing`;
  });
}
