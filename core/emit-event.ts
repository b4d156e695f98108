// The producer side: anything that knows a seller id can emit a seller event. Cheap and
// safe to call from a hot path inside waitUntil: one queue send, no database, never
// throws (a lost notification must not fail a buyer's request or a key's state change).
import * as v from "valibot";
import { newEventId, type EventMessage, type SellerEventInput, type WebhookMessage, WebhookEventTypeSchema } from "./events.ts";

export interface ProducerEnv {
  WEBHOOKS?: Queue<WebhookMessage>;
}

const SellerUuid = v.pipe(v.string(), v.uuid());

/**
 * Enqueue `event` for the seller's webhook endpoints; resolves to the event id, or null
 * when nothing was enqueued (no queue binding, a seller id that is no account's, an
 * unknown type, or the send failed; the failure is logged).
 *
 *   ctx.waitUntil(emitSellerEvent(env, sellerId, { type: "payout.paid", data: { payoutId, amountMicros } }))
 */
export async function emitSellerEvent(env: ProducerEnv, sellerId: string, event: SellerEventInput): Promise<string | null> {
  if (!env.WEBHOOKS) return null;
  // Seller accounts are UUIDs (the auth user id); anything else (ops-made test keys) has
  // no account and so no endpoints.
  if (!v.is(SellerUuid, sellerId) || !v.is(WebhookEventTypeSchema, event.type)) return null;
  const id = newEventId();
  const message: EventMessage = {
    kind: "event",
    sellerId,
    event: {
      id,
      type: event.type,
      createdAt: new Date().toISOString(),
      data: { ...(event.keyId !== undefined ? { keyId: event.keyId } : {}), ...event.data },
    },
  };
  try {
    await env.WEBHOOKS.send(message, { contentType: "json" });
    return id;
  } catch (err) {
    console.error(JSON.stringify({ evt: "webhook_enqueue_failed", type: event.type, error: err instanceof Error ? err.name : "unknown" }));
    return null;
  }
}
