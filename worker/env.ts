// The Worker's bindings (wrangler.toml + secrets). One definition for router and objects.
import type { SellerKey } from "../objects/seller-key.ts";
import type { PoolIndex } from "../objects/pool-index.ts";
import type { BuyerWallet } from "../objects/buyer-wallet.ts";
import type { ProofStore } from "../objects/proof-store.ts";

export interface Env {
  SELLER_KEY: DurableObjectNamespace<SellerKey>;
  POOL_INDEX: DurableObjectNamespace<PoolIndex>;
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
}
