// A small client for the cn2 HTTP API (docs/api.md), shared by the seller CLI, the ops
// inspection script and the dev orchestrator. Node only (reads .dev.vars and the seller
// session file).
//
// Two bearer secrets: the ops token (/ops/*) and the signed-in seller's session token (the
// seller API, /api/*). Each goes into the Authorization header of its own calls and
// nowhere else. Errors never include request headers, and `redact` scrubs both from any
// message before a CLI prints it.
import type { SellerProfile } from "../schema/tables.ts";
import { chmodSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { CreateKeyInput, Envelope, KeyConfigPatch, KeyInspection, KeyView, PoolSnapshot, Region, Tier } from "../schema/wire.ts";

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const DEV_VARS_PATH = join(REPO_ROOT, ".dev.vars");
export const DEFAULT_BASE_URL = "http://127.0.0.1:8787";
/** Where `npm run seller -- login` keeps the seller's session token (git-ignored, mode 0600; CN2_SESSION_FILE overrides). */
export const SESSION_PATH = process.env.CN2_SESSION_FILE || join(REPO_ROOT, ".cn2-session.json");

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
// The seller session file

export interface SellerSession {
  token: string;
  sellerId: string;
  email: string | null;
  /** Seconds since the epoch. */
  expiresAt: number;
}

type SessionFile = { sessions: Record<string, SellerSession> };

function readSessions(path: string): SessionFile {
  try {
    const parsed = JSON.parse(readFileSync(path, "utf8")) as SessionFile;
    return parsed && typeof parsed.sessions === "object" ? parsed : { sessions: {} };
  } catch {
    return { sessions: {} };
  }
}

/** The saved session for a deployment (by base URL), if any. */
export function readSession(baseUrl: string, path = SESSION_PATH): SellerSession | undefined {
  return readSessions(path).sessions[baseUrl.replace(/\/+$/, "")];
}

export function saveSession(baseUrl: string, session: SellerSession | null, path = SESSION_PATH): void {
  const file = readSessions(path);
  const key = baseUrl.replace(/\/+$/, "");
  if (session) file.sessions[key] = session;
  else delete file.sessions[key];
  if (Object.keys(file.sessions).length === 0) return void rmSync(path, { force: true });
  writeFileSync(path, JSON.stringify(file, null, 2) + "\n", { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** The `exp` of a JWT, without verifying it (the server does that). */
export function tokenExpiry(token: string): number {
  try {
    const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")) as { exp?: unknown };
    return typeof payload.exp === "number" ? payload.exp : 0;
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------------------------
// The client

export interface ApiClientOptions {
  /** Default: $CN2_URL, else http://127.0.0.1:8787. */
  baseUrl?: string;
  /** Ops token for /ops/*. Default: $CN2_OPS_TOKEN, else OPS_TOKEN from .dev.vars (written by `npm start`). */
  token?: string;
  /** Seller session token for the seller API. Default: $CN2_SELLER_TOKEN, else the session saved by `login`. */
  sellerToken?: string;
}

export type ApiClient = ReturnType<typeof apiClient>;

/** Which credential a call carries. */
type Auth = "ops" | "seller" | "none";

export function apiClient(options: ApiClientOptions = {}) {
  const baseUrl = (options.baseUrl ?? process.env.CN2_URL ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
  const token = options.token ?? (process.env.CN2_OPS_TOKEN || readDevVars()?.OPS_TOKEN || undefined);
  let sellerToken = options.sellerToken ?? (process.env.CN2_SELLER_TOKEN || readSession(baseUrl)?.token || undefined);

  async function call<T>(method: string, path: string, body?: unknown, auth: Auth | boolean = "ops", extraHeaders: Record<string, string> = {}): Promise<T> {
    const mode: Auth = auth === true ? "ops" : auth === false ? "none" : auth;
    const headers: Record<string, string> = { accept: "application/json", ...extraHeaders };
    if (mode === "ops") {
      if (!token) throw new ApiError(0, "no_token", "no ops token: set CN2_OPS_TOKEN or run `npm start` (it writes .dev.vars)");
      headers.authorization = `Bearer ${token}`;
    } else if (mode === "seller") {
      if (!sellerToken) throw new ApiError(0, "not_signed_in", "not signed in: run `npm run seller -- login` (or set CN2_SELLER_TOKEN)");
      headers.authorization = `Bearer ${sellerToken}`;
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
    get hasSellerToken() {
      return sellerToken !== undefined;
    },
    /** Use this seller session from now on (after a sign-in). */
    useSellerToken(next: string) {
      sellerToken = next;
    },
    /** Any JSON call, for endpoints without a helper below. */
    call,
    healthz: () => call<{ ok: boolean }>("GET", "/healthz", undefined, "none"),
    vaultPublicKey: () => call<VaultPublicKeys>("GET", "/api/vault/public-key", undefined, "none"),

    /** Dev sign-in (only where the deployment has a dev signing key): the account and a session token. */
    devSignIn: (email: string) =>
      call<{ token: string; expiresAt: number; seller: { id: string; email: string } }>("POST", "/auth/dev/sign-in", { email }, "none", { "cn2-csrf": "1" }),
    me: () => call<{ seller: SellerProfile }>("GET", "/api/me", undefined, "seller").then((r) => r.seller),

    createKey: (input: { keyId: string; sellerId?: string; envelope: Envelope; config: CreateKeyInput["config"] }) =>
      call<{ key: KeyView }>("POST", "/api/keys", input, "seller").then((r) => r.key),
    listKeys: () => call<{ keys: KeyView[] }>("GET", "/api/keys", undefined, "seller").then((r) => r.keys),
    getKey: (keyId: string) => call<{ key: KeyView }>("GET", `/api/keys/${seg(keyId)}`, undefined, "seller").then((r) => r.key),
    patchKey: (keyId: string, patch: KeyConfigPatch) =>
      call<{ key: KeyView }>("PATCH", `/api/keys/${seg(keyId)}`, patch, "seller").then((r) => r.key),
    deleteKey: (keyId: string) => call<{ deleted: boolean }>("DELETE", `/api/keys/${seg(keyId)}`, undefined, "seller"),
    earnings: () => call<Record<string, unknown>>("GET", "/api/earnings", undefined, "seller"),

    inspectKey: (keyId: string) => call<{ key: KeyInspection }>("GET", `/ops/keys/${seg(keyId)}`).then((r) => r.key),
    disableKey: (keyId: string) =>
      call<{ key: KeyInspection }>("POST", `/ops/keys/${seg(keyId)}/disable`).then((r) => r.key),
    drainKey: (keyId: string) => call<Record<string, unknown>>("POST", `/ops/keys/${seg(keyId)}/drain`),
    pool: (provider: string, region: Region | string, tier: Tier | string) =>
      call<{ pool: PoolSnapshot }>("GET", `/ops/pools/${seg(provider)}/${seg(region)}/${seg(tier)}`).then((r) => r.pool),

    /** Scrub this client's tokens from text that is about to be printed. */
    redact: (text: string) => redact(redact(text, token), sellerToken),
  };
}

/** GET /api/me */
export type { SellerProfile } from "../schema/tables.ts";

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
    const hint = res.status !== 401 ? "" : path.startsWith("/ops/") ? " (check CN2_OPS_TOKEN or .dev.vars)" : path.startsWith("/api/") ? " (sign in again: npm run seller -- login)" : "";
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
  const scrubbed = redact(line.replace(/\s*\n\s*/g, " "), token ?? process.env.CN2_OPS_TOKEN ?? readDevVarsQuietly()?.OPS_TOKEN);
  return redact(scrubbed, process.env.CN2_SELLER_TOKEN || readSessionQuietly());
}

function readSessionQuietly(): string | undefined {
  try {
    return readSession(process.env.CN2_URL ?? DEFAULT_BASE_URL)?.token;
  } catch {
    return undefined;
  }
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
  // A reader that stops early (`| head`) closes the pipe: that is the reader's choice, not
  // an error, so the CLI ends quietly instead of printing a stack.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "EPIPE") throw err;
      process.exit(0);
    });
  }
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(formatError(err) + "\n");
    process.exitCode = err instanceof CliError ? 2 : 1;
  });
}

/** Pretty JSON for terminals. */
export const pretty = (value: unknown) => JSON.stringify(value, null, 2);
