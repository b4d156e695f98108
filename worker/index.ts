// The Worker's entry: HTTP through the router; the Durable Object classes are exported
// from here so wrangler binds them.
import type { Env } from "./env.ts";
import { handle } from "./router.ts";
import { handleWebhookBatch, isWebhookQueue } from "./webhooks/consumer.ts";

export { SellerKey } from "../objects/seller-key.ts";
export { PoolIndex } from "../objects/pool-index.ts";
export { BuyerWallet } from "../objects/buyer-wallet.ts";
export { ProofStore } from "../objects/proof-store.ts";
export { SellerRoom } from "../objects/seller-room.ts";

export default {
  fetch: (request, env, ctx) => handle(request, env, ctx),
  // Queue consumers, by queue name: seller webhook deliveries and their dead letters.
  async queue(batch, env, ctx) {
    if (isWebhookQueue(batch.queue)) return handleWebhookBatch(batch, env, ctx);
    console.error(JSON.stringify({ evt: "queue_unknown", queue: batch.queue }));
    batch.retryAll();
  },
} satisfies ExportedHandler<Env>;
