// Reaching the ProofStore shard that holds a key, without the class (worker/payments/atomic-store.ts).
import type { Env } from "../../core/env.ts";

// Keys spread over PROOF_SHARDS objects, each serialising the operations on its keys.
export const PROOF_SHARDS = 16;

/** FNV-1a: a stable, cheap spread of keys over shards. */
function shardOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % PROOF_SHARDS;
}

export const proofShardName = (i: number) => `proofs:${i}`;

export function proofStoreStub(env: Pick<Env, "PROOF_STORE">, key: string) {
  return env.PROOF_STORE.get(env.PROOF_STORE.idFromName(proofShardName(shardOf(key))));
}
