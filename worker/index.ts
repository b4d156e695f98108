// The Worker's entry: HTTP through the router; the Durable Object classes are exported
// from here so wrangler binds them.
import type { Env } from "../core/env.ts";
import { handle } from "./router.ts";
import { errorResponse, newRequestId, secured } from "../core/http.ts";
import { isDevelopment, misconfiguration } from "../core/environment.ts";
import { handleWebhookBatch, isWebhookQueue } from "./webhooks/consumer.ts";
import { handleAnalyticsBatch, isAnalyticsQueue } from "./analytics/consumer.ts";
import { runScheduled } from "./jobs/run.ts";

export { SellerKey } from "../objects/seller-key/seller-key.ts";
export { PoolIndex } from "../objects/pool-index/pool-index.ts";
export { BuyerWallet } from "../objects/buyer-wallet/buyer-wallet.ts";
export { ProofStore } from "../objects/proof-store/proof-store.ts";
export { SellerRoom } from "../objects/seller-room/seller-room.ts";

/** Why this Worker must not serve (a development setting in production), checked once per env. */
const refusals = new WeakMap<object, string | null>();
function refusal(env: Env): string | null {
  let why = refusals.get(env);
  if (why === undefined) {
    why = misconfiguration(env);
    refusals.set(env, why);
    if (why) console.error(JSON.stringify({ evt: "misconfigured", error: why }));
  }
  return why;
}

export default {
  async fetch(request, env, ctx) {
    const why = refusal(env);
    if (why) return secured(errorResponse("misconfigured", why, { status: 503, requestId: newRequestId() }));
    // PR22: production is TLS only. The zone redirects plain HTTP (docs/operations.md); what
    // still arrives over it is refused, not served (a redirect would replay a POST's body).
    if (request.url.startsWith("http:") && !isDevelopment(env)) {
      return secured(errorResponse("https_required", "cn2 answers over HTTPS only: use https://", { requestId: newRequestId() }));
    }
    return secured(await handle(request, env, ctx));
  },
  // Queue consumers, by queue name: seller webhook deliveries, the analytics sink, and
  // their dead letters.
  async queue(batch, env, ctx) {
    if (refusal(env)) return batch.retryAll();
    if (isWebhookQueue(batch.queue)) return handleWebhookBatch(batch, env, ctx);
    if (isAnalyticsQueue(batch.queue)) return handleAnalyticsBatch(batch, env);
    console.error(JSON.stringify({ evt: "queue_unknown", queue: batch.queue }));
    batch.retryAll();
  },
  // The Cron Triggers (wrangler.toml [triggers]): the jobs each one runs (worker/jobs/):
  // payouts, the safety-net earnings flush, the hourly rollup, retention.
  async scheduled(controller, env, _ctx) {
    // A misconfigured production runs no job: it moves no money and deletes nothing either.
    if (refusal(env)) return;
    await runScheduled(controller.cron, env, controller.scheduledTime);
  },
} satisfies ExportedHandler<Env>;
