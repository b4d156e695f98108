// Response helpers: every error is JSON with a stable code, a human message and the
// request id, so buyers, sellers and the router itself can act on it.
import { ERROR_CODES, H, type ErrorBody, type ErrorCode } from "../schema/wire.ts";
import * as v from "valibot";
import type { Result } from "../schema/result.ts";

export type { Result };

export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  constructor(code: ErrorCode, message: string, status?: number) {
    super(message);
    this.code = code;
    this.status = status ?? ERROR_CODES[code];
  }
}

export function errorResponse(code: ErrorCode, message: string, init: { status?: number; requestId?: string; headers?: HeadersInit } = {}): Response {
  const body: ErrorBody = { error: { code, message }, ...(init.requestId ? { requestId: init.requestId } : {}) };
  const headers = new Headers(init.headers);
  headers.set("content-type", "application/json");
  if (init.requestId) headers.set(H.requestId, init.requestId);
  return new Response(JSON.stringify(body), { status: init.status ?? ERROR_CODES[code], headers });
}

/** Request data quoted in an error message, cut short: an answer never grows with the request. */
export function clip(text: string, max = 120): string {
  return text.length > max ? `${text.slice(0, max)}… (${text.length} characters)` : text;
}

export function json(data: unknown, status = 200, headers?: HeadersInit): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json");
  return new Response(JSON.stringify(data), { status, headers: h });
}

/** Parse with valibot, turning issues into one readable 400 message. */
export function parseOr400<S extends v.GenericSchema>(schema: S, input: unknown, what: string): v.InferOutput<S> {
  const result = v.safeParse(schema, input);
  if (result.success) return result.output;
  const first = result.issues.slice(0, 3).map((i) => {
    const path = v.getDotPath(i);
    return path ? `${path}: ${i.message}` : i.message;
  });
  throw new ApiError("invalid_request", `invalid ${what}: ${first.join("; ")}`);
}

const MAX_JSON_BYTES = 64 * 1024;

/** Read a JSON request body (API routes only, never proxied bodies). */
export async function readJson(request: Request): Promise<unknown> {
  const length = Number(request.headers.get("content-length") ?? "0");
  if (length > MAX_JSON_BYTES) throw new ApiError("body_too_large", `JSON body over ${MAX_JSON_BYTES} bytes`);
  const text = await request.text();
  if (text.length > MAX_JSON_BYTES) throw new ApiError("body_too_large", `JSON body over ${MAX_JSON_BYTES} bytes`);
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError("invalid_json", "body is not valid JSON");
  }
}

const encoder = new TextEncoder();

/** The last secret's bytes: secrets are few and fixed (the ops token), encoded once. */
let lastSecret: { text: string; bytes: Uint8Array } | null = null;
function encoded(secret: string): Uint8Array {
  if (lastSecret?.text !== secret) lastSecret = { text: secret, bytes: encoder.encode(secret) };
  return lastSecret.bytes;
}

/**
 * Constant-time comparison of a candidate with a secret: the time depends on the
 * candidate's length only, never on where they differ or on the secret's length.
 */
export function safeEqual(candidate: string, secret: string): boolean {
  const x = encoder.encode(candidate);
  const y = encoded(secret);
  let diff = x.length ^ y.length;
  for (let i = 0; i < x.length; i++) diff |= x[i]! ^ (y[i] ?? 0);
  return diff === 0 && x.length > 0;
}

/**
 * What an object's RPC method returns: errors thrown across RPC lose their code, so
 * methods that can refuse return the refusal as data and the router turns it back.
 */

export async function attempt<T>(fn: () => T | Promise<T>): Promise<Result<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (err) {
    if (err instanceof ApiError) return { ok: false, code: err.code, message: err.message };
    throw err;
  }
}

export function unwrap<T, C extends ErrorCode>(result: Result<T, C>): T {
  if (result.ok) return result.value;
  throw new ApiError(result.code, result.message);
}

/**
 * Path and query of the request URL, which the runtime has already parsed and normalised
 * (so slicing it equals URL's pathname/search, without a URL object per request).
 */
export function splitUrl(url: string): { pathname: string; search: string } {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return { pathname: "/", search: "" };
  const hash = url.indexOf("#", start);
  const end = hash < 0 ? url.length : hash;
  const q = url.indexOf("?", start);
  if (q < 0 || q > end) return { pathname: url.slice(start, end), search: "" };
  return { pathname: url.slice(start, q), search: q + 1 < end ? url.slice(q, end) : "" };
}

/** A fresh request id: every answer carries one (`cn2-request-id`), and so does every log line. */
export const newRequestId = () => `req_${crypto.randomUUID().replaceAll("-", "")}`;

/** The answer for anything a handler threw: its code, or a bare internal error. */
export function failedResponse(err: unknown, requestId: string): Response {
  if (err instanceof ApiError) return errorResponse(err.code, err.message, { status: err.status, requestId });
  // Log the kind of failure only: error messages can carry request data.
  console.error(JSON.stringify({ evt: "unhandled", requestId, error: err instanceof Error ? err.name : "unknown" }));
  return errorResponse("internal_error", "internal error", { requestId });
}

/** Every answer carries its request id. */
export function withRequestId(response: Response, requestId: string): Response {
  if (response.headers.get(H.requestId) === requestId) return response;
  const out = new Response(response.body, response);
  out.headers.set(H.requestId, requestId);
  return out;
}

/**
 * Transport and browser hardening on every answer (PR22): HTTPS only for two years
 * (HSTS, preload-ready), no MIME sniffing, no referrer, never framed, and a CSP that lets an
 * API answer load nothing. The dashboard's pages get their own CSP from the static assets
 * (dashboard/public/_headers). The zone settings that go with it: docs/operations.md.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "strict-transport-security": "max-age=63072000; includeSubDomains; preload",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
};

function setSecurityHeaders(headers: Headers) {
  for (const name in SECURITY_HEADERS) headers.set(name, SECURITY_HEADERS[name]!);
}

/**
 * The answer with SECURITY_HEADERS. Set in place where the headers are ours to change; an
 * answer whose headers are immutable (from another object) is copied, unless it already
 * has them (the key objects set them on served answers, so the proxy's hot path never
 * copies). A WebSocket upgrade passes as it is.
 */
export function secured(response: Response): Response {
  if (response.status === 101 || response.headers.has("strict-transport-security")) return response;
  try {
    setSecurityHeaders(response.headers);
    return response;
  } catch {
    const out = new Response(response.body, response);
    setSecurityHeaders(out.headers);
    return out;
  }
}
