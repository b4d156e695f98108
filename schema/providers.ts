// The provider catalog: how each upstream API is reached and how a seller's credential
// is injected. Base URLs can be overridden per environment (UPSTREAM_BASE_URLS) so local
// runs and tests point at the demo upstream.

export const PROVIDER_IDS = ["openai", "anthropic", "google", "groq"] as const;
export type ProviderIdT = (typeof PROVIDER_IDS)[number];

export type CredentialInjection =
  | { kind: "bearer" } // Authorization: Bearer <credential>
  | { kind: "header"; header: string }; // <header>: <credential>

export interface Provider {
  id: ProviderIdT;
  name: string;
  /** Public upstream base; the buyer's path after `/{provider}` is appended to it. */
  baseUrl: string;
  auth: CredentialInjection;
  /** Request headers a buyer may send upstream (lowercase). Everything else is dropped. */
  forwardHeaders: readonly string[];
  /** Headers added when the buyer did not send them. */
  defaultHeaders: Readonly<Record<string, string>>;
  /** Query parameters never forwarded (credentials some APIs accept in the URL). */
  stripQuery: readonly string[];
  /** Upstream response headers never passed back (they identify the seller's account). */
  stripResponseHeaders: readonly string[];
  /** Routes a new key allows unless the seller narrows or widens them. */
  defaultRoutes: readonly string[];
  /**
   * Metadata we may read without touching a body: the upstream's own request id header
   * (kept only in memory for a dispute trail), nothing else. Model and token usage live
   * in bodies, which we never inspect (P5).
   */
  meta: { upstreamRequestIdHeader?: string };
}

/** Headers every provider may receive from a buyer. */
const COMMON_FORWARD = ["content-type", "accept", "accept-encoding", "user-agent", "idempotency-key"] as const;

export const PROVIDERS: Readonly<Record<ProviderIdT, Provider>> = {
  openai: {
    id: "openai",
    name: "OpenAI",
    baseUrl: "https://api.openai.com",
    auth: { kind: "bearer" },
    forwardHeaders: [...COMMON_FORWARD, "openai-beta", "x-stainless-lang", "x-stainless-package-version", "x-stainless-os", "x-stainless-arch", "x-stainless-runtime", "x-stainless-runtime-version", "x-stainless-retry-count", "x-stainless-timeout"],
    defaultHeaders: {},
    stripQuery: [],
    stripResponseHeaders: ["openai-organization", "openai-project", "set-cookie"],
    defaultRoutes: [
      "POST /v1/chat/completions",
      "POST /v1/completions",
      "POST /v1/embeddings",
      "POST /v1/responses",
      "POST /v1/moderations",
      "GET /v1/models",
      "GET /v1/models/*",
    ],
    meta: { upstreamRequestIdHeader: "x-request-id" },
  },
  anthropic: {
    id: "anthropic",
    name: "Anthropic",
    baseUrl: "https://api.anthropic.com",
    auth: { kind: "header", header: "x-api-key" },
    forwardHeaders: [...COMMON_FORWARD, "anthropic-version", "anthropic-beta", "x-stainless-lang", "x-stainless-package-version", "x-stainless-os", "x-stainless-arch", "x-stainless-runtime", "x-stainless-runtime-version", "x-stainless-retry-count", "x-stainless-timeout"],
    defaultHeaders: { "anthropic-version": "2023-06-01" },
    stripQuery: [],
    stripResponseHeaders: ["anthropic-organization-id", "set-cookie"],
    defaultRoutes: ["POST /v1/messages", "POST /v1/messages/count_tokens", "GET /v1/models", "GET /v1/models/*"],
    meta: { upstreamRequestIdHeader: "request-id" },
  },
  google: {
    id: "google",
    name: "Google Gemini",
    baseUrl: "https://generativelanguage.googleapis.com",
    auth: { kind: "header", header: "x-goog-api-key" },
    forwardHeaders: [...COMMON_FORWARD, "x-goog-api-client"],
    defaultHeaders: {},
    stripQuery: ["key"],
    stripResponseHeaders: ["set-cookie"],
    defaultRoutes: [
      "POST /v1beta/models/*:generateContent",
      "POST /v1beta/models/*:streamGenerateContent",
      "POST /v1beta/models/*:countTokens",
      "POST /v1beta/models/*:embedContent",
      "GET /v1beta/models",
      "GET /v1beta/models/*",
    ],
    meta: {},
  },
  groq: {
    id: "groq",
    name: "Groq (OpenAI-compatible)",
    baseUrl: "https://api.groq.com/openai",
    auth: { kind: "bearer" },
    forwardHeaders: [...COMMON_FORWARD, "x-stainless-lang", "x-stainless-package-version", "x-stainless-retry-count"],
    defaultHeaders: {},
    stripQuery: [],
    stripResponseHeaders: ["set-cookie"],
    defaultRoutes: ["POST /v1/chat/completions", "POST /v1/embeddings", "GET /v1/models", "GET /v1/models/*"],
    meta: { upstreamRequestIdHeader: "x-request-id" },
  },
};

export function isProviderId(id: string): id is ProviderIdT {
  return (PROVIDER_IDS as readonly string[]).includes(id);
}

/** The upstream base for a provider: an environment override, else the public API. */
export function upstreamBase(provider: Provider, overrides: Readonly<Record<string, string>>): string {
  return (overrides[provider.id] ?? provider.baseUrl).replace(/\/+$/, "");
}
