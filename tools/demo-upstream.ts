// A fake of the provider APIs (OpenAI, Anthropic, Gemini, Groq) speaking their real wire
// formats on loopback. `npm start` points the Worker at it, the workerd test suite calls it
// over real HTTP, and benchmarks hammer it, so the hot path avoids per-request logging,
// URL parsing and needless allocation, and keep-alive stays on.
//
// It checks what a real provider would see: the credential must be a seller's
// (`sk-demo-…`) in that provider's own auth header, and any buyer or cn2 credential that
// leaked through the Worker is refused with 400 `leaked_header`. Failures (statuses,
// delays, cut or held streams) are injected per credential through `/__demo/*`, and
// `/__demo/log` tells tests which credential served what and how each response ended.
// Request bodies are read only for `model`/`stream`, never logged.
//
//   node tools/demo-upstream.ts [--port 8788] [--host 127.0.0.1] [--delay-ms 0]
//
// `--delay-ms` makes every answer wait that long before its headers (a provider's time to
// first byte; a credential's own injected delay takes precedence): benchmarks use it to
// see what the proxy adds when the upstream is not instant (bench --upstream-delay).
import http from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import { realpathSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import * as v from "valibot";

export interface DemoUpstream {
  url: string;
  port: number;
  close(): Promise<void>;
}

type ProviderName = "openai" | "anthropic" | "google" | "groq";
/** The wire format a provider speaks: Groq is OpenAI-compatible. */
type Dialect = "openai" | "anthropic" | "google";

export function upstreamBaseUrls(url: string): Record<ProviderName, string> {
  const base = url.replace(/\/+$/, "");
  return { openai: `${base}/openai`, anthropic: `${base}/anthropic`, google: `${base}/google`, groq: `${base}/groq/openai` };
}

interface ProviderSpec {
  name: ProviderName;
  prefix: string;
  dialect: Dialect;
  /** Lowercase header carrying the credential; `authorization` means `Bearer <cred>`. */
  authHeader: string;
  /** Credential headers this provider never receives: seeing one means the Worker leaked it. */
  foreignHeaders: readonly string[];
  requestIdHeader: string | null;
  /** Account-identifying response headers a real provider sends (the Worker must strip them). */
  identityHeaders: readonly string[];
}

const PROXY_TOKEN_HEADER = "cn2-proxy-token";

// Longest prefix first: "/groq/openai" must not be read as a path under some "/groq".
const PROVIDERS: readonly ProviderSpec[] = [
  {
    name: "groq", prefix: "/groq/openai", dialect: "openai", authHeader: "authorization",
    foreignHeaders: ["x-api-key", "x-goog-api-key", PROXY_TOKEN_HEADER], requestIdHeader: "x-request-id",
    identityHeaders: ["set-cookie", "__cf_bm=demo; path=/; HttpOnly"],
  },
  {
    name: "openai", prefix: "/openai", dialect: "openai", authHeader: "authorization",
    foreignHeaders: ["x-api-key", "x-goog-api-key", PROXY_TOKEN_HEADER], requestIdHeader: "x-request-id",
    identityHeaders: ["openai-organization", "org-demo", "openai-project", "proj_demo", "set-cookie", "__cf_bm=demo; path=/; HttpOnly"],
  },
  {
    name: "anthropic", prefix: "/anthropic", dialect: "anthropic", authHeader: "x-api-key",
    foreignHeaders: ["authorization", "x-goog-api-key", PROXY_TOKEN_HEADER], requestIdHeader: "request-id",
    identityHeaders: ["anthropic-organization-id", "00000000-0000-4000-8000-00000000demo"],
  },
  {
    name: "google", prefix: "/google", dialect: "google", authHeader: "x-goog-api-key",
    foreignHeaders: ["authorization", "x-api-key", PROXY_TOKEN_HEADER], requestIdHeader: null,
    identityHeaders: [],
  },
];

const CREDENTIAL_PREFIX = "sk-demo-";

// ---- the deterministic answer ------------------------------------------------------

/** The reply, in the pieces a stream sends; JSON-encoded once so streams only concatenate. */
const REPLY_PIECES = ["Hello", " from", " the", " cn2", " demo", " upstream", ", a deterministic", " reply."];
const REPLY_TEXT = REPLY_PIECES.join("");
const REPLY_PIECES_JSON = REPLY_PIECES.map((p) => JSON.stringify(p));
const REPLY_TEXT_JSON = JSON.stringify(REPLY_TEXT);
const REPLY_TOKENS = REPLY_PIECES.length;

const EMBEDDING = [0.0123, -0.0456, 0.0789, -0.1011, 0.1213, -0.1415, 0.1617, -0.1819];
const EMBEDDING_JSON = JSON.stringify(EMBEDDING);
// The openai SDK asks for base64 by default and decodes little-endian float32.
const EMBEDDING_BASE64_JSON = JSON.stringify(Buffer.from(new Float32Array(EMBEDDING).buffer).toString("base64"));

const CREATED = 1_735_689_600; // fixed "created" timestamp: answers are byte-stable apart from ids

const OPENAI_MODELS_JSON = JSON.stringify({
  object: "list",
  data: ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"].map((id) => ({ id, object: "model", created: CREATED, owned_by: "system" })),
});
const GROQ_MODELS_JSON = JSON.stringify({
  object: "list",
  data: ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"].map((id) => ({ id, object: "model", created: CREATED, owned_by: "Meta", active: true })),
});
const ANTHROPIC_MODELS_JSON = JSON.stringify({
  data: ["claude-sonnet-4-5", "claude-haiku-4-5"].map((id) => ({ type: "model", id, display_name: id, created_at: "2025-01-01T00:00:00Z" })),
  has_more: false,
  first_id: "claude-sonnet-4-5",
  last_id: "claude-haiku-4-5",
});
const GOOGLE_MODELS_JSON = JSON.stringify({
  models: ["gemini-2.0-flash", "gemini-2.5-pro"].map((id) => ({
    name: `models/${id}`,
    displayName: id,
    supportedGenerationMethods: ["generateContent", "streamGenerateContent", "countTokens"],
  })),
});

// ---- provider-format errors ----------------------------------------------------------

const ANTHROPIC_ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
  413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error",
};
const GOOGLE_STATUSES: Record<number, string> = {
  400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ABORTED",
  429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
};

