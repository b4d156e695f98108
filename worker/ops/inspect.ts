// Operator endpoints (M3): inspect a key or a pool, disable or drain a key.
import * as v from "valibot";
import { PROVIDER_IDS } from "../../schema/providers.ts";
import { poolName, RegionSchema, TierSchema } from "../../schema/wire.ts";
import { poolStub } from "../../objects/pool-index/stub.ts";
import type { Env } from "../../core/env.ts";
import { asService } from "../../schema/tables.ts";
import { withDb } from "../../core/postgres.ts";
import { ApiError, json, parseOr400, unwrap } from "../../core/http.ts";
import { existingKey } from "../seller/keys.ts";

export async function inspectKey(env: Env, keyId: string | undefined): Promise<Response> {
  return json({ key: unwrap(await (await existingKey(env, keyId)).inspect()) });
}

export async function disableKey(env: Env, keyId: string | undefined): Promise<Response> {
  return json({ key: unwrap(await (await existingKey(env, keyId)).disable("disabled by operator")) });
}

/** Reset a key's object (memory gone, storage kept), as a crash would; answers once it serves again. */
export async function restartKey(env: Env, keyId: string | undefined): Promise<Response> {
  const stub = await existingKey(env, keyId);
  // The abort fails the very call that asked for it: that failure is the restart.
  await stub.restart().catch(() => {});
  const key = unwrap(await (await existingKey(env, keyId)).inspect());
  return json({ restarted: true, key });
}

/**
 * Pause a key: the object at once (in an incident this must work even without the
 * database), then its row in Postgres, the system of record for configuration, so the
 * seller sees it paused and resumes it like any paused key.
 */
export async function drainKey(env: Env, keyId: string | undefined): Promise<Response> {
  const key = unwrap(await (await existingKey(env, keyId)).drain());
  await withDb(env, null, (sql) => asService(sql, (tx) => tx`update public.keys set status = 'paused' where key_id = ${key.keyId}`)).catch((error: unknown) =>
    console.error(JSON.stringify({ evt: "drain_not_recorded", keyId: key.keyId, error: error instanceof ApiError ? error.code : "db_error" })));
  return json({ key });
}

const PoolParams = v.object({ provider: v.picklist(PROVIDER_IDS, "unknown provider"), region: RegionSchema, tier: TierSchema });

export async function inspectPool(env: Env, params: Record<string, string>): Promise<Response> {
  const { provider, region, tier } = parseOr400(PoolParams, params, "pool");
  const name = poolName(provider, region, tier);
  return json({ pool: await poolStub(env, name).snapshot(name) });
}
