// Reaching a PoolIndex (one per provider/region/tier) and its KV snapshot, without the
// class: the router and the key objects use these.
import type { Env } from "../../core/env.ts";

export const poolSnapshotKey = (name: string) => `pool:${name}`;

export const poolStub = (env: Pick<Env, "POOL_INDEX">, name: string) => env.POOL_INDEX.get(env.POOL_INDEX.idFromName(name));
