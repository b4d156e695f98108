// Every HTTP entry of the Worker. Specific prefixes first; anything else under a
// provider name is proxied.
import { AutoRouter, type IRequest } from "itty-router";
import { H } from "../schema/wire.ts";
import type { Env } from "./env.ts";
import { ApiError, errorResponse, json, safeEqual, splitUrl } from "./http.ts";
import * as account from "./account.ts";
import * as auth from "./auth-api.ts";
import * as earnings from "./earnings.ts";
import * as keys from "./keys-api.ts";
import * as kyc from "./kyc.ts";
import * as payouts from "./payouts.ts";
import * as sellers from "./sellers.ts";
import { disableKey, drainKey, inspectKey, inspectPool } from "./ops-api.ts";
import { proxy } from "./proxy.ts";
import { PROVIDER_IDS } from "../schema/providers.ts";
import * as webhooks from "./webhooks/api.ts";
import { parseVaultPrivateKeys, publicKeysOf } from "./vault.ts";
import { liveSocket } from "./seller/live.ts";
import { authConfig } from "./seller/auth-config.ts";

type Req = IRequest & { requestId: string };
type Args = [Env, ExecutionContext];

/** Payments (mppx) load with the first request that needs them. */
const payments = () => import("./payments/index.ts");
/** Disputes (P7) load with the first dispute call. */
const disputes = () => import("./disputes.ts");

const newRequestId = () => `req_${crypto.randomUUID().replaceAll("-", "")}`;

function bearer(request: Request): string | null {
  const auth = request.headers.get("authorization");
  return auth?.startsWith("Bearer ") ? auth.slice(7) : null;
}

/** Ops endpoints need the ops token. */
function requireOps(request: Request, env: Env) {
  const token = bearer(request);
  if (!env.OPS_TOKEN || token === null || !safeEqual(token, env.OPS_TOKEN)) throw new ApiError("unauthorized", "this endpoint needs the ops token (Authorization: Bearer …)");
}

/**
 * Operators may call the proxy unpaid with the ops token (health checks, benchmarks).
 * A wrong `cn2-ops-token` is an error, not a silent fall back to paying.
 */
function isOperator(request: Request, env: Env): boolean {
  const header = request.headers.get(H.opsToken);
  if (header !== null) {
    if (!env.OPS_TOKEN || !safeEqual(header, env.OPS_TOKEN)) throw new ApiError("unauthorized", `wrong ${H.opsToken}`);
    return true;
  }
  const token = bearer(request);
  return token !== null && !!env.OPS_TOKEN && safeEqual(token, env.OPS_TOKEN);
}

function failed(err: unknown, requestId: string): Response {
  if (err instanceof ApiError) return errorResponse(err.code, err.message, { status: err.status, requestId });
  // Log the kind of failure only: error messages can carry request data.
  console.error(JSON.stringify({ evt: "unhandled", requestId, error: err instanceof Error ? err.name : "unknown" }));
  return errorResponse("internal_error", "internal error", { requestId });
}

/** Every answer carries its request id. */
function withRequestId(response: Response, requestId: string): Response {
  if (response.headers.get(H.requestId) === requestId) return response;
  const out = new Response(response.body, response);
  out.headers.set(H.requestId, requestId);
  return out;
}

export const router = AutoRouter<Req, Args>({
  before: [(request) => { request.requestId = newRequestId(); }],
  missing: (request) => errorResponse("not_found", `no route for ${request.method} ${new URL(request.url).pathname}`, { requestId: request.requestId }),
  catch: (err, request) => failed(err, request.requestId),
  finally: [(response: Response, request) => withRequestId(response, request.requestId)],
});

const KNOWN_PROVIDERS: ReadonlySet<string> = new Set(PROVIDER_IDS);

/**
 * The Worker's fetch. Proxy calls to a known provider (the hot path) go straight to the
 * proxy, with the router's request id and error handling; everything else to the router.
 */
export async function handle(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
  if (!KNOWN_PROVIDERS.has(firstSegment(request.url))) return router.fetch(request, env, ctx);
  const requestId = newRequestId();
  try {
    return withRequestId(await proxy(request, env, requestId, isOperator(request, env)), requestId);
  } catch (err) {
    return failed(err, requestId);
  }
}

/** The first path segment of an absolute URL, as written (no decoding). */
function firstSegment(url: string): string {
  const { pathname } = splitUrl(url);
  const end = pathname.indexOf("/", 1);
  return pathname.slice(1, end < 0 ? undefined : end);
}

const proxyRoute = (req: Req, env: Env) => proxy(req, env, req.requestId, isOperator(req, env));