function errorBody(dialect: Dialect, status: number, message: string): string {
  if (dialect === "anthropic") {
    const type = ANTHROPIC_ERROR_TYPES[status] ?? (status >= 500 ? "api_error" : "invalid_request_error");
    return JSON.stringify({ type: "error", error: { type, message } });
  }
  if (dialect === "google") {
    const statusName = GOOGLE_STATUSES[status] ?? (status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION");
    return JSON.stringify({ error: { code: status, message, status: statusName } });
  }
  const [type, code] =
    status === 401 ? ["invalid_request_error", "invalid_api_key"]
    : status === 429 ? ["requests", "rate_limit_exceeded"]
    : status >= 500 ? ["server_error", null]
    : ["invalid_request_error", null];
  return JSON.stringify({ error: { message, type, param: null, code } });
}

// ---- injected behaviour, log, held streams ---------------------------------------------

const BehaviourSchema = v.strictObject({
  credential: v.pipe(v.string(), v.minLength(1)),
  status: v.optional(v.pipe(v.number(), v.integer(), v.minValue(100), v.maxValue(599))),
  retryAfter: v.optional(v.pipe(v.number(), v.minValue(0))),
  delayMs: v.optional(v.pipe(v.number(), v.minValue(0))),
  chunkDelayMs: v.optional(v.pipe(v.number(), v.minValue(0))),
  cutAfterChunks: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  hold: v.optional(v.boolean()),
  /** Streams: send the headers, then hold before the first event until released. */
  holdBeforeBody: v.optional(v.boolean()),
  times: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
});
type Behaviour = Omit<v.InferOutput<typeof BehaviourSchema>, "credential">;
const ReleaseSchema = v.strictObject({ credential: v.pipe(v.string(), v.minLength(1)) });

export interface DemoLogEntry {
  /** The credential the provider received (null when none was sent). */
  credential: string | null;
  provider: ProviderName;
  method: string;
  /** Path as received, provider prefix included, query excluded. */
  path: string;
  /** Raw query string without `?` ("" when none), so tests can check query forwarding. */
  query: string;
  status: number;
  streamed: boolean;
  /** The whole response was written. */
  finished: boolean;
  /** The client went away before the response was finished. */
  aborted: boolean;
  /** Held before its first body byte (holdBeforeBody), now. */
  held?: boolean;
  /** Epoch ms when the request arrived. */
  startedAt: number;
  /** Request body size: proves a body was forwarded without keeping it. */
  bodyBytes: number;
  /** Names of the request headers received (never their values), sorted. */
  headerNames: string[];
}

const LOG_LIMIT = 500;

interface DemoState {
  behaviours: Map<string, Behaviour>;
  log: DemoLogEntry[];
  /** Wake-up functions of streams held after their first chunk, by credential. */
  held: Map<string, Set<() => void>>;
  nextId: number;
  /** Wait before every answer unless a behaviour says otherwise (--delay-ms). */
  delayMs: number;
}

function takeBehaviour(state: DemoState, credential: string): Behaviour | undefined {
  const behaviour = state.behaviours.get(credential);
  if (behaviour?.times !== undefined) {
    behaviour.times -= 1;
    if (behaviour.times <= 0) state.behaviours.delete(credential);
  }
  return behaviour;
}

function record(state: DemoState, entry: DemoLogEntry): void {
  state.log.push(entry);
  // Trim in batches so the hot path does not shift the array on every request.
  if (state.log.length >= LOG_LIMIT * 2) state.log.splice(0, state.log.length - LOG_LIMIT);
}

/** Resolves when the credential's streams are released or the client goes away. */
function waitForRelease(state: DemoState, credential: string, res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    let waiters = state.held.get(credential);
    if (!waiters) state.held.set(credential, (waiters = new Set()));
    const set = waiters;
    const wake = () => {
      set.delete(wake);
      res.off("close", wake);
      resolve();
    };
    set.add(wake);
    res.once("close", wake);
  });
}

