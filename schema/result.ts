// What an RPC that can refuse answers (Durable Object methods, called by the Worker):
// the value, or a stable code and a human message. One shape for every object; each
// names its own codes (the key objects use the API's ErrorCode, the wallet its own).
import type { ErrorCode } from "./wire.ts";

export type Result<T, C extends string = ErrorCode> = { ok: true; value: T } | { ok: false; code: C; message: string };
