// M6 at the queue entry: a production configuration with a development setting left in it
// (the fetch entry's refusal is test/worker/production.test.ts, the cron's
// test/worker/jobs.test.ts) delivers no seller webhook from its queue handler: every message
// is retried, untouched. The same message through a sound configuration is delivered, so
// the refusal is what stopped it.
import { env } from "cloudflare:workers";
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
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

describe("M6: the queue entry refuses a misconfigured production", () => {
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
});
