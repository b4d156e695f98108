// The seller API as the page calls it: same origin, the session cookie (sent by the
// browser, never read by script: HttpOnly), and the CSRF header on every write.
// Errors keep the API's stable code and human message (docs/api.md).
import type { KeyConfig, KeyConfigInput, KeyConfigPatch, KeyView, Envelope } from "../../../schema/wire.ts";
import type { SellerProfile } from "../../../schema/tables.ts";
import type { DeliveryView, EndpointView } from "../../../schema/webhooks.ts";
import type { MarketStats } from "../../../schema/stats.ts";

export class ApiFailure extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api<T>(path: string, init: { method?: string; json?: unknown } = {}): Promise<T> {
  const method = init.method ?? "GET";
  const headers: Record<string, string> = {};
  if (method !== "GET" && method !== "HEAD") headers["cn2-csrf"] = "1";
  if (init.json !== undefined) headers["content-type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(path, { method, headers, credentials: "same-origin", body: init.json === undefined ? undefined : JSON.stringify(init.json) });
  } catch {
    throw new ApiFailure(0, "network", "The server could not be reached. Check your connection and try again.");
  }
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: reported below
  }
  if (!res.ok) {
    const error = (body as { error?: { code?: string; message?: string } } | null)?.error;
    throw new ApiFailure(res.status, error?.code ?? "http_error", error?.message ?? `The server answered ${res.status}.`);
  }
  return body as T;
}

export type Me = SellerProfile;

export interface LedgerEntry {
  id: string;
  keyId: string;
  periodStart: string;
  periodEnd: string;
  grossMicros: number;
  feeMicros: number;
  netMicros: number;
  requestCount: number;
  recordedAt: string;
}
export interface Payout {
  id: string;
  method: string;
  destination: string;
  amountMicros: number;
  status: string;
  requestedAt?: string;
  [k: string]: unknown;
}
export interface Earnings {
  balance: { earnedMicros: number; withdrawnMicros: number; availableMicros: number };
  history: LedgerEntry[];
  nextBefore: string | null;
  payouts: Payout[];
}
export type Webhook = EndpointView;
export type Delivery = DeliveryView;
export interface PayoutInfo {
  preference: { method: string; stripeAccountId: string | null; evmAddress: string | null; updatedAt: string } | null;
  kyc: string;
  payoutsLocked: boolean;
}
export interface AuthConfig {
  devSignIn: boolean;
  supabaseUrl: string | null;
  supabaseAnonKey: string | null;
}

export const getMe = async () => (await api<{ seller: Me }>("/api/me")).seller;
/** Public: no session needed (the cookie, if any, is ignored). */
export const getStats = () => api<MarketStats>("/api/stats");
export const listKeys = async () => (await api<{ keys: KeyView[] }>("/api/keys")).keys;
export const createKey = (input: { keyId: string; sellerId: string; envelope: Envelope; config: KeyConfigInput }) => api<{ key: KeyView }>("/api/keys", { method: "POST", json: input });
export const patchKey = (keyId: string, patch: KeyConfigPatch) => api<{ key: KeyView }>(`/api/keys/${keyId}`, { method: "PATCH", json: patch });
export const pauseKey = (keyId: string) => api<{ key: KeyView }>(`/api/keys/${keyId}/pause`, { method: "POST" });
export const resumeKey = (keyId: string) => api<{ key: KeyView }>(`/api/keys/${keyId}/resume`, { method: "POST" });
export const removeKey = (keyId: string) => api<{ deleted: true }>(`/api/keys/${keyId}`, { method: "DELETE" });

/** Every ledger entry, page by page (the API pages by 500 at most). */
export async function allEarnings(): Promise<Earnings> {
  const first = await api<Earnings>("/api/earnings?limit=500");
  const history = [...first.history];
  let before = first.nextBefore;
  while (before) {
    const page = await api<Earnings>(`/api/earnings?limit=500&before=${before}`);
    history.push(...page.history);
    before = page.nextBefore;
  }
  return { ...first, history, nextBefore: null };
}

export type { KeyConfig, KeyView };
