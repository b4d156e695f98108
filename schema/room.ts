// The live seller room's messages (S8), defined once: the key objects push `RoomUpdate`s,
// the SellerRoom keeps the latest `KeyLive` per key and sends `RoomMessage`s to the
// dashboard, which parses every message with `RoomMessageSchema` before showing it.
import * as v from "valibot";
import { HEALTH_STATES, KEY_STATUSES, TIERS } from "./wire.ts";

const Count = v.pipe(v.number(), v.safeInteger(), v.minValue(0));
const Share = v.pipe(v.number(), v.minValue(0), v.maxValue(1));
/** ms since the epoch */
const Time = v.pipe(v.number(), v.safeInteger(), v.minValue(0));
const KeyId = v.pipe(v.string(), v.regex(/^k_[a-z0-9]{12,32}$/));

/** One key as the dashboard shows it live. No credential, no buyer data, no bodies. */
export const KeyLiveSchema = v.strictObject({
  keyId: KeyId,
  provider: v.string(),
  region: v.string(),
  /** The seller's switch: paused keys take no requests. */
  status: v.picklist(KEY_STATUSES),
  /** Health state machine (objects/seller-key/health.ts). */
  state: v.picklist(HEALTH_STATES),
  /** 0..1, the score the router ranks by. */
  healthScore: Share,
  /** EWMA of time to first byte. */
  latencyMs: Count,
  /** Requests admitted in the sliding last minute. */
  requestsPerMinute: Count,
  inFlight: Count,
  /** The tier the key serves in, and the one its seller asked for (premium is earned). */
  servingTier: v.picklist(TIERS),
  askedTier: v.picklist(TIERS),
  /** The last day's track record (objects/seller-key/track-record.ts). */
  trackRecord: v.strictObject({ calls: Count, successRate: Share, uptime: Share }),
  lastError: v.nullable(v.strictObject({ reason: v.pipe(v.string(), v.maxLength(200)), at: Time })),
  /** The seller's share earned this UTC day by this key, flushed or not (micro-dollars). */
  earningsTodayMicros: Count,
  /** Earned but not yet flushed to the ledger (micro-dollars): the live part of the earnings page. */
  unflushedMicros: Count,
  /** The price per request, for the row (micro-dollars). */
  priceMicros: Count,
  updatedAt: Time,
});
export type KeyLive = v.InferOutput<typeof KeyLiveSchema>;

/** What a key object pushes to its seller's room (SellerRoom.push). */
export const RoomUpdateSchema = v.variant("type", [
  v.strictObject({ type: v.literal("key"), key: KeyLiveSchema }),
  v.strictObject({ type: v.literal("removed"), keyId: KeyId }),
]);
export type RoomUpdate = v.InferOutput<typeof RoomUpdateSchema>;

/** What a dashboard connection receives: a snapshot first, then changes. */
export const RoomMessageSchema = v.variant("type", [
  v.strictObject({ type: v.literal("snapshot"), keys: v.array(KeyLiveSchema) }),
  v.strictObject({ type: v.literal("key"), key: KeyLiveSchema }),
  v.strictObject({ type: v.literal("removed"), keyId: KeyId }),
]);
export type RoomMessage = v.InferOutput<typeof RoomMessageSchema>;

/** The WebSocket path the Worker authenticates and forwards to the seller's room. */
export const LIVE_PATH = "/api/live";
