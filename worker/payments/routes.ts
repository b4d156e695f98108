// The buyer's side of the API that is not the proxy (B1, B5, P7): credit top-ups, balance
// and budget, Stripe's webhook, and disputes from a receipt. Buyers sign these with their
// key; no account. Mounted by worker/router.ts. Payments (mppx) and disputes load with the
// first request that needs them, so the proxy's cold start does not pay for them.
import type { IRequest } from "itty-router";
import type { Env } from "../../core/env.ts";

const payments = () => import("./index.ts");
export const disputes = () => import("./disputes.ts");

export const paymentRoutes = [
  ["post", "/api/credit/topup", async (req: IRequest, env: Env) => (await payments()).stripeTopUpHandler(req, env)],
  ["post", "/api/credit/faucet", async (req: IRequest, env: Env) => (await payments()).faucetHandler(req, env)],
  ["get", "/api/credit/balance", async (req: IRequest, env: Env) => (await payments()).balanceHandler(req, env)],
  ["put", "/api/credit/budget", async (req: IRequest, env: Env) => (await payments()).budgetHandler(req, env)],
  ["post", "/webhooks/stripe", async (req: IRequest, env: Env) => (await payments()).stripeWebhookHandler(req, env)],
  ["post", "/api/disputes", async (req: IRequest, env: Env) => (await disputes()).openDisputeHandler(req, env)],
  ["get", "/api/disputes", async (req: IRequest, env: Env) => (await disputes()).listOwnDisputesHandler(req, env)],
  ["get", "/api/disputes/:id", async (req: IRequest, env: Env) => (await disputes()).getOwnDisputeHandler(req, env, req.params.id!)],
] as const;
