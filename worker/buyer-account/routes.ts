// The optional buyer account (B4, PR11): sign in with the same Supabase Auth as sellers
// (`account: "buyer"` on the sign-in routes, worker/seller/sign-in.ts), attach buyer ids by
// proving their key, see their spend of the last 90 days, top one up by card, delete it all.
// Anonymous buying does not go through here and does not change. Mounted by worker/router.ts;
// the handlers (and the Stripe client they reach) load with the first request that needs
// them, so the proxy's cold start does not pay for them.
import type { IRequest } from "itty-router";
import type { Env } from "../../core/env.ts";

const account = () => import("./account.ts");
const attach = () => import("./attach.ts");
const history = () => import("./history.ts");

type Handler = (req: IRequest, env: Env, ctx: ExecutionContext) => Promise<Response>;
const lazy = <M>(load: () => Promise<M>, pick: (m: M) => Handler): Handler =>
  async (req, env, ctx) => pick(await load())(req, env, ctx);

export const buyerAccountRoutes = [
  ["get", "/api/buyer/account", lazy(account, (m) => m.getAccount)],
  ["post", "/api/buyer/account", lazy(account, (m) => m.openAccount)],
  ["delete", "/api/buyer/account", lazy(account, (m) => m.deleteAccount)],
  ["post", "/api/buyer/account/ids", lazy(attach, (m) => m.attachBuyerId)],
  ["delete", "/api/buyer/account/ids/:buyerId", lazy(attach, (m) => m.detachBuyerId)],
  ["get", "/api/buyer/account/history", lazy(history, (m) => m.getHistory)],
  ["post", "/api/buyer/account/topup", lazy(history, (m) => m.accountTopUp)],
] as const;
