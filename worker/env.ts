// The Worker's bindings (wrangler.toml + secrets). One definition for router and objects.
import type { SellerKey } from "../objects/seller-key.ts";
import type { PoolIndex } from "../objects/pool-index.ts";
import type { BuyerWallet } from "../objects/buyer-wallet.ts";
import type { ProofStore } from "../objects/proof-store.ts";
import type { SellerRoom } from "../objects/seller-room.ts";
import type { WebhookMessage } from "./webhooks/events.ts";

export interface Env {
  SELLER_KEY: DurableObjectNamespace<SellerKey>;
  POOL_INDEX: DurableObjectNamespace<PoolIndex>;
  /** One live room per seller (S8, objects/seller-room.ts), reached only through GET /api/live/:room. */
  SELLER_ROOM: DurableObjectNamespace<SellerRoom>;
  VAULT: KVNamespace;
  POOLS: KVNamespace;
  UPSTREAM_BASE_URLS: string;
  POOL_CACHE_MS: string;
  POOL_DEBOUNCE_MS: string;
  UPSTREAM_TIMEOUT_MS: string;
  DEPLOYED: string;
  OPS_TOKEN: string;
  VAULT_PRIVATE_KEYS: string;
  // payments (worker/payments/)
  BUYER_WALLET: DurableObjectNamespace<BuyerWallet>;
  PROOF_STORE: DurableObjectNamespace<ProofStore>;
  SPEND: KVNamespace;
  /** Ops index of disputes (worker/disputes.ts); each buyer's wallet holds the truth. */
  DISPUTES: KVNamespace;
  MARKETPLACE_FEE_BPS: string;
  DEV_FAUCET: string;
  MPP_REALM: string;
  STRIPE_API_BASE: string;
  TEMPO_RECIPIENT?: string;
  TEMPO_CURRENCY?: string;
  TEMPO_TESTNET?: string;
  /** Secrets: HMAC key for challenge ids (>= 32 bytes); Stripe API key and webhook secret. */
  MPP_SECRET_KEY?: string;
  STRIPE_SECRET_KEY?: string;
  STRIPE_WEBHOOK_SECRET?: string;
  // seller accounts (worker/db.ts, worker/auth.ts, worker/auth-api.ts, seller API)
  /** Postgres through Hyperdrive (Supabase in production; PGlite or PostgreSQL locally). */
  HYPERDRIVE: Hyperdrive;
  /** Supabase project URL ("" = none): JWKS, issuer and the Admin API for account deletion. */
  SUPABASE_URL?: string;
  /** Expected JWT `iss` ("" = SUPABASE_URL + /auth/v1, or the dev issuer). */
  AUTH_ISSUER?: string;
  /** Public JWKS as JSON (dev, tests, pinned keys); overrides the remote one. */
  AUTH_JWKS?: string;
  /** Secret, dev only: private ES256 JWK of the local sign-in. Never set when DEPLOYED=1. */
  AUTH_DEV_SIGNING_KEY?: string;
  /** Supabase anon (publishable) key: public, for supabase-js in the dashboard's sign-in page. */
  SUPABASE_ANON_KEY?: string;
  /** Secret: Supabase service-role key, for deleting the auth user when an account closes. */
  SUPABASE_SERVICE_ROLE_KEY?: string;
  /** Persona's REST API (https://api.withpersona.com; a fake on loopback in tests). */
  PERSONA_API_BASE?: string;
  /** Persona inquiry template (itmpl_...). */
  PERSONA_TEMPLATE_ID?: string;
  /** Secrets: Persona API key and the webhook's signing secret (wbhsec_...). */
  PERSONA_API_KEY?: string;
  PERSONA_WEBHOOK_SECRET?: string;
  /** Milliseconds a key object waits after earning before flushing to Postgres. */
  EARNINGS_FLUSH_MS?: string;
  /** Milliseconds a key object keeps per-request bookkeeping in memory before one batched commit (0: commit per request). */
  PERSIST_MS?: string;
  /** Upstream calls a key needs in its last day before it can serve in premium (P2). */
  PREMIUM_MIN_CALLS?: string;
  // seller webhooks (worker/webhooks/, docs/webhooks.md)
  /** Queue `cn2-webhooks`: seller events and their per-endpoint deliveries. */
  WEBHOOKS: Queue<WebhookMessage>;
  /** Secret: JSON [{kid, key}] newest first, AES-256-GCM keys sealing signing secrets at rest. */
  WEBHOOK_SECRET_KEYS?: string;
  /** "1" only in dev and tests: http and loopback webhook receivers (ignored when DEPLOYED=1). */
  DEV_WEBHOOKS_ALLOW_HTTP?: string;
  /** First retry delay in seconds, doubling per attempt. */
  WEBHOOK_RETRY_BASE_SECONDS?: string;
  /** Milliseconds a webhook receiver has to answer. */
  WEBHOOK_TIMEOUT_MS?: string;
}
