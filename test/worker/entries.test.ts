// M6 at the Worker's other two entries: a production configuration with a development
// setting left in it (the fetch entry's refusal is test/worker/production.test.ts) delivers
// no seller webhook from its queue handler (every message is retried, untouched) and starts
// no payout run from its Cron Trigger. The same message through a sound configuration is
// delivered, so the refusal is what stopped it.
import { env } from "cloudflare:workers";
import { createExecutionContext, createMessageBatch, createScheduledController, getQueueResult, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import worker from "../../worker/index.ts";
import type { Env } from "../../core/env.ts";
import { DEV_SETTINGS, type DevSetting } from "../../core/environment.ts";
import { newEventId, type EventMessage } from "../../core/events.ts";
import { captureConsole } from "./sinks.ts";
import { createHook, receiverHook, received, signIn } from "./webhooks-helpers.ts";

const dev = env as unknown as Env;

/** Production (no CN2_DEV, no development setting) with one development setting left in. */
function misconfigured(name: DevSetting, value: string): Env {
  const prod: Record<string, unknown> = { ...dev };
  delete prod.CN2_DEV;
  for (const setting of Object.keys(DEV_SETTINGS)) delete prod[setting];
  return { ...prod, [name]: value } as unknown as Env;
}

let stop: (() => void) | null = null;
afterEach(() => {
  stop?.();
  stop = null;
});

describe("M6: the queue and cron entries refuse a misconfigured production", () => {
  it("M6: the queue handler retries every message and delivers nothing; a sound configuration delivers the same message", async () => {
    const seller = await signIn("entries");
    const hook = await receiverHook();
    await createHook(seller, hook.url);
    const message: EventMessage = {
      kind: "event", sellerId: seller.id,
      event: { id: newEventId(), type: "key.disabled", createdAt: new Date().toISOString(), data: { keyId: "k_entriestest0001" } },
    };
    const batch = () => createMessageBatch<unknown>("cn2-webhooks", [{ id: "msg-1", timestamp: Date.now(), attempts: 1, body: message }]);

    const logs = captureConsole();
    stop = logs.stop;
    const refusedCtx = createExecutionContext();
    const refusedBatch = batch();
    await worker.queue!(refusedBatch, misconfigured("DEV_WEBHOOKS_ALLOW_HTTP", "1"), refusedCtx);
    const refused = await getQueueResult(refusedBatch, refusedCtx);
    expect(refused).toMatchObject({ ackAll: false, retryBatch: { retry: true }, explicitAcks: [] });
    expect(logs.text()).toContain("DEV_WEBHOOKS_ALLOW_HTTP");

    const soundCtx = createExecutionContext();
    const soundBatch = batch();
    await worker.queue!(soundBatch, dev, soundCtx);
    const sound = await getQueueResult(soundBatch, soundCtx);
    expect(sound.retryBatch.retry).toBe(false);
    // Fanned out to the seller's endpoint and delivered: the event reaches the receiver once.
    for (let i = 0; i < 200 && (await received(hook.name)).length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    const deliveries = await received(hook.name);
    expect(deliveries.map((d) => d.eventId)).toEqual([message.event.id]);
  });

  it("M6: the Cron Trigger starts no payout run (nothing is handed to waitUntil) and logs why", async () => {
    const logs = captureConsole();
    stop = logs.stop;
    const ctx = createExecutionContext();
    const waited: Promise<unknown>[] = [];
    // The runtime's context, with waitUntil watched: a payout run would be handed to it.
    const spy = Object.assign(Object.create(ctx) as ExecutionContext, { waitUntil: (p: Promise<unknown>) => void waited.push(p) });
    await worker.scheduled!(createScheduledController({ scheduledTime: Date.now(), cron: "0 * * * *" }), misconfigured("STRIPE_API_BASE", dev.STRIPE_API_BASE!), spy);
    await waitOnExecutionContext(ctx);
    expect(waited).toHaveLength(0);
    expect(logs.text()).toContain("STRIPE_API_BASE");
  });
});