function releaseHeld(state: DemoState, credential?: string): number {
  let released = 0;
  for (const [key, waiters] of state.held) {
    if (credential !== undefined && key !== credential) continue;
    for (const wake of [...waiters]) {
      wake();
      released++;
    }
    state.held.delete(key);
  }
  return released;
}

// ---- request plumbing ---------------------------------------------------------------

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/** The credential in the provider's own header, or null. */
function credentialOf(spec: ProviderSpec, req: IncomingMessage): string | null {
  const value = req.headers[spec.authHeader];
  if (typeof value !== "string" || value === "") return null;
  if (spec.authHeader !== "authorization") return value;
  return value.startsWith("Bearer ") ? value.slice(7) : null;
}

/** A header that carries a credential this provider should never see. */
function leakedHeader(spec: ProviderSpec, req: IncomingMessage): string | null {
  for (const name of spec.foreignHeaders) if (req.headers[name] !== undefined) return name;
  // The buyer's MPP credential travels as `Authorization: Payment …`: it must never pass.
  const auth = req.headers.authorization;
  if (auth !== undefined && /^payment\s/i.test(auth)) return "authorization";
  return null;
}

function idFor(state: DemoState, prefix: string): string {
  return `${prefix}${(state.nextId++).toString(36).padStart(8, "0")}`;
}

function baseHeaders(spec: ProviderSpec, requestId: string, contentType: string): string[] {
  const headers = ["content-type", contentType, ...spec.identityHeaders];
  if (spec.requestIdHeader) headers.push(spec.requestIdHeader, requestId);
  return headers;
}

function sendJson(res: ServerResponse, entry: DemoLogEntry, status: number, headers: string[], body: string): void {
  if (res.destroyed) return;
  entry.status = status;
  headers.push("content-length", String(Buffer.byteLength(body)));
  res.writeHead(status, headers);
  res.end(body);
  entry.finished = true;
}

function sendError(res: ServerResponse, entry: DemoLogEntry, spec: ProviderSpec, requestId: string, status: number, message: string, extra: string[] = []): void {
  const headers = baseHeaders(spec, requestId, "application/json");
  headers.push(...extra);
  sendJson(res, entry, status, headers, errorBody(spec.dialect, status, message));
}

/** A plain JSON answer outside any provider's format (control API, leaks, unknown prefixes). */
function sendPlain(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, ["content-type", "application/json", "content-length", String(Buffer.byteLength(text))]);
  res.end(text);
}

// ---- the answers, per dialect ----------------------------------------------------------