router
  .get("/healthz", () => json({ ok: true }))
  .get("/api/vault/public-key", (_req, env) => {
    const keys = publicKeysOf(parseVaultPrivateKeys(env.VAULT_PRIVATE_KEYS));
    return json({ current: keys[0]?.kid ?? null, keys });
  })
  // Buyers: credit top-ups and account (signed by the buyer's key, no account needed).
  .post("/api/credit/topup", async (req, env) => (await payments()).stripeTopUpHandler(req, env))
  .post("/api/credit/faucet", async (req, env) => (await payments()).faucetHandler(req, env))
  .get("/api/credit/balance", async (req, env) => (await payments()).balanceHandler(req, env))
  .put("/api/credit/budget", async (req, env) => (await payments()).budgetHandler(req, env))
  .post("/webhooks/stripe", async (req, env) => (await payments()).stripeWebhookHandler(req, env))
  // Buyers: billing disputes from a receipt (signed by the buyer's key, P7).
  .post("/api/disputes", async (req, env) => (await disputes()).openDisputeHandler(req, env))
  .get("/api/disputes", async (req, env) => (await disputes()).listOwnDisputesHandler(req, env))
  .get("/api/disputes/:id", async (req, env) => (await disputes()).getOwnDisputeHandler(req, env, req.params.id))
  // Seller webhooks (S6, worker/webhooks/api.ts): the signed-in seller's own endpoints.
  .post("/api/webhooks", webhooks.createWebhook)
  .get("/api/webhooks", webhooks.listWebhooks)
  .delete("/api/webhooks/:id", webhooks.deleteWebhook)
  .post("/api/webhooks/:id/rotate", webhooks.rotateWebhookSecret)
  .get("/api/webhooks/:id/deliveries", webhooks.listWebhookDeliveries)
  // Seller sign-in (S1, worker/auth-api.ts) and the seller API: Bearer JWT or the session
  // cookie (+ CSRF header on writes), row-level security in Postgres (docs/api.md).
  .post("/auth/dev/sign-in", auth.devSignInPost)
  .get("/auth/dev/sign-in", auth.devSignInLink)
  .post("/auth/session", auth.createSession)
  .post("/auth/sign-out", auth.signOut)
  .get("/auth/config", authConfig)
  .get("/api/me", sellers.getMe)
  .patch("/api/me", sellers.patchMe)
  .post("/api/stats-opt-out", sellers.statsOptOut)
  .post("/api/keys", keys.createKey)
  .get("/api/keys", keys.listKeys)
  .get("/api/keys/:id", keys.getKey)
  .patch("/api/keys/:id", keys.patchKey)
  .delete("/api/keys/:id", keys.deleteKey)
  .post("/api/keys/:id/pause", keys.pauseKey)
  .post("/api/keys/:id/resume", keys.resumeKey)
  .get("/api/payout", payouts.getPayout)
  .put("/api/payout", payouts.putPayout)
  .delete("/api/payout", payouts.deletePayout)
  .post("/api/payouts", payouts.requestPayout)
  .post("/api/kyc/start", kyc.startKyc)
  .post("/webhooks/persona", kyc.personaWebhook)
  .get("/api/earnings", earnings.getEarnings)
  .get("/api/export", account.exportData)
  .delete("/api/account", account.deleteAccount)
  // The dashboard's live feed (S8): authenticated here, then forwarded to the seller's own room.
  .get("/api/live/:room", liveSocket)
  .all("/api/*", (req) => errorResponse("not_found", `no route for ${req.method} ${new URL(req.url).pathname}`, { requestId: req.requestId }))
  .all("/ops/*", requireOps)
  .get("/ops/keys/:id", (req, env) => inspectKey(env, req.params.id))
  .post("/ops/keys/:id/disable", (req, env) => disableKey(env, req.params.id))
  .post("/ops/keys/:id/drain", (req, env) => drainKey(env, req.params.id))
  .get("/ops/pools/:provider/:region/:tier", (req, env) => inspectPool(env, req.params))
  .get("/ops/disputes", async (req, env) => (await disputes()).listDisputesHandler(req, env))
  .get("/ops/disputes/:id", async (req, env) => (await disputes()).getDisputeHandler(env, req.params.id))
  .post("/ops/disputes/:id/resolve", async (req, env) => (await disputes()).resolveDisputeHandler(req, env, req.params.id))
  // Known providers never get here (handle()); anything else is an unknown provider's error.
  .all("/:provider/*", proxyRoute)
  .all("/:provider", proxyRoute);
