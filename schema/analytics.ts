// The analytics stream (M4, PR12, PR13, PR14): what one request leaves for analytics, as
// it travels from a key object through the ANALYTICS queue to the sink (Tinybird in
// production, the local Postgres `request_log` by default; worker/analytics/).
//
// Exactly the columns of public.request_log, and nothing else: provider, route, method,
// time, latency (to the first byte), duration (to the last byte), status, amount,
// outcome, the request id and the key id. Never a body,
// a header, an IP address or a buyer identity: the schema is strict, so a message that
// carries any other field is refused whole by the consumer.
import * as v from "valibot";
import { KeyIdSchema } from "./wire.ts";
import { REQUEST_OUTCOMES } from "./tables.ts";

/** Queue names in wrangler.toml. */
export const ANALYTICS_QUEUE = "cn2-analytics";
export const ANALYTICS_DLQ = "cn2-analytics-dlq";

/** Raw request metadata is kept 30 days (PR14): older rows are dropped everywhere on the way. */
export const RAW_METADATA_DAYS = 30;

export const AnalyticsRowSchema = v.strictObject({
  request_id: v.pipe(v.string(), v.regex(/^req_[A-Za-z0-9]{16,64}$/)),
  key_id: KeyIdSchema,
  provider: v.pipe(v.string(), v.regex(/^[a-z][a-z0-9-]{1,31}$/)),
  /** The path only (no query string: it could carry data). */
  route: v.pipe(v.string(), v.maxLength(512), v.regex(/^\/[^?#\s]*$/)),
  method: v.picklist(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
  /** When the request arrived, ms since the epoch. */
  at: v.pipe(v.number(), v.safeInteger(), v.minValue(0)),
  /** Time to the upstream's first byte (response headers). */
  latency_ms: v.pipe(v.number(), v.safeInteger(), v.minValue(0)),
  /**
   * Time to the answer's last byte, from the same start; null while unknown (a failed
   * request, or a stream not yet ended when its row was flushed: a later copy of the row
   * carries it). A message from before this field (still queued across a deploy) reads
   * as null rather than being refused.
   */
  duration_ms: v.optional(v.nullable(v.pipe(v.number(), v.safeInteger(), v.minValue(0))), null),
  /** 0 when no HTTP status was produced (client abort before the upstream answered). */
  status: v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(599)),
  amount_micros: v.pipe(v.number(), v.safeInteger(), v.minValue(0)),
  outcome: v.picklist(REQUEST_OUTCOMES),
});
export type AnalyticsRow = v.InferOutput<typeof AnalyticsRowSchema>;

/** One queue message: a chunk of one key object's flushed rows. */
export const AnalyticsMessageSchema = v.strictObject({
  v: v.literal(1),
  rows: v.pipe(v.array(AnalyticsRowSchema), v.minLength(1), v.maxLength(1000)),
});
export type AnalyticsMessage = v.InferOutput<typeof AnalyticsMessageSchema>;
