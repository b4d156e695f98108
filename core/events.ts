// Seller events (S6): their types, the JSON a receiver gets, and the two kinds of message
// on the WEBHOOKS queue.
//
// Fan-out happens in the consumer, in two steps. A producer (a SellerKey object, the
// payouts code) enqueues one `event` message and needs no database: it only knows the
// seller. The consumer looks up that seller's endpoints subscribed to the type and
// enqueues one `delivery` message per endpoint. Each delivery is then acknowledged,
// retried with backoff and finally dead-lettered on its own, so a receiver that is down
// never causes a duplicate at one that is up, and the payload bytes (hence the event id
// and body the signature covers) are fixed once, at fan-out, for every attempt.
import * as v from "valibot";

export const WEBHOOK_EVENT_TYPES = [
  "key.disabled",
  "key.health_changed",
  "key.recovered",
  "key.tier_changed",
  "payout.created",
  "payout.sent",
  "payout.paid",
  "payout.failed",
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];
export const WebhookEventTypeSchema = v.picklist(WEBHOOK_EVENT_TYPES, `event type must be one of ${WEBHOOK_EVENT_TYPES.join(", ")}`);

/** What a receiver gets as the POST body (JSON). */
export interface WebhookPayload {
  /** evt_ + 32 hex: the same for every attempt and every endpoint of one event. */
  id: string;
  type: WebhookEventType;
  /** ISO 8601, when the event happened. */
  createdAt: string;
  data: Record<string, unknown>;
}

export const EventIdSchema = v.pipe(v.string(), v.regex(/^evt_[A-Za-z0-9]{8,64}$/));
const UuidSchema = v.pipe(v.string(), v.uuid());

/** Producer -> consumer: one event of one seller, not yet fanned out. */
export const EventMessageSchema = v.strictObject({
  kind: v.literal("event"),
  sellerId: UuidSchema,
  event: v.strictObject({
    id: EventIdSchema,
    type: WebhookEventTypeSchema,
    createdAt: v.pipe(v.string(), v.isoTimestamp()),
    data: v.record(v.string(), v.unknown()),
  }),
});

/** Consumer -> consumer: one event for one endpoint; `payload` is the exact body to sign and send. */
export const DeliveryMessageSchema = v.strictObject({
  kind: v.literal("delivery"),
  sellerId: UuidSchema,
  endpointId: UuidSchema,
  eventId: EventIdSchema,
  eventType: WebhookEventTypeSchema,
  payload: v.pipe(v.string(), v.maxLength(64 * 1024)),
});

export const WebhookMessageSchema = v.variant("kind", [EventMessageSchema, DeliveryMessageSchema]);
export type EventMessage = v.InferOutput<typeof EventMessageSchema>;
export type DeliveryMessage = v.InferOutput<typeof DeliveryMessageSchema>;
export type WebhookMessage = EventMessage | DeliveryMessage;

export const newEventId = () => `evt_${crypto.randomUUID().replaceAll("-", "")}`;

/** What a producer passes to emitSellerEvent. */
export interface SellerEventInput {
  type: WebhookEventType;
  keyId?: string;
  data?: Record<string, unknown>;
}
