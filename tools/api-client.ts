// A small client for the cn2 HTTP API (docs/api.md), shared by the seller CLI, the ops
// inspection script and the dev orchestrator. Node only (reads .dev.vars).
//
// The ops token is a bearer secret: it goes into the Authorization header and nowhere
// else. Errors never include request headers, and `redact` scrubs it from any message
// before a CLI prints it.
import { readFileSync, realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { CreateKeyInput, Envelope, KeyConfigPatch, KeyInspection, KeyView, PoolSnapshot, Region, Tier } from "../schema/wire.ts";

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const DEV_VARS_PATH = join(REPO_ROOT, ".dev.vars");
export const DEFAULT_BASE_URL = "http://127.0.0.1:8787";

// ---------------------------------------------------------------------------------
// Response shapes (docs/api.md; KeyView and KeyInspection live in schema/wire.ts)

export type { KeyInspection, KeyView };
export interface VaultPublicKeys { current: string; keys: { kid: string; jwk: JsonWebKey }[] }

// ---------------------------------------------------------------------------------
// Errors

/** A failed API call: the API's stable `{error:{code,message}}`, or a local code. */
export class ApiError extends Error {
  status: number;
  code: string;
  requestId: string | undefined;
  constructor(status: number, code: string, message: string, requestId?: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

// ---------------------------------------------------------------------------------
// .dev.vars

/** dotenv-style KEY=value lines; surrounding single or double quotes are removed. */
export function parseDevVars(text: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    const key = line.slice(0, eq).trim().replace(/^export\s+/, "");
    let value = line.slice(eq + 1).trim();
    const q = value[0];
    if ((q === "'" || q === '"') && value.length >= 2 && value.endsWith(q)) value = value.slice(1, -1);
    vars[key] = value;
  }
  return vars;
}

export function readDevVars(path = DEV_VARS_PATH): Record<string, string> | undefined {
  try {
    return parseDevVars(readFileSync(path, "utf8"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

// ---------------------------------------------------------------------------------
// The client

export interface ApiClientOptions {
  /** Default: $CN2_URL, else http://127.0.0.1:8787. */
  baseUrl?: string;
  /** Default: $CN2_OPS_TOKEN, else OPS_TOKEN from .dev.vars (written by `npm start`). */
  token?: string;
}

export type ApiClient = ReturnType<typeof apiClient>;

export function apiClient(options: ApiClientOptions = {}) {
  const baseUrl = (options.baseUrl ?? process.env.CN2_URL ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
  const token = options.token ?? (process.env.CN2_OPS_TOKEN || readDevVars()?.OPS_TOKEN || undefined);

  async function call<T>(method: string, path: string, body?: unknown, auth = true): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (auth) {
      if (!token) throw new ApiError(0, "no_token", "no ops token: set CN2_OPS_TOKEN or run `npm start` (it writes .dev.vars)");
      headers.authorization = `Bearer ${token}`;
    }
    if (body !== undefined) headers["content-type"] = "application/json";
    let res: Response;
    try {
      res = await fetch(baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      throw new ApiError(0, "unreachable", `cannot reach cn2 at ${baseUrl}${cause ? ` (${cause})` : ""}; is \`npm start\` running?`);
    }
    return readResponse<T>(res, method, path);
  }

  return {
    baseUrl,
    hasToken: token !== undefined,
    /** Any JSON call, for endpoints without a helper below. */
    call,
    healthz: () => call<{ ok: boolean }>("GET", "/healthz", undefined, false),
    vaultPublicKey: () => call<VaultPublicKeys>("GET", "/api/vault/public-key", undefined, false),

    createKey: (input: { keyId: string; sellerId: string; envelope: Envelope; config: CreateKeyInput["config"] }) =>
      call<{ key: KeyView }>("POST", "/api/keys", input).then((r) => r.key),
    listKeys: (sellerId: string) =>
      call<{ keys: KeyView[] }>("GET", `/api/keys?sellerId=${encodeURIComponent(sellerId)}`).then((r) => r.keys),
    getKey: (keyId: string) => call<{ key: KeyView }>("GET", `/api/keys/${seg(keyId)}`).then((r) => r.key),
    patchKey: (keyId: string, patch: KeyConfigPatch) =>
      call<{ key: KeyView }>("PATCH", `/api/keys/${seg(keyId)}`, patch).then((r) => r.key),
    deleteKey: (keyId: string) => call<{ deleted: boolean }>("DELETE", `/api/keys/${seg(keyId)}`),

    inspectKey: (keyId: string) => call<{ key: KeyInspection }>("GET", `/ops/keys/${seg(keyId)}`).then((r) => r.key),
    disableKey: (keyId: string) =>
      call<{ key: KeyInspection }>("POST", `/ops/keys/${seg(keyId)}/disable`).then((r) => r.key),
    drainKey: (keyId: string) => call<Record<string, unknown>>("POST", `/ops/keys/${seg(keyId)}/drain`),
    pool: (provider: string, region: Region | string, tier: Tier | string) =>
      call<{ pool: PoolSnapshot }>("GET", `/ops/pools/${seg(provider)}/${seg(region)}/${seg(tier)}`).then((r) => r.pool),

    /** Scrub this client's token from text that is about to be printed. */
    redact: (text: string) => redact(text, token),
  };
}

const seg = (s: string) => encodeURIComponent(s);

async function readResponse<T>(res: Response, method: string, path: string): Promise<T> {
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = undefined;
  }
  if (res.ok) {
    if (json === undefined) throw new ApiError(res.status, "invalid_response", `${method} ${path}: response is not JSON`);
    return json as T;
  }
  const requestId = res.headers.get("cn2-request-id") ?? undefined;
  const error = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  if (error && typeof error.code === "string") {
    const hint = res.status === 401 ? " (check CN2_OPS_TOKEN or .dev.vars)" : "";
    throw new ApiError(res.status, error.code, `${String(error.message ?? error.code)}${hint}`, requestId);
  }
  throw new ApiError(res.status, `http_${res.status}`, `${method} ${path} answered ${res.status} ${res.statusText}`.trim(), requestId);
}

// ---------------------------------------------------------------------------------
// CLI plumbing

/** A mistake in how a command was invoked or in its input: printed without a stack. */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

export function redact(text: string, token: string | undefined): string {
  return token && token.length >= 4 ? text.split(token).join("***") : text;
}

/** One line for stderr: `error: <code>: <message>`, never the token, never a stack. */
export function formatError(err: unknown, token?: string): string {
  let line: string;
  if (err instanceof ApiError) {
    line = `error: ${err.code}: ${err.message}${err.requestId ? ` (request ${err.requestId})` : ""}`;
  } else if (err instanceof Error) {
    line = `error: ${err.message}`;
  } else {
    line = `error: ${String(err)}`;
  }
  return redact(line.replace(/\s*\n\s*/g, " "), token ?? process.env.CN2_OPS_TOKEN ?? readDevVarsQuietly()?.OPS_TOKEN);
}

function readDevVarsQuietly(): Record<string, string> | undefined {
  try {
    return readDevVars();
  } catch {
    return undefined;
  }
}

/** True when `importMetaUrl` is the script Node was started with (not an import). */
export function isMain(importMetaUrl: string): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(importMetaUrl));
  } catch {
    return false;
  }
}

/** Run a CLI's main: print a one-line error and exit non-zero on failure. */
export function runCli(main: (argv: string[]) => Promise<void>): void {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(formatError(err) + "\n");
    process.exitCode = err instanceof CliError ? 2 : 1;
  });
}

/** Pretty JSON for terminals. */
export const pretty = (value: unknown) => JSON.stringify(value, null, 2);
