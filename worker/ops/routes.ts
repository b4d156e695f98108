// Operator endpoints (M3, P7), all behind the ops token: inspect a key or a pool, disable
// or drain a key, list and resolve billing disputes, payouts, the scheduled jobs. Mounted by worker/router.ts.
import type { IRequest } from "itty-router";
import type { Env } from "../../core/env.ts";
import { ApiError, safeEqual } from "../../core/http.ts";
import { disputes } from "../payments/routes.ts";
import { disableKey, drainKey, inspectKey, inspectPool, restartKey } from "./inspect.ts";

/** Payout operations (worker/payouts/) and the scheduled jobs (worker/jobs/) load with their first call. */
const payoutOps = () => import("../payouts/ops.ts");
const jobOps = () => import("../jobs/ops.ts");

/** Every /ops route needs the ops token as a bearer; returning nothing lets the route run. */
function requireOps(request: Request, env: Env) {
  const auth = request.headers.get("authorization");
  const token = auth?.startsWith("Bearer ") ? auth.slice(7) : null;
  if (!env.OPS_TOKEN || token === null || !safeEqual(token, env.OPS_TOKEN)) throw new ApiError("unauthorized", "this endpoint needs the ops token (Authorization: Bearer …)");
}

export const opsRoutes = [
  ["all", "/ops/*", requireOps],
  ["get", "/ops/keys/:id", (req: IRequest, env: Env) => inspectKey(env, req.params.id!)],
  ["post", "/ops/keys/:id/disable", (req: IRequest, env: Env) => disableKey(env, req.params.id!)],
  ["post", "/ops/keys/:id/drain", (req: IRequest, env: Env) => drainKey(env, req.params.id!)],
  ["post", "/ops/keys/:id/restart", (req: IRequest, env: Env) => restartKey(env, req.params.id!)],
  ["get", "/ops/pools/:provider/:region/:tier", (req: IRequest, env: Env) => inspectPool(env, req.params)],
  ["get", "/ops/disputes", async (req: IRequest, env: Env) => (await disputes()).listDisputesHandler(req, env)],
  ["get", "/ops/disputes/:id", async (req: IRequest, env: Env) => (await disputes()).getDisputeHandler(env, req.params.id!)],
  ["post", "/ops/disputes/:id/resolve", async (req: IRequest, env: Env) => (await disputes()).resolveDisputeHandler(req, env, req.params.id!)],
  ["get", "/ops/payouts", async (req: IRequest, env: Env) => (await payoutOps()).listPayoutsHandler(req, env)],
  ["post", "/ops/payouts/:id/retry", async (req: IRequest, env: Env) => (await payoutOps()).retryPayoutHandler(env, req.params.id!)],
  ["get", "/ops/jobs", async (_req: IRequest, env: Env) => (await jobOps()).listJobsHandler(env)],
  ["post", "/ops/jobs/:job/run", async (req: IRequest, env: Env) => (await jobOps()).runJobHandler(env, req.params.job)],
] as const;
