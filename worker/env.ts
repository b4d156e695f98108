// The Worker's bindings (wrangler.toml + secrets). One definition for router and objects.
import type { SellerKey } from "../objects/seller-key.ts";
import type { PoolIndex } from "../objects/pool-index.ts";

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
}
