// Seller key management (S2, S3, PR5) for the signed-in seller. Postgres `keys` is the
// system of record for configuration (row-level security: a seller sees and changes only
// its own rows, so another seller's key is a plain 404); every change also reaches the
// key's SellerKey object, and through it the pool index, before the API answers, so it
// applies from the next request. The ciphertext is checked by the key object, never here.
//
// Ordering, so that no failure leaves the two disagreeing in a way a retry cannot mend:
//   create  in one seller transaction: insert the row, then create the object; the row
//           commits only if the object took the key (undone if the commit then fails)
//   edit    in one seller transaction: update the row, then configure the object
//   remove  check ownership; the object pauses, flushes its earnings and deletes itself
//           (KV ciphertext, pool entry, storage); then the row goes. A retry after a
//           failure in between finds the row and finishes.
import { keyConfigToRow, rowToKeyConfig, sqlState, DB_ERRORS, type KeyRow } from "../../schema/tables.ts";
import { CreateKeySchema, KeyConfigPatchSchema, KeyConfigSchema, KeyIdSchema, type KeyConfig, type KeyView } from "../../schema/wire.ts";
import type { Env } from "../../core/env.ts";
import { ApiError, json, parseOr400, readJson, unwrap } from "../../core/http.ts";
import { INVALID_KEY_ID_MESSAGE, isKeyIdFor } from "../../core/key-id.ts";
import { findKey, homeFor, keyStub } from "../../objects/seller-key/stub.ts";
import { sellerRoute, type SellerContext, type Tx } from "./profile.ts";

const keyIdParam = (c: SellerContext) => parseOr400(KeyIdSchema, c.request.params?.id ?? "", "key id");

async function ownRow(tx: Tx, keyId: string, forUpdate = false): Promise<KeyRow> {
  const [row] = forUpdate
    ? await tx<KeyRow[]>`select * from public.keys where key_id = ${keyId} for update`
    : await tx<KeyRow[]>`select * from public.keys where key_id = ${keyId}`;
  // Row-level security hides other sellers' keys: theirs and a missing one look the same.
  if (!row) throw new ApiError("key_not_found", `no key ${keyId}`);
  return row;
}

/** A key as the API shows it: configuration from Postgres, live health from its object. */
async function viewOf(env: Env, row: KeyRow): Promise<KeyView> {
  const live = await keyStub(env, row.key_id, row.home).describe().catch(() => null);
  return {
    keyId: row.key_id,
    sellerId: row.seller_id,
    home: row.home,
    config: rowToKeyConfig(row),
    health: live?.ok ? live.value.health : { state: "disabled", score: 0, latencyMs: 0, coolingUntil: 0, reason: "key object unavailable" },
    createdAt: row.created_at.getTime(),
    servingTier: live?.ok ? live.value.servingTier : null,
    trackRecord: live?.ok ? live.value.trackRecord : null,
  };
}

export const createKey = sellerRoute(async (c) => {
  const body = await readJson(c.request);
  const sellerId = c.identity.id;
  // Before any lookup: an id not made for this seller (another seller's, say) is refused
  // exactly like a malformed one, so whether it exists is never revealed (core/key-id.ts).
  if (typeof body !== "object" || body === null || Array.isArray(body)) parseOr400(CreateKeySchema, body, "key");
  if (!(await isKeyIdFor(sellerId, (body as { keyId?: unknown }).keyId))) throw new ApiError("invalid_key_id", INVALID_KEY_ID_MESSAGE);
  const input = parseOr400(CreateKeySchema, body, "key");
  if (input.sellerId !== undefined && input.sellerId !== sellerId) {
    throw new ApiError("invalid_request", "sellerId must be your own seller id (GET /api/me): the envelope is bound to it");
  }
  if (await findKey(c.env, input.keyId)) throw new ApiError("key_exists", `key ${input.keyId} already exists`);
  const home = homeFor(input.config.region);
  const stub = keyStub(c.env, input.keyId, home);
  let created = false;
  try {
    const key = await c.asSeller(async (tx) => {
      await insertKeyRow(tx, input.keyId, sellerId, home, input.config);
      const view = unwrap(await stub.create({ keyId: input.keyId, sellerId, envelope: input.envelope, config: input.config }, home));
      created = true;
      return view;
    });
    return json({ key }, 201);
  } catch (error) {
    // The object took the key but the row did not commit: undo the object's side.
    if (created) await stub.remove().catch(() => console.error(JSON.stringify({ evt: "key_create_undo_failed", keyId: input.keyId })));
    if (sqlState(error) === DB_ERRORS.unique_violation) throw new ApiError("key_exists", `key ${input.keyId} already exists`);
    throw error;
  }
});

