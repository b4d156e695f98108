// Pool snapshots as the router reads them: from KV, kept in isolate memory for
// POOL_CACHE_MS so the hot path rarely waits on KV, and never on a central object.
import { poolName, type PoolSnapshot, type Region, type Tier } from "../../schema/wire.ts";
import { poolSnapshotKey } from "../../objects/pool-index/stub.ts";
import type { Env } from "../../core/env.ts";
import { numberSetting } from "../../core/settings.ts";
import { RouteCandidates, type Constraints } from "./routing.ts";

const cache = new Map<string, { at: number; snapshot: PoolSnapshot | null }>();

/**
 * The common case, every pool fresh in this isolate's memory, without a promise: null
 * when any of them must be read from KV (then use readPools).
 */
export function cachedPools(env: Env, provider: string, regions: readonly Region[], tier: Tier, now = Date.now()): PoolSnapshot[] | null {
  const out: PoolSnapshot[] = [];
  for (const region of regions) {
    const hit = fresh(env, poolName(provider, region, tier), now);
    if (!hit) return null;
    if (hit.snapshot) out.push(hit.snapshot);
  }
  return out;
}

/** Reads from KV in progress, by pool name: requests that find a pool expired together share one. */
const reading = new Map<string, Promise<PoolSnapshot | null>>();

export async function readPools(env: Env, provider: string, regions: readonly Region[], tier: Tier): Promise<PoolSnapshot[]> {
  const now = Date.now();
  const snaps = await Promise.all(
    regions.map((region) => {
      const name = poolName(provider, region, tier);
      const hit = fresh(env, name, now);
      if (hit) return hit.snapshot;
      // When a pool expires under load, every request in flight finds it expired: one KV read
      // and one parse serve them all (a 10,000-key snapshot is 1.8 MB), and they all get the
      // same snapshot object, so its prepared candidates are built once (routeCandidates).
      // With POOL_CACHE_MS 0 (tests) each request reads for itself, as it asked.
      const inFlight = reading.get(name);
      if (inFlight) return inFlight;
      const read = env.POOLS.get<PoolSnapshot>(poolSnapshotKey(name), "json").then((snapshot) => {
        cache.set(name, { at: now, snapshot });
        return snapshot;
      });
      if (numberSetting(env.POOL_CACHE_MS, 3000) > 0) {
        reading.set(name, read);
        void read.then(() => reading.delete(name), () => reading.delete(name));
      }
      return read;
    }),
  );
  return snaps.filter((s): s is PoolSnapshot => s !== null);
}

/** The isolate's copy of a pool snapshot, if younger than POOL_CACHE_MS. */
function fresh(env: Env, name: string, now: number) {
  const hit = cache.get(name);
  return hit && now - hit.at < numberSetting(env.POOL_CACHE_MS, 3000) ? hit : undefined;
}

/** In-flight requests this isolate has sent to each key: the "load" in routing. */
const inFlight = new Map<string, number>();
export const localLoad = (keyId: string) => inFlight.get(keyId) ?? 0;
export function trackLoad(keyId: string, delta: 1 | -1) {
  const n = (inFlight.get(keyId) ?? 0) + delta;
  if (n <= 0) inFlight.delete(keyId);
  else inFlight.set(keyId, n);
}

/**
 * The prepared candidates for this request kind (pools, regions, method and path): built
 * once per pool snapshot and reused until a snapshot is replaced or a cooling key's pause
 * ends, so per-request routing does not grow with the number of keys.
 */
const prepared = new Map<string, { snapshots: readonly PoolSnapshot[]; candidates: RouteCandidates }>();
const MAX_PREPARED = 512;

export function routeCandidates(snapshots: readonly PoolSnapshot[], c: Omit<Constraints, "maxPrice">, kind: string): RouteCandidates {
  const key = `${kind}|${c.regions.join(",")}|${c.method} ${c.path}`;
  const hit = prepared.get(key);
  if (hit && c.now < hit.candidates.until && hit.snapshots.length === snapshots.length && hit.snapshots.every((s, i) => s === snapshots[i])) return hit.candidates;
  const candidates = new RouteCandidates(snapshots, c);
  // Paths are the buyer's: bound the map (a full clear is cheap and rare).
  if (prepared.size >= MAX_PREPARED) prepared.clear();
  prepared.set(key, { snapshots, candidates });
  return candidates;
}
