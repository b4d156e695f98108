// Seller key management (S2, S3). Until seller accounts land, callers use the ops token
// and name the seller; the ciphertext is checked by the key object, never by us here.
import { CreateKeySchema, KeyIdSchema, SellerIdSchema, type KeyView } from "../schema/wire.ts";
import type { Env } from "./env.ts";
import { ApiError, json, parseOr400, readJson, unwrap } from "./http.ts";
import { findKey, homeFor, keyStub, listKeyIds } from "./keys.ts";

export async function createKey(request: Request, env: Env): Promise<Response> {
  const input = parseOr400(CreateKeySchema, await readJson(request), "key");
  if (await findKey(env, input.keyId)) throw new ApiError("key_exists", `key ${input.keyId} already exists`);
  const home = homeFor(input.config.region);
  const view = unwrap(await keyStub(env, input.keyId, home).create(input, home));
  return json({ key: view }, 201);
}

export async function listKeys(request: Request, env: Env): Promise<Response> {
  const sellerParam = new URL(request.url).searchParams.get("sellerId");
  const sellerId = sellerParam === null ? null : parseOr400(SellerIdSchema, sellerParam, "sellerId");
  const ids = await listKeyIds(env, sellerId);
  const keys: KeyView[] = [];
  for (const { keyId, meta } of ids) {
    const result = await keyStub(env, keyId, meta.home).describe();
    if (result.ok) keys.push(result.value);
  }
  return json({ keys });
}

/** The stub of a key named in the path, or a clear 404. */
export async function existingKey(env: Env, rawId: string | undefined) {
  const keyId = parseOr400(KeyIdSchema, rawId ?? "", "key id");
  const found = await findKey(env, keyId);
  if (!found) throw new ApiError("key_not_found", `no key ${keyId}`);
  return found.stub;
}

export async function getKey(env: Env, keyId: string | undefined): Promise<Response> {
  return json({ key: unwrap(await (await existingKey(env, keyId)).describe()) });
}

export async function patchKey(request: Request, env: Env, keyId: string | undefined): Promise<Response> {
  const stub = await existingKey(env, keyId);
  const patch = await readJson(request);
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) throw new ApiError("invalid_request", "config edit must be a JSON object");
  if ("provider" in patch) throw new ApiError("invalid_request", "provider cannot change: add a new key instead");
  return json({ key: unwrap(await stub.configure(patch)) });
}

export async function deleteKey(env: Env, keyId: string | undefined): Promise<Response> {
  await (await existingKey(env, keyId)).remove();
  return json({ deleted: true });
}