/** What a route produced: a JSON body, or stream events written one chunk at a time. */
type Answer =
  | { kind: "json"; body: string }
  | { kind: "stream"; contentType: string; events: string[] }
  | { kind: "error"; status: number; message: string };

interface RequestFacts {
  method: string;
  /** Path after the provider prefix. */
  route: string;
  query: string;
  body: Record<string, unknown>;
  promptTokens: number;
  id: string;
}

const notFound = (f: RequestFacts): Answer => ({ kind: "error", status: 404, message: `Invalid URL (${f.method} ${f.route})` });
const needsModel = (f: RequestFacts): Answer | null =>
  typeof f.body.model === "string" && f.body.model !== "" ? null : { kind: "error", status: 400, message: "you must provide a model parameter" };

function openaiAnswer(spec: ProviderSpec, f: RequestFacts): Answer {
  if (f.method === "POST" && f.route === "/v1/chat/completions") {
    const missing = needsModel(f);
    if (missing) return missing;
    const model = JSON.stringify(f.body.model);
    const usage = `{"prompt_tokens":${f.promptTokens},"completion_tokens":${REPLY_TOKENS},"total_tokens":${f.promptTokens + REPLY_TOKENS}}`;
    if (f.body.stream !== true) {
      return {
        kind: "json",
        body: `{"id":"${f.id}","object":"chat.completion","created":${CREATED},"model":${model},"choices":[{"index":0,"message":{"role":"assistant","content":${REPLY_TEXT_JSON},"refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":${usage},"system_fingerprint":null}`,
      };
    }
    const head = `data: {"id":"${f.id}","object":"chat.completion.chunk","created":${CREATED},"model":${model},"system_fingerprint":null,"choices":`;
    const events = [`${head}[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n`];
    for (const piece of REPLY_PIECES_JSON) events.push(`${head}[{"index":0,"delta":{"content":${piece}},"logprobs":null,"finish_reason":null}]}\n\n`);
    events.push(`${head}[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n`);
    const options = f.body.stream_options as { include_usage?: unknown } | undefined;
    if (options?.include_usage === true) events.push(`${head}[],"usage":${usage}}\n\n`);
    events.push("data: [DONE]\n\n");
    return { kind: "stream", contentType: "text/event-stream; charset=utf-8", events };
  }
  if (f.method === "POST" && f.route === "/v1/embeddings") {
    const missing = needsModel(f);
    if (missing) return missing;
    const inputs = Array.isArray(f.body.input) ? f.body.input.length : 1;
    const vector = f.body.encoding_format === "base64" ? EMBEDDING_BASE64_JSON : EMBEDDING_JSON;
    const data: string[] = [];
    for (let i = 0; i < inputs; i++) data.push(`{"object":"embedding","index":${i},"embedding":${vector}}`);
    return {
      kind: "json",
      body: `{"object":"list","data":[${data.join(",")}],"model":${JSON.stringify(f.body.model)},"usage":{"prompt_tokens":${f.promptTokens},"total_tokens":${f.promptTokens}}}`,
    };
  }
  if (f.method === "GET" && f.route === "/v1/models") return { kind: "json", body: spec.name === "groq" ? GROQ_MODELS_JSON : OPENAI_MODELS_JSON };
  if (f.method === "GET" && f.route.startsWith("/v1/models/") && f.route.indexOf("/", 11) === -1) {
    return { kind: "json", body: JSON.stringify({ id: f.route.slice(11), object: "model", created: CREATED, owned_by: "system" }) };
  }
  return notFound(f);
}

function anthropicAnswer(f: RequestFacts): Answer {
  if (f.method === "POST" && f.route === "/v1/messages") {
    const missing = needsModel(f);
    if (missing) return missing;
    const model = JSON.stringify(f.body.model);
    if (f.body.stream !== true) {
      return {
        kind: "json",
        body: `{"id":"${f.id}","type":"message","role":"assistant","model":${model},"content":[{"type":"text","text":${REPLY_TEXT_JSON}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":${f.promptTokens},"output_tokens":${REPLY_TOKENS}}}`,
      };
    }
    const events = [
      `event: message_start\ndata: {"type":"message_start","message":{"id":"${f.id}","type":"message","role":"assistant","model":${model},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":${f.promptTokens},"output_tokens":1}}}\n\n`,
      `event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n`,
    ];
    for (const piece of REPLY_PIECES_JSON) {
      events.push(`event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":${piece}}}\n\n`);
    }
    events.push(
      `event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n`,
      `event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":${REPLY_TOKENS}}}\n\n`,
      `event: message_stop\ndata: {"type":"message_stop"}\n\n`,
    );
    return { kind: "stream", contentType: "text/event-stream; charset=utf-8", events };
  }
  if (f.method === "POST" && f.route === "/v1/messages/count_tokens") return { kind: "json", body: `{"input_tokens":${f.promptTokens}}` };
  if (f.method === "GET" && f.route === "/v1/models") return { kind: "json", body: ANTHROPIC_MODELS_JSON };
  return { kind: "error", status: 404, message: `Not found: ${f.method} ${f.route}` };
}

