// Every HTTP entry of the Worker, in one table: each area exports its routes and this file
// mounts them, most specific first. Provider calls (the hot path) skip the table.
import { AutoRouter, type IRequest, type RequestHandler } from "itty-router";
import type { Env } from "../core/env.ts";
import { clip, errorResponse, failedResponse, json, newRequestId, splitUrl, withRequestId } from "../core/http.ts";
import { buyerAccountRoutes } from "./buyer-account/routes.ts";
import { opsRoutes } from "./ops/routes.ts";
import { paymentRoutes } from "./payments/routes.ts";
import { handleProviderCall, isProviderCall, proxyRoutes } from "./proxy/routes.ts";
import { sellerRoutes } from "./seller/routes.ts";
import { statsRoutes } from "./stats/routes.ts";
import { webhookRoutes } from "./webhooks/routes.ts";

type Req = IRequest & { requestId: string };
type Args = [Env, ExecutionContext];
type Method = "get" | "post" | "put" | "patch" | "delete" | "all";
type Route = readonly [Method, string, RequestHandler<Req, Args>];

/** Quoted request data is clipped: a 60 KB path must not come back as a 60 KB error. */
const notFound = (request: Req) =>
  errorResponse("not_found", `no route for ${clip(request.method, 16)} ${clip(splitUrl(request.url).pathname)}`, { requestId: request.requestId });

export const router = AutoRouter<Req, Args>({
  before: [(request) => { request.requestId = newRequestId(); }],
  missing: notFound,
  catch: (err, request) => failedResponse(err, request.requestId),
  finally: [(response: Response, request) => withRequestId(response, request.requestId)],
});

const mount = (routes: readonly Route[]) => {
  for (const [method, path, handler] of routes) router[method](path, handler);
};

router.get("/healthz", () => json({ ok: true }));
mount(paymentRoutes);      // buyers: credit, Stripe's webhook, disputes (worker/payments/)
mount(buyerAccountRoutes); // buyers who want one: the optional account (worker/buyer-account/)
mount(webhookRoutes);      // sellers: their webhook endpoints (worker/webhooks/)
mount(sellerRoutes);       // sellers: sign-in, profile, keys, payouts, KYC, earnings, data rights (worker/seller/)
mount(statsRoutes);        // everyone: public marketplace statistics (worker/stats/)
router.all("/api/*", notFound);
mount(opsRoutes);          // operators, behind the ops token (worker/ops/)
mount(proxyRoutes);        // anything else under a provider-looking prefix (worker/proxy/)

/** The Worker's fetch: provider calls straight to the proxy, everything else through the table. */
export function handle(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
  if (isProviderCall(request.url)) return handleProviderCall(request, env);
  return router.fetch(request, env, ctx);
}