async function insertKeyRow(tx: Tx, keyId: string, sellerId: string, home: KeyRow["home"], config: KeyConfig) {
  const r = keyConfigToRow(keyId, sellerId, home, config);
  await tx`
    insert into public.keys (key_id, seller_id, provider, price_micros, route_prices, requests_per_minute, max_concurrent,
                             daily_budget_micros, monthly_budget_micros, allowed_routes, region, tier, status, home)
    values (${r.key_id}, ${r.seller_id}, ${r.provider}, ${r.price_micros}, ${tx.json(r.route_prices)},
            ${r.requests_per_minute}, ${r.max_concurrent}, ${r.daily_budget_micros}, ${r.monthly_budget_micros},
            ${r.allowed_routes}::text[], ${r.region}, ${r.tier}, ${r.status}, ${r.home})`;
}

export const listKeys = sellerRoute(async (c) => {
  const rows = await c.asSeller((tx) => tx<KeyRow[]>`select * from public.keys order by created_at, key_id`);
  return json({ keys: await Promise.all(rows.map((row) => viewOf(c.env, row))) });
});

export const getKey = sellerRoute(async (c) => {
  const keyId = keyIdParam(c);
  const row = await c.asSeller((tx) => ownRow(tx, keyId));
  return json({ key: await viewOf(c.env, row) });
});

/** Edit (S3): validated, stored, and applied by the key object before the answer. */
export async function applyKeyPatch(c: SellerContext, keyId: string, rawPatch: unknown): Promise<KeyView> {
  if (typeof rawPatch !== "object" || rawPatch === null || Array.isArray(rawPatch)) throw new ApiError("invalid_request", "config edit must be a JSON object");
  if ("provider" in rawPatch) throw new ApiError("invalid_request", "provider cannot change: add a new key instead");
  const patch = parseOr400(KeyConfigPatchSchema, rawPatch, "config");
  return c.asSeller(async (tx) => {
    const row = await ownRow(tx, keyId, true);
    const next = parseOr400(KeyConfigSchema, { ...rowToKeyConfig(row), ...patch }, "config");
    if (next.region === "eu" && row.home !== "eu") {
      throw new ApiError("invalid_request", "an EU-tagged key must live in the EU from its creation: add the key again with region eu");
    }
    await tx`
      update public.keys set
        price_micros = ${next.priceMicros}, route_prices = ${tx.json(next.routePrices)},
        requests_per_minute = ${next.requestsPerMinute}, max_concurrent = ${next.maxConcurrent},
        daily_budget_micros = ${next.dailyBudgetMicros}, monthly_budget_micros = ${next.monthlyBudgetMicros},
        allowed_routes = ${next.allowedRoutes}::text[], region = ${next.region}, tier = ${next.tier}, status = ${next.status}
      where key_id = ${keyId}`;
    const view = unwrap(await keyStub(c.env, keyId, row.home).configure(patch));
    return { ...view, config: next };
  });
}

export const patchKey = sellerRoute(async (c) => {
  const keyId = keyIdParam(c);
  return json({ key: await applyKeyPatch(c, keyId, await readJson(c.request)) });
});

const pauseRoute = (status: "active" | "paused") => sellerRoute(async (c) => json({ key: await applyKeyPatch(c, keyIdParam(c), { status }) }));
export const pauseKey = pauseRoute("paused");
export const resumeKey = pauseRoute("active");

export const deleteKey = sellerRoute(async (c) => {
  const keyId = keyIdParam(c);
  const row = await c.asSeller((tx) => ownRow(tx, keyId));
  await retireAndRemove(c.env, keyId, row.home);
  await c.asSeller((tx) => tx`delete from public.keys where key_id = ${keyId}`);
  return json({ deleted: true });
});

/**
 * Take a key out of service for good: the object stops taking requests, flushes its
 * earnings to the ledger (refusing to go on if it cannot: nothing earned is dropped), then
 * deletes its ciphertext, pool entry and storage. Safe to repeat.
 */
export async function retireAndRemove(env: Env, keyId: string, home: KeyRow["home"]): Promise<void> {
  const stub = keyStub(env, keyId, home);
  unwrap(await stub.retire());
  await stub.remove();
}

// ---------------------------------------------------------------------------------------
// Operators (/ops/*, ops token): keys by id, whoever owns them.

/** The stub of a key named in the path, or a clear 404. */
export async function existingKey(env: Env, rawId: string | undefined) {
  const keyId = parseOr400(KeyIdSchema, rawId ?? "", "key id");
  const found = await findKey(env, keyId);
  if (!found) throw new ApiError("key_not_found", `no key ${keyId}`);
  return found.stub;
}