const GEMINI_ROUTE = /^\/v1(?:beta)?\/models\/([^/:]+):([A-Za-z]+)$/;

function googleAnswer(f: RequestFacts): Answer {
  if (f.method === "GET" && (f.route === "/v1beta/models" || f.route === "/v1/models")) return { kind: "json", body: GOOGLE_MODELS_JSON };
  const match = f.method === "POST" ? GEMINI_ROUTE.exec(f.route) : null;
  if (!match) return { kind: "error", status: 404, message: `Method not found: ${f.method} ${f.route}` };
  const model = JSON.stringify(match[1]);
  const usage = `{"promptTokenCount":${f.promptTokens},"candidatesTokenCount":${REPLY_TOKENS},"totalTokenCount":${f.promptTokens + REPLY_TOKENS}}`;
  switch (match[2]) {
    case "generateContent":
      return {
        kind: "json",
        body: `{"candidates":[{"content":{"parts":[{"text":${REPLY_TEXT_JSON}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":${usage},"modelVersion":${model},"responseId":"${f.id}"}`,
      };
    case "streamGenerateContent": {
      const last = REPLY_PIECES_JSON.length - 1;
      const chunks = REPLY_PIECES_JSON.map(
        (piece, i) =>
          `{"candidates":[{"content":{"parts":[{"text":${piece}}],"role":"model"},${i === last ? `"finishReason":"STOP",` : ""}"index":0}],"usageMetadata":${usage},"modelVersion":${model},"responseId":"${f.id}"}`,
      );
      // alt=sse gives SSE; without it Gemini streams one JSON array, element by element.
      if (/(?:^|&)alt=sse(?:&|$)/.test(f.query)) {
        return { kind: "stream", contentType: "text/event-stream", events: chunks.map((c) => `data: ${c}\n\n`) };
      }
      return { kind: "stream", contentType: "application/json; charset=UTF-8", events: chunks.map((c, i) => (i === 0 ? `[${c}` : `,\r\n${c}`)).concat("]") };
    }
    case "countTokens":
      return { kind: "json", body: `{"totalTokens":${f.promptTokens}}` };
    case "embedContent":
      return { kind: "json", body: `{"embedding":{"values":${EMBEDDING_JSON}}}` };
    default:
      return { kind: "error", status: 404, message: `Method not found: ${match[2]}` };
  }
}

// ---- serving one provider request ----------------------------------------------------

