// A seller's webhook endpoints and their delivery log as the API answers them (S6):
// worker/webhooks/ makes them, the dashboard shows them.

export interface EndpointView {
  id: string;
  url: string;
  /** Empty: every event type. */
  events: string[];
  enabled: boolean;
  createdAt: string;
  updatedAt: string;
}

export type DeliveryState = "delivered" | "retrying" | "failed";

export interface DeliveryView {
  eventId: string;
  eventType: string;
  attempt: number;
  /** null when no HTTP response came back (see `error`). */
  statusCode: number | null;
  error: string | null;
  durationMs: number | null;
  /** When the attempt was made. */
  createdAt: string;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
  /** delivered (2xx), retrying (another attempt is scheduled) or failed (no more attempts). */
  state: DeliveryState;
}
