// The WEBHOOKS queue consumer (the Worker's `queue` handler routes here) and the
// dead-letter consumer. See events.ts for the two message kinds and why fan-out is here.
//
// A delivery: read the endpoint and its secret fresh, check the URL again, sign, POST
// with a timeout and without following redirects, log the attempt (service role), then
// ack on 2xx or retry with exponential backoff. After the queue's max_retries the runtime
// moves the message to the dead-letter queue, whose consumer marks the delivery failed.
import * as v from "valibot";
import { connectDb, type Db, type DbEnv } from "../../core/postgres.ts";
import { WebhookMessageSchema, type DeliveryMessage, type EventMessage, type WebhookMessage } from "../../core/events.ts";
import { secretKeys, type SecretKey } from "./secrets.ts";
import { ATTEMPT_HEADER, EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, signatureHeader } from "./signing.ts";
import { deliveryTarget, endpointsFor, markFailed, recordAttempt, signingSecret } from "./storage.ts";
import { checkWebhookUrl, urlPolicy } from "./url.ts";

export interface WebhooksEnv extends DbEnv {
  WEBHOOKS?: Queue<WebhookMessage>;
  /** Secret: JSON [{kid, key}] newest first, AES-256-GCM keys for signing secrets at rest. */
  WEBHOOK_SECRET_KEYS?: string;
  /** "1" in dev and tests only: http and loopback receivers (read only when CN2_DEV=1). */
  DEV_WEBHOOKS_ALLOW_HTTP?: string;
  CN2_DEV?: string;
  /** First retry delay in seconds; it doubles per attempt (default 60). */
  WEBHOOK_RETRY_BASE_SECONDS?: string;
  /** Milliseconds a receiver has to answer (default 10000). */
  WEBHOOK_TIMEOUT_MS?: string;
}

/** Queue names in wrangler.toml; the dead-letter queue is the one ending in -dlq. */
export const WEBHOOK_QUEUE = "cn2-webhooks";
export const WEBHOOK_DLQ = "cn2-webhooks-dlq";
export const isWebhookQueue = (name: string) => name === WEBHOOK_QUEUE || name === WEBHOOK_DLQ;

export const DEFAULT_RETRY_BASE_SECONDS = 60;
/** Longest wait between two attempts (Queues allow up to 12 h). */
export const MAX_RETRY_DELAY_SECONDS = 6 * 60 * 60;
const DEFAULT_TIMEOUT_MS = 10_000;
const USER_AGENT = "cn2-webhooks/1";

/** Seconds before the next attempt after attempt `attempt` (1-based) failed: base * 2^(attempt-1), capped. */
export function retryDelaySeconds(attempt: number, baseSeconds = DEFAULT_RETRY_BASE_SECONDS): number {
  const n = Math.max(1, Math.min(Math.floor(attempt), 30));
  return Math.min(baseSeconds * 2 ** (n - 1), MAX_RETRY_DELAY_SECONDS);
}

function retryBase(env: WebhooksEnv): number {
  const n = Number(env.WEBHOOK_RETRY_BASE_SECONDS);
  return Number.isInteger(n) && n >= 0 ? n : DEFAULT_RETRY_BASE_SECONDS;
}

function timeoutMs(env: WebhooksEnv): number {
  const n = Number(env.WEBHOOK_TIMEOUT_MS);
  return Number.isInteger(n) && n > 0 ? n : DEFAULT_TIMEOUT_MS;
}

const log = (evt: string, fields: Record<string, unknown> = {}) => console.log(JSON.stringify({ evt, ...fields }));
const errorName = (err: unknown) => (err instanceof Error ? (("code" in err && typeof err.code === "string" ? err.code : err.name)) : "unknown");

/** The `queue` handler for both webhook queues. */
export async function handleWebhookBatch(batch: MessageBatch<unknown>, env: WebhooksEnv, ctx: Pick<ExecutionContext, "waitUntil">): Promise<void> {
  let sql: Db;
  try {
    sql = connectDb(env);
  } catch (err) {
    log("webhook_db_unconfigured", { error: errorName(err) });
    batch.retryAll({ delaySeconds: retryDelaySeconds(1, retryBase(env)) });
    return;
  }
  try {
    const dead = batch.queue === WEBHOOK_DLQ || batch.queue.endsWith("-dlq");
    await Promise.all(batch.messages.map((message) => (dead ? onDeadLetter(message, sql) : onMessage(message, env, sql))));
  } finally {
    ctx.waitUntil(sql.end({ timeout: 5 }).catch(() => {}));
  }
}

function parse(message: Message<unknown>): WebhookMessage | null {
  const parsed = v.safeParse(WebhookMessageSchema, message.body);
  if (parsed.success) return parsed.output;
  // A malformed message will not get better: drop it, loudly.
  log("webhook_message_invalid", { id: message.id });
  message.ack();
  return null;
}

async function onMessage(message: Message<unknown>, env: WebhooksEnv, sql: Db): Promise<void> {
  const m = parse(message);
  if (!m) return;
  try {
    if (m.kind === "event") {
      await fanOut(m, env, sql);
      message.ack();
    } else {
      await deliver(m, message, env, sql);
    }
  } catch (err) {
    // The database or the queue failed us: try the whole step again later.
    log("webhook_step_failed", { kind: m.kind, attempt: message.attempts, error: errorName(err) });
    message.retry({ delaySeconds: retryDelaySeconds(message.attempts, retryBase(env)) });
  }
}

