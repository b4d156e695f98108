// Seller API for webhooks (S6), mounted by worker/router.ts. Each handler is a sellerRoute
// (worker/seller/profile.ts): the signed-in seller, its account row, the request's database client.
//   POST   /api/webhooks                  {url, events?} -> 201 {webhook, secret}  (secret shown once)
//   GET    /api/webhooks                  -> {webhooks}
//   DELETE /api/webhooks/:id              -> {deleted: true}
//   POST   /api/webhooks/:id/rotate       -> {webhook, secret}  (the old secret stops at once)
//   GET    /api/webhooks/:id/deliveries   ?limit=1..200&eventId=evt_... -> {deliveries} (no payloads)
// Every query runs as the seller (row-level security): another seller's endpoint is a 404.
import * as v from "valibot";
import { ApiError, json, parseOr400, readJson } from "../../core/http.ts";
import { EventIdSchema, WebhookEventTypeSchema } from "../../core/events.ts";
import { secretKeys, WebhookSecretError, type SecretKey } from "./secrets.ts";
import { createEndpoint, deleteEndpoint, getEndpoint, listDeliveries, listEndpoints, MAX_ENDPOINTS_PER_SELLER, rotateSecret, TooManyEndpoints } from "./storage.ts";
import { checkWebhookUrl, urlPolicy } from "./url.ts";
import { sellerRoute } from "../seller/profile.ts";
import type { WebhooksEnv } from "./consumer.ts";

export const CreateWebhookSchema = v.strictObject({
  url: v.pipe(v.string("url must be a string"), v.minLength(1, "url is required"), v.maxLength(2048, "url is longer than 2048 characters")),
  /** Empty or absent: every event type. */
  events: v.optional(
    v.pipe(
      v.array(WebhookEventTypeSchema),
      v.maxLength(32),
      v.check((ts) => new Set(ts).size === ts.length, "events must not repeat"),
    ),
    [],
  ),
});

const EndpointIdSchema = v.pipe(v.string(), v.uuid("webhook id must be a UUID"));

function endpointId(raw: string | undefined): string {
  return parseOr400(EndpointIdSchema, raw ?? "", "webhook id").toLowerCase();
}

const notFound = (id: string) => new ApiError("webhook_not_found", `no webhook ${id}`);

async function keys(env: WebhooksEnv): Promise<SecretKey[]> {
  try {
    return await secretKeys(env.WEBHOOK_SECRET_KEYS);
  } catch (err) {
    if (err instanceof WebhookSecretError) {
      console.error(JSON.stringify({ evt: "webhook_keys_misconfigured" }));
      throw new ApiError("internal_error", "webhook signing is not configured on this server");
    }
    throw err;
  }
}

/** Validate a URL for registration; refusals carry code webhook_url_refused and the reason. */
export function requireSafeUrl(raw: string, env: WebhooksEnv): string {
  const check = checkWebhookUrl(raw, urlPolicy(env));
  if (!check.ok) throw new ApiError("webhook_url_refused", `${check.message} (${check.reason})`);
  return check.url;
}

export const createWebhook = sellerRoute(async (c) => {
  const input = parseOr400(CreateWebhookSchema, await readJson(c.request), "webhook");
  const url = requireSafeUrl(input.url, c.env);
  const k = await keys(c.env);
  try {
    const { endpoint, secret } = await createEndpoint(c.sql, c.identity.id, { url, events: input.events }, k);
    return json({ webhook: endpoint, secret }, 201, { "cache-control": "no-store" });
  } catch (err) {
    if (err instanceof TooManyEndpoints) throw new ApiError("conflict", `a seller may register at most ${MAX_ENDPOINTS_PER_SELLER} webhooks`);
    throw err;
  }
});

export const listWebhooks = sellerRoute(async (c) => json({ webhooks: await listEndpoints(c.sql, c.identity.id) }));

export const deleteWebhook = sellerRoute(async (c) => {
  const id = endpointId(c.request.params.id);
  if (!(await deleteEndpoint(c.sql, c.identity.id, id))) throw notFound(id);
  return json({ deleted: true });
});

export const rotateWebhookSecret = sellerRoute(async (c) => {
  const id = endpointId(c.request.params.id);
  const k = await keys(c.env);
  const secret = await rotateSecret(c.sql, c.identity.id, id, k);
  const webhook = secret === null ? null : await getEndpoint(c.sql, c.identity.id, id);
  if (!webhook) throw notFound(id);
  return json({ webhook, secret }, 200, { "cache-control": "no-store" });
});

const DeliveriesQuerySchema = v.strictObject({
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d{1,3}$/, "limit must be 1-200"), v.transform(Number), v.minValue(1, "limit must be 1-200"), v.maxValue(200, "limit must be 1-200")), "50"),
  eventId: v.optional(EventIdSchema),
});

export const listWebhookDeliveries = sellerRoute(async (c) => {
  const id = endpointId(c.request.params.id);
  const query = parseOr400(DeliveriesQuerySchema, Object.fromEntries(new URL(c.request.url).searchParams), "query");
  const deliveries = await listDeliveries(c.sql, c.identity.id, id, { limit: Number(query.limit), eventId: query.eventId });
  if (deliveries === null) throw notFound(id);
  return json({ deliveries });
});

/** Mounted by worker/router.ts. */
export const webhookRoutes = [
  ["post", "/api/webhooks", createWebhook],
  ["get", "/api/webhooks", listWebhooks],
  ["delete", "/api/webhooks/:id", deleteWebhook],
  ["post", "/api/webhooks/:id/rotate", rotateWebhookSecret],
  ["get", "/api/webhooks/:id/deliveries", listWebhookDeliveries],
] as const;