async function serveProvider(state: DemoState, spec: ProviderSpec, req: IncomingMessage, res: ServerResponse, path: string, query: string): Promise<void> {
  const method = req.method ?? "GET";
  const credential = credentialOf(spec, req);
  const entry: DemoLogEntry = {
    credential, provider: spec.name, method, path, query, status: 0,
    streamed: false, finished: false, aborted: false, startedAt: Date.now(), bodyBytes: 0,
    headerNames: Object.keys(req.headers).sort(),
  };
  record(state, entry);
  let cut = false; // we cut the connection on purpose: that is not the client aborting
  res.once("close", () => {
    if (!entry.finished && !cut) entry.aborted = true;
  });
  const requestId = idFor(state, "req_");

  const leaked = leakedHeader(spec, req);
  if (leaked) {
    entry.status = 400;
    sendPlain(res, 400, { error: "leaked_header", header: leaked });
    entry.finished = true;
    return;
  }
  if (spec.name === "google" && /(?:^|&)key=/.test(query)) {
    entry.status = 400;
    sendPlain(res, 400, { error: "leaked_query", param: "key" });
    entry.finished = true;
    return;
  }
  if (credential === null || !credential.startsWith(CREDENTIAL_PREFIX)) {
    const message =
      spec.dialect === "google" ? "API key not valid. Please pass a valid API key."
      : credential === null ? (spec.dialect === "anthropic" ? "x-api-key header is required" : "You didn't provide an API key.")
      : spec.dialect === "anthropic" ? "invalid x-api-key" : "Incorrect API key provided.";
    sendError(res, entry, spec, requestId, 401, message);
    return;
  }

  const raw = method === "GET" || method === "HEAD" ? null : await readBody(req);
  entry.bodyBytes = raw?.length ?? 0;

  const behaviour = takeBehaviour(state, credential);
  const delayMs = behaviour?.delayMs ?? state.delayMs;
  if (delayMs > 0) await sleep(delayMs);
  if (res.destroyed) return;
  if (behaviour?.status !== undefined) {
    const extra = behaviour.retryAfter !== undefined ? ["retry-after", String(behaviour.retryAfter)] : [];
    sendError(res, entry, spec, requestId, behaviour.status, `demo upstream: injected status ${behaviour.status}`, extra);
    return;
  }
  if (spec.dialect === "anthropic" && req.headers["anthropic-version"] === undefined) {
    sendError(res, entry, spec, requestId, 400, "anthropic-version: header is required");
    return;
  }

  let body: Record<string, unknown> = {};
  if (raw !== null && raw.length > 0) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw.toString("utf8"));
    } catch {
      sendError(res, entry, spec, requestId, 400, "We could not parse the JSON body of your request.");
      return;
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      sendError(res, entry, spec, requestId, 400, "The request body must be a JSON object.");
      return;
    }
    body = parsed as Record<string, unknown>;
  }

  const facts: RequestFacts = {
    method, route: path.slice(spec.prefix.length), query, body,
    // Deterministic stand-in for a tokenizer: about four bytes a token.
    promptTokens: Math.max(1, Math.ceil(entry.bodyBytes / 4)),
    id: spec.dialect === "anthropic" ? idFor(state, "msg_") : spec.dialect === "openai" ? idFor(state, "chatcmpl-") : requestId,
  };
  const answer = spec.dialect === "openai" ? openaiAnswer(spec, facts) : spec.dialect === "anthropic" ? anthropicAnswer(facts) : googleAnswer(facts);

  if (answer.kind === "error") {
    sendError(res, entry, spec, requestId, answer.status, answer.message);
    return;
  }
  const headers = baseHeaders(spec, requestId, answer.kind === "json" ? "application/json" : answer.contentType);
  if (answer.kind === "json") {
    if (behaviour?.hold) await waitForRelease(state, credential, res);
    if (behaviour?.cutAfterChunks !== undefined) {
      // Promise the whole body, send half of it, then drop the connection.
      if (res.destroyed) return;
      cut = true;
      entry.status = 200;
      headers.push("content-length", String(Buffer.byteLength(answer.body)));
      res.writeHead(200, headers);
      res.write(answer.body.slice(0, answer.body.length >> 1), () => res.socket?.destroy());
      return;
    }
    sendJson(res, entry, 200, headers, answer.body);
    return;
  }

  // A stream: one write per event so pacing, holding and cutting act on real chunks.
  entry.streamed = true;
  entry.status = 200;
  headers.push("cache-control", "no-cache");
  res.writeHead(200, headers);
  const { events } = answer;
  if (behaviour?.holdBeforeBody) {
    // Headers out, no byte of the body: what a key answering 200 and then failing looks like.
    res.flushHeaders();
    entry.held = true;
    await waitForRelease(state, credential, res);
    entry.held = false;
  }
  const cutAt = behaviour?.cutAfterChunks;
  if (cutAt === 0) {
    cut = true;
    res.flushHeaders();
    res.socket?.destroy();
    return;
  }
  for (let i = 0; i < events.length; i++) {
    if (i > 0 && behaviour?.chunkDelayMs) await sleep(behaviour.chunkDelayMs);
    if (res.destroyed) return;
    if (cutAt !== undefined && i + 1 === cutAt) {
      // Destroy only once the chunk reached the socket, so the client sees exactly N chunks.
      cut = true;
      res.write(events[i]!, () => res.socket?.destroy());
      return;
    }
    res.write(events[i]!);
    if (i === 0 && behaviour?.hold) await waitForRelease(state, credential, res);
  }
  if (res.destroyed) return;
  res.end();
  entry.finished = true;
}