/** One event -> one delivery message per subscribed endpoint, each with the final body. */
async function fanOut(m: EventMessage, env: WebhooksEnv, sql: Db): Promise<void> {
  const endpoints = await endpointsFor(sql, m.sellerId, m.event.type);
  if (endpoints.length === 0) return;
  if (!env.WEBHOOKS) throw new Error("WEBHOOKS queue binding missing");
  const payload = JSON.stringify({ id: m.event.id, type: m.event.type, createdAt: m.event.createdAt, data: m.event.data });
  const deliveries: MessageSendRequest<WebhookMessage>[] = endpoints.map((endpointId) => ({
    body: { kind: "delivery", sellerId: m.sellerId, endpointId, eventId: m.event.id, eventType: m.event.type, payload } satisfies DeliveryMessage,
    contentType: "json",
  }));
  await env.WEBHOOKS.sendBatch(deliveries);
}

export type AttemptOutcome = { statusCode: number | null; error: string | null; durationMs: number };

/** POST one signed delivery. Never follows a redirect; never reads the response body. */
export async function postDelivery(url: string, m: DeliveryMessage, secret: string, attempt: number, timeout: number): Promise<AttemptOutcome> {
  const timestamp = Math.floor(Date.now() / 1000);
  const headers = new Headers({
    "content-type": "application/json",
    "user-agent": USER_AGENT,
    [SIGNATURE_HEADER]: await signatureHeader(secret, timestamp, m.payload),
    [EVENT_ID_HEADER]: m.eventId,
    [EVENT_TYPE_HEADER]: m.eventType,
    [ATTEMPT_HEADER]: String(attempt),
  });
  const signal = AbortSignal.timeout(timeout);
  const started = Date.now();
  try {
    const response = await fetch(url, { method: "POST", headers, body: m.payload, redirect: "manual", signal });
    await response.body?.cancel().catch(() => {});
    const status = response.status;
    const error = status >= 200 && status < 300 ? null : status >= 300 && status < 400 ? "redirect_not_followed" : "http_error";
    return { statusCode: status >= 100 && status <= 599 ? status : null, error, durationMs: Date.now() - started };
  } catch {
    return { statusCode: null, error: signal.aborted ? "timeout" : "network", durationMs: Date.now() - started };
  }
}

async function deliver(m: DeliveryMessage, message: Message<unknown>, env: WebhooksEnv, sql: Db): Promise<void> {
  const target = await deliveryTarget(sql, m.endpointId, m.sellerId);
  // Deleted (its log went with it) or switched off: nothing to deliver, nothing to retry.
  if (!target || !target.enabled) {
    message.ack();
    return;
  }
  const base = { endpointId: m.endpointId, sellerId: m.sellerId, eventId: m.eventId, eventType: m.eventType };
  const delay = retryDelaySeconds(message.attempts, retryBase(env));
  const retryAt = () => new Date(Date.now() + delay * 1000);

  // The URL passed these checks when it was registered; the policy may have changed since.
  const check = checkWebhookUrl(target.url, urlPolicy(env));
  if (!check.ok) {
    await recordAttempt(sql, { ...base, statusCode: null, error: "url_refused", durationMs: null, delivered: false, nextAttemptAt: null });
    log("webhook_url_refused", { endpointId: m.endpointId, reason: check.reason });
    message.ack();
    return;
  }

  let secret: string | null = null;
  let keys: SecretKey[] | null = null;
  try {
    keys = await secretKeys(env.WEBHOOK_SECRET_KEYS);
    secret = await signingSecret(keys, m.endpointId, target);
  } catch (err) {
    log("webhook_secret_unavailable", { endpointId: m.endpointId, error: errorName(err) });
  }
  if (secret === null) {
    // Never send unsigned. An operator can restore the key (WEBHOOK_SECRET_KEYS) or the seller rotate.
    await recordAttempt(sql, { ...base, statusCode: null, error: "secret_unavailable", durationMs: null, delivered: false, nextAttemptAt: retryAt() });
    message.retry({ delaySeconds: delay });
    return;
  }

  const outcome = await postDelivery(check.url, m, secret, message.attempts, timeoutMs(env));
  const delivered = outcome.error === null;
  try {
    await recordAttempt(sql, { ...base, ...outcome, delivered, nextAttemptAt: delivered ? null : retryAt() });
  } catch (err) {
    // The attempt happened either way; its outcome, not the log, decides ack or retry.
    log("webhook_log_failed", { endpointId: m.endpointId, eventId: m.eventId, error: errorName(err) });
  }
  if (delivered) message.ack();
  else message.retry({ delaySeconds: delay });
}

async function onDeadLetter(message: Message<unknown>, sql: Db): Promise<void> {
  const m = parse(message);
  if (!m) return;
  if (m.kind === "event") {
    // Fan-out itself kept failing (the database was down for the whole retry window).
    log("webhook_event_dead_lettered", { eventId: m.event.id, type: m.event.type });
    message.ack();
    return;
  }
  try {
    await markFailed(sql, { endpointId: m.endpointId, sellerId: m.sellerId, eventId: m.eventId, eventType: m.eventType });
    log("webhook_delivery_failed", { endpointId: m.endpointId, eventId: m.eventId });
    message.ack();
  } catch (err) {
    log("webhook_mark_failed_failed", { error: errorName(err) });
    message.retry({ delaySeconds: 60 });
  }
}
