// mppx's `AtomicStore` over ProofStore objects: every key hashes to one of PROOF_SHARDS
// objects, which serialises the operations on it. `tryClaim` is one RPC; `update` is a
// compare-and-set loop (read, apply the caller's function here, write if unchanged),
// because a function cannot run inside the object. Values are JSON with bigints kept
// (mppx's tempo method stores bigint state), so methods read back exactly what they wrote.
import type { Store } from "mppx";
import type { Env } from "../../core/env.ts";
import { proofStoreStub } from "../../objects/proof-store/stub.ts";

const Json = {
  stringify: (value: unknown) => JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? { $bigint: v.toString() } : v)),
  parse: (text: string): unknown => JSON.parse(text, (_k, v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length === 1 && typeof (v as { $bigint?: unknown }).$bigint === "string"
      ? BigInt((v as { $bigint: string }).$bigint)
      : v),
};

const MAX_CAS_ATTEMPTS = 16;

const isMarker = (v: unknown): v is Store.ReplayMarker =>
  typeof v === "object" && v !== null && (v as { type?: unknown }).type === "mppx:replay" && typeof (v as { expires?: unknown }).expires === "number";

const parse = (raw: string | null): unknown => (raw === null ? null : Json.parse(raw));

export function proofStore(env: Pick<Env, "PROOF_STORE">): Store.AtomicStore {
  return {
    async get(key) {
      return parse((await proofStoreStub(env, key).read(key)).value) as never;
    },
    async put(key, value) {
      // A replay marker written with put keeps its expiry, so the alarm can remove it.
      await proofStoreStub(env, key).put(key, Json.stringify(value), isMarker(value) ? value.expires : null);
    },
    async delete(key) {
      await proofStoreStub(env, key).delete(key);
    },
    async update(key, fn) {
      const stub = proofStoreStub(env, key);
      for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
        const { value, version } = await stub.read(key);
        const change = fn(parse(value) as never);
        if (change.op === "noop") return change.result;
        const write = change.op === "delete"
          ? { op: "delete" as const }
          : { op: "set" as const, value: Json.stringify(change.value), expires: isMarker(change.value) ? change.value.expires : null };
        if (await stub.compareAndSet(key, version, write)) return change.result;
      }
      throw new Error("proof store: too much contention on one key");
    },
    async tryClaim(key, expires) {
      return proofStoreStub(env, key).tryClaim(key, expires, Json.stringify({ expires, type: "mppx:replay" }));
    },
  };
}