// ---- the control API ---------------------------------------------------------------

async function serveControl(state: DemoState, req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
  const method = req.method ?? "GET";
  const readJson = async (): Promise<unknown> => {
    try {
      return JSON.parse((await readBody(req)).toString("utf8"));
    } catch {
      return undefined;
    }
  };
  if (path === "/__demo/behaviour" && method === "POST") {
    const parsed = v.safeParse(BehaviourSchema, await readJson());
    if (!parsed.success) return sendPlain(res, 400, { error: "invalid_behaviour", issues: parsed.issues.map((i) => i.message) });
    const { credential, ...behaviour } = parsed.output;
    state.behaviours.set(credential, behaviour);
    return sendPlain(res, 200, { ok: true });
  }
  if (path === "/__demo/behaviour" && method === "DELETE") {
    state.behaviours.clear();
    state.log.length = 0;
    // Held streams would otherwise hang forever once their behaviour is gone.
    releaseHeld(state);
    return sendPlain(res, 200, { ok: true });
  }
  if (path === "/__demo/release" && method === "POST") {
    const parsed = v.safeParse(ReleaseSchema, await readJson());
    if (!parsed.success) return sendPlain(res, 400, { error: "invalid_release", issues: parsed.issues.map((i) => i.message) });
    return sendPlain(res, 200, { released: releaseHeld(state, parsed.output.credential) });
  }
  if (path === "/__demo/log" && method === "GET") return sendPlain(res, 200, { requests: state.log.slice(-LOG_LIMIT) });
  if (path === "/__demo/health" && method === "GET") return sendPlain(res, 200, { ok: true });
  sendPlain(res, 404, { error: "not_found" });
}

function handle(state: DemoState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const path = q === -1 ? url : url.slice(0, q);
  const query = q === -1 ? "" : url.slice(q + 1);
  for (const spec of PROVIDERS) {
    if (path.startsWith(spec.prefix) && (path.length === spec.prefix.length || path.charCodeAt(spec.prefix.length) === 47 /* "/" */)) {
      return serveProvider(state, spec, req, res, path, query);
    }
  }
  if (path.startsWith("/__demo/")) return serveControl(state, req, res, path);
  sendPlain(res, 404, { error: "unknown_provider", path });
  return Promise.resolve();
}

// ---- lifecycle ------------------------------------------------------------------------

export function startDemoUpstream(opts: { port?: number; host?: string; delayMs?: number } = {}): Promise<DemoUpstream> {
  const host = opts.host ?? "127.0.0.1";
  const delayMs = opts.delayMs ?? 0;
  if (!Number.isFinite(delayMs) || delayMs < 0) throw new RangeError("delayMs must be a non-negative number of milliseconds");
  const state: DemoState = { behaviours: new Map(), log: [], held: new Map(), nextId: 1, delayMs };
  // Long URLs are read (tests send 60 KB paths): Node's 16 KB default would cut the
  // connection instead of answering, a failure no provider test means to inject.
  const server = http.createServer({ keepAlive: true, noDelay: true, maxHeaderSize: 256 * 1024 }, (req, res) => {
    handle(state, req, res).catch(() => res.destroy());
  });
  // Outlive the clients' idle pools (workerd, undici, autocannon): a server closing an idle
  // socket just as a client reuses it turns into spurious connection resets.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", reject);
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : (opts.port ?? 0);
      const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
      resolve({
        url,
        port,
        close: () =>
          new Promise<void>((done) => {
            releaseHeld(state);
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

function isMainModule(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === import.meta.filename;
  } catch {
    return false;
  }
}

if (isMainModule()) {
  const flag = (name: string) => {
    const i = process.argv.indexOf(name);
    return i === -1 ? undefined : process.argv[i + 1];
  };
  const upstream = await startDemoUpstream({ port: Number(flag("--port") ?? 8788), host: flag("--host"), delayMs: Number(flag("--delay-ms") ?? 0) });
  console.log(`demo upstream listening on ${upstream.url} (credentials: ${CREDENTIAL_PREFIX}*)`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => void upstream.close().then(() => process.exit(0)));
  }
}
