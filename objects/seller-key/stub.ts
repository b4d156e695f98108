// Where a key lives: its ciphertext and registry metadata in KV `VAULT`, its state in a
// SellerKey object. EU keys' objects are created in the EU jurisdiction when deployed;
// workerd refuses jurisdictions locally, so this is the one place that chooses.
import { isDevelopment } from "../../core/environment.ts";
import type { Home, Region } from "../../schema/wire.ts";
import type { Env } from "../../core/env.ts";

/** KV metadata beside each ciphertext: enough to find and list keys, nothing secret. */
export interface VaultMetadata {
  sellerId: string;
  home: Home;
}

export const vaultEntryKey = (keyId: string) => `key:${keyId}`;

export const homeFor = (region: Region): Home => (region === "eu" ? "eu" : "default");

/** Object ids by home and key id: idFromName hashes the name, a cost per proxied request. */
const ids = new Map<string, DurableObjectId>();
const IDS_MAX = 10_000;

export function keyStub(env: Env, keyId: string, home: Home) {
  const eu = home === "eu" && !isDevelopment(env);
  const ns = eu ? env.SELLER_KEY.jurisdiction("eu") : env.SELLER_KEY;
  const cacheKey = (eu ? "eu:" : "") + keyId;
  let id = ids.get(cacheKey);
  if (!id) {
    if (ids.size >= IDS_MAX) ids.clear();
    id = ns.idFromName(keyId);
    ids.set(cacheKey, id);
  }
  return ns.get(id);
}

/** The stub for an existing key, or null when the key is unknown. */
export async function findKey(env: Env, keyId: string) {
  const entry = await env.VAULT.getWithMetadata<VaultMetadata>(vaultEntryKey(keyId));
  if (entry.value === null || !entry.metadata) return null;
  return { stub: keyStub(env, keyId, entry.metadata.home), meta: entry.metadata };
}

/** All keys of one seller, from the KV registry. */
export async function listKeyIds(env: Env, sellerId: string | null): Promise<{ keyId: string; meta: VaultMetadata }[]> {
  const out: { keyId: string; meta: VaultMetadata }[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.VAULT.list<VaultMetadata>({ prefix: "key:", cursor });
    for (const k of page.keys) {
      if (k.metadata && (sellerId === null || k.metadata.sellerId === sellerId)) out.push({ keyId: k.name.slice(4), meta: k.metadata });
    }
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
  return out;
}
