// S6 / PR18: sellers register webhook endpoints and get signed events about their keys
// and payouts, retried with exponential backoff, dead-lettered and marked failed after the
// last attempt, with a delivery log they (and only they) can read.
//
// Deliveries go over real HTTP to test/webhook-receiver.ts on loopback (allowed here by
// DEV_WEBHOOKS_ALLOW_HTTP=1). The consumer is driven two ways: deterministically, with
// createMessageBatch/getQueueResult (exact retry delays), and end to end through the real
// queue (miniflare: max 4 attempts, 1 s base delay, see vitest.config.ts).
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asSeller } from "../../schema/tables.ts";
import worker from "../../worker/index.ts";
import type { DeliveryMessage, EventMessage, WebhookPayload } from "../../core/events.ts";
import { emitSellerEvent } from "../../core/emit-event.ts";
import { MAX_RETRY_DELAY_SECONDS, retryDelaySeconds, WEBHOOK_DLQ, WEBHOOK_QUEUE } from "../../worker/webhooks/consumer.ts";
import { verifySignature } from "../../worker/webhooks/signing.ts";
import { addKey, call, chat, demo, earnTrackRecord } from "./helpers.ts";
import {
  as, configureHook, createHook, deliveriesOf, ownerDb, received, receiverHook, signIn, testEnv, waitFor, type TestSeller,
} from "./webhooks-helpers.ts";
import type { Db } from "../../core/postgres.ts";

let sql: Db;
beforeAll(() => {
  sql = ownerDb();
});
afterAll(async () => {
  await sql.end({ timeout: 5 }).catch(() => {});
});

const newEventId = () => `evt_${crypto.randomUUID().replaceAll("-", "")}`;

function deliveryMessage(seller: TestSeller, endpointId: string, type: DeliveryMessage["eventType"] = "key.disabled", data: Record<string, unknown> = { keyId: "k_test000000000" }): DeliveryMessage {
  const id = newEventId();
  const payload = JSON.stringify({ id, type, createdAt: new Date().toISOString(), data } satisfies WebhookPayload);
  return { kind: "delivery", sellerId: seller.id, endpointId, eventId: id, eventType: type, payload };
}

/**
 * Run the Worker's queue handler on one message, as delivery number `attempts`. The
 * plugin's getQueueResult does not report the delay passed to retry(), so it is recorded
 * here from the message itself.
 */
async function consume(queue: string, body: unknown, attempts = 1, id = "msg-1", env: typeof testEnv = testEnv) {
  const batch = createMessageBatch(queue, [{ id, timestamp: new Date(), attempts, body }]);
  const delays = new Map<string, number | undefined>();
  for (const message of batch.messages) {
    const retry = message.retry.bind(message);
    message.retry = (options?: QueueRetryOptions) => {
      delays.set(message.id, options?.delaySeconds);
      retry(options);
    };
  }
  const ctx = createExecutionContext();
  await worker.queue!(batch as MessageBatch<unknown>, env, ctx);
  const result = await getQueueResult(batch, ctx);
  return { ...result, retryMessages: result.retryMessages.map((r) => ({ msgId: r.msgId, delaySeconds: delays.get(r.msgId) })) };
}

describe("webhook API", () => {
  it("registers an endpoint and shows its signing secret once, stored only sealed", async () => {
    const seller = await signIn("create");
    const hook = await receiverHook();
    const res = await as(seller, "/api/webhooks", { method: "POST", json: { url: hook.url, events: ["key.disabled", "payout.paid"] } });
    expect(res.status).toBe(201);
    expect(res.headers.get("cache-control")).toBe("no-store");
    const { webhook, secret } = (await res.json()) as { webhook: Record<string, unknown>; secret: string };
    expect(secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    expect(webhook).toMatchObject({ url: hook.url, events: ["key.disabled", "payout.paid"], enabled: true });

    const list = (await (await as(seller, "/api/webhooks")).json()) as { webhooks: Record<string, unknown>[] };
    expect(list.webhooks).toEqual([webhook]);
    expect(JSON.stringify(list)).not.toContain(secret);

    // At rest: AES-256-GCM under the newest WEBHOOK_SECRET_KEYS entry, never the secret itself.
    const [row] = await sql<{ kid: string; iv: Uint8Array; ciphertext: Uint8Array }[]>`select kid, iv, ciphertext from public.webhook_signing_secrets where endpoint_id = ${webhook.id as string}`;
    expect(row!.kid).toBe("wh-test-2");
    expect(row!.ciphertext).toHaveLength(48);
    expect(Buffer.from(row!.ciphertext).toString("latin1")).not.toContain(secret.slice(6, 14));
    expect(Buffer.from(row!.ciphertext).toString("base64url")).not.toContain(secret.slice(6, 14));
  });

  it("validates input with clear codes", async () => {
    const seller = await signIn("input");
    const bad = async (json: unknown, code: string) => {
      const res = await as(seller, "/api/webhooks", { method: "POST", json });
      expect(res.status, JSON.stringify(json)).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(code);
    };
    await bad({}, "invalid_request");
    await bad({ url: 42 }, "invalid_request");
    await bad({ url: "https://hooks.example.com/", events: ["key.exploded"] }, "invalid_request");
    await bad({ url: "https://hooks.example.com/", events: ["key.disabled", "key.disabled"] }, "invalid_request");
    await bad({ url: "https://hooks.example.com/", extra: true }, "invalid_request");
    await bad({ url: "https://10.1.2.3/hook" }, "webhook_url_refused");
    await bad({ url: "https://169.254.169.254/latest/meta-data" }, "webhook_url_refused");
    await bad({ url: "https://user:pw@hooks.example.com/" }, "webhook_url_refused");
    expect((await as(seller, "/api/webhooks/not-a-uuid", { method: "DELETE" })).status).toBe(400);
    expect((await call("/api/webhooks")).status).toBe(401);
  });

  it("PR18: with DEV_WEBHOOKS_ALLOW_HTTP off, loopback and private targets are refused with webhook_url_refused", async () => {
    const seller = await signIn("ssrf");
    // The same handler the router runs, with the production setting of the flag.
    const { createWebhook } = await import("../../worker/webhooks/routes.ts");
    const prodEnv = { ...testEnv, DEV_WEBHOOKS_ALLOW_HTTP: "0" };
    const attempt = async (url: string) => {
      const request = new Request("https://cn2.test/api/webhooks", {
        method: "POST",
        headers: { authorization: `Bearer ${seller.token}`, "content-type": "application/json" },
        body: JSON.stringify({ url }),
      });
      const res = await createWebhook(Object.assign(request, { params: {}, query: {} }) as never, prodEnv, createExecutionContext()).catch((e: unknown) => e);
      return res;
    };
    const { ApiError } = await import("../../core/http.ts");
    for (const url of [
      "http://127.0.0.1:8080/hook", "https://127.0.0.1/hook", "https://localhost/hook", "https://[::1]/hook",
      "https://[::ffff:127.0.0.1]/hook", "https://2130706433/hook", "https://10.0.0.5/hook", "https://192.168.1.1/hook",
      "https://172.20.0.1/hook", "https://169.254.169.254/hook", "https://100.64.1.1/hook", "https://[fd00::1]/hook",
      "https://[fe80::1]/hook", "https://0.0.0.0/hook", "https://metadata.google.internal/hook", `${RECEIVER_URL()}/hooks/x`,
    ]) {
      const err = await attempt(url);
      expect(err, url).toBeInstanceOf(ApiError);
      expect((err as InstanceType<typeof ApiError>).code, url).toBe("webhook_url_refused");
      expect((err as InstanceType<typeof ApiError>).status).toBe(400);
    }
    // The flag (on in this test environment) opens loopback receivers, and nothing else.
    expect((await as(seller, "/api/webhooks", { method: "POST", json: { url: `${RECEIVER_URL()}/hooks/dev` } })).status).toBe(201);
    const res = await as(seller, "/api/webhooks", { method: "POST", json: { url: "http://10.0.0.5/hook" } });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: "webhook_url_refused", message: expect.stringContaining("(private)") });
  });

  it("seller A cannot see, delete, rotate or read the log of seller B's webhooks (API and SQL)", async () => {
    const a = await signIn("a");
    const b = await signIn("b");
    const { webhook } = await createHook(a, (await receiverHook()).url);
    const id = webhook.id;

    expect(((await (await as(b, "/api/webhooks")).json()) as { webhooks: unknown[] }).webhooks).toEqual([]);
    for (const [path, method] of [[`/api/webhooks/${id}`, "DELETE"], [`/api/webhooks/${id}/rotate`, "POST"], [`/api/webhooks/${id}/deliveries`, "GET"]] as const) {
      const res = await as(b, path, { method });
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("webhook_not_found");
    }
    // Directly in SQL as `authenticated` with B's claims: no rows to see or delete.
    const seen = await asSeller(sql, b.id, (tx) => tx`select id from public.webhook_endpoints where id = ${id}`);
    expect(seen).toHaveLength(0);
    const deleted = await asSeller(sql, b.id, (tx) => tx`delete from public.webhook_endpoints where id = ${id} returning id`);
    expect(deleted).toHaveLength(0);
    const secrets = await asSeller(sql, a.id, (tx) => tx`select * from public.webhook_signing_secrets`).catch((e: { code?: string }) => e.code);
    expect(secrets).toBe("42501"); // not even the owner may read sealed secrets

    // A's endpoint is untouched.
    expect(((await (await as(a, "/api/webhooks")).json()) as { webhooks: { id: string }[] }).webhooks.map((w) => w.id)).toEqual([id]);
    expect((await as(a, `/api/webhooks/${id}/deliveries`)).status).toBe(200);
    expect((await as(a, `/api/webhooks/${id}`, { method: "DELETE" })).status).toBe(200);
    expect((await as(a, `/api/webhooks/${id}`, { method: "DELETE" })).status).toBe(404);
    expect(((await (await as(a, "/api/webhooks")).json()) as { webhooks: unknown[] }).webhooks).toEqual([]);
  });

  it("rotation replaces the secret at once", async () => {
    const seller = await signIn("rotate");
    const hook = await receiverHook();
    const { webhook, secret: first } = await createHook(seller, hook.url);
    const res = await as(seller, `/api/webhooks/${webhook.id}/rotate`, { method: "POST" });
    expect(res.status).toBe(200);
    const { secret: second } = (await res.json()) as { secret: string };
    expect(second).toMatch(/^whsec_/);
    expect(second).not.toBe(first);

    await configureHook(hook.name, { secret: second });
    const m = deliveryMessage(seller, webhook.id);
    expect((await consume(WEBHOOK_QUEUE, m)).explicitAcks).toEqual(["msg-1"]);
    const [got] = await received(hook.name);
    expect(got!.verified).toBe(true);
    expect((await verifySignature(first, got!.signature, got!.body)).ok).toBe(false);
    expect((await verifySignature(second, got!.signature, got!.body)).ok).toBe(true);
  });
});

const RECEIVER_URL = () => testEnv.WEBHOOK_RECEIVER_URL;

describe("webhook deliveries (consumer)", () => {
  it("signs each delivery so the receiver can verify it with the secret it was given, and with nothing else", async () => {
    const seller = await signIn("sign");
    const hook = await receiverHook();
    const { webhook, secret } = await createHook(seller, hook.url);
    await configureHook(hook.name, { secret });
    const m = deliveryMessage(seller, webhook.id, "key.disabled", { keyId: "k_abcdefabcdef01", state: "disabled" });

    const result = await consume(WEBHOOK_QUEUE, m);
    expect(result.explicitAcks).toEqual(["msg-1"]);
    expect(result.retryMessages).toEqual([]);

    const [got] = await received(hook.name);
    expect(got).toMatchObject({ eventId: m.eventId, eventType: "key.disabled", attempt: 1, contentType: "application/json", body: m.payload, status: 200 });
    // The receiver's own node:crypto check (docs/webhooks.md) passed ...
    expect(got!.verified).toBe(true);
    // ... and so does ours; another secret, an altered body or timestamp do not.
    expect(got!.signature).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    expect((await verifySignature(secret, got!.signature, got!.body)).ok).toBe(true);
    expect(await verifySignature(`${secret.slice(0, -1)}x`, got!.signature, got!.body)).toEqual({ ok: false, reason: "signature_mismatch" });
    expect(await verifySignature(secret, got!.signature, got!.body.replace("disabled", "healthy"))).toEqual({ ok: false, reason: "signature_mismatch" });
    const t = Number(/t=(\d+)/.exec(got!.signature!)![1]);
    expect(await verifySignature(secret, got!.signature!.replace(`t=${t}`, `t=${t - 1}`), got!.body)).toEqual({ ok: false, reason: "signature_mismatch" });
    expect(JSON.parse(got!.body)).toEqual({ id: m.eventId, type: "key.disabled", createdAt: expect.any(String), data: { keyId: "k_abcdefabcdef01", state: "disabled" } });

    const [log] = await deliveriesOf(seller, webhook.id);
    expect(log).toMatchObject({ eventId: m.eventId, eventType: "key.disabled", attempt: 1, statusCode: 200, error: null, state: "delivered", nextAttemptAt: null });
    expect(log!.deliveredAt).not.toBeNull();
    // The log holds no payload.
    expect(JSON.stringify(log)).not.toContain("k_abcdefabcdef01");
  });

  it("retries a failing receiver with exponential backoff, logs every attempt, and the dead-letter consumer marks it failed", async () => {
    const seller = await signIn("retry");
    const hook = await receiverHook({ failTimes: -1, failStatus: 503 });
    const { webhook } = await createHook(seller, hook.url);
    const m = deliveryMessage(seller, webhook.id, "payout.failed", { payoutId: "po_1" });

    const delays: (number | undefined)[] = [];
    for (let attempt = 1; attempt <= 4; attempt++) {
      const result = await consume(WEBHOOK_QUEUE, m, attempt);
      expect(result.explicitAcks).toEqual([]);
      expect(result.retryMessages).toHaveLength(1);
      delays.push(result.retryMessages[0]!.delaySeconds);
    }
    // WEBHOOK_RETRY_BASE_SECONDS=1 here: 1, 2, 4, 8 s (60 s, 2 min, 4 min, ... in production).
    expect(delays).toEqual([1, 2, 4, 8]);
    expect((await received(hook.name)).map((d) => [d.eventId, d.attempt, d.status])).toEqual([1, 2, 3, 4].map((n) => [m.eventId, n, 503]));

    let log = await deliveriesOf(seller, webhook.id);
    expect(log.map((d) => [d.attempt, d.statusCode, d.error, d.state])).toEqual([4, 3, 2, 1].map((n) => [n, 503, "http_error", "retrying"]));
    const due = log.map((d) => Date.parse(d.nextAttemptAt!) - Date.parse(d.createdAt)).reverse();
    // Each attempt's next_attempt_at is its backoff after the attempt (1, 2, 4, 8 s). The
    // row is written after the backoff is computed, so the gap is at most the backoff, and
    // each backoff is longer than the one before: bounds by order, not by a clock.
    due.forEach((ms, i) => expect(ms).toBeLessThanOrEqual(2 ** i * 1000));
    due.forEach((ms, i) => expect(ms).toBeGreaterThan(i === 0 ? 0 : due[i - 1]!));

    // The queue gives up (max_retries) and moves the message to the dead-letter queue.
    const dead = await consume(WEBHOOK_DLQ, m, 1, "msg-dead");
    expect(dead.explicitAcks).toEqual(["msg-dead"]);
    log = await deliveriesOf(seller, webhook.id);
    expect(log.map((d) => d.state)).toEqual(["failed", "failed", "failed", "failed"]);
    expect(log.every((d) => d.nextAttemptAt === null && d.deliveredAt === null)).toBe(true);
  });

  it("a receiver that recovers gets the same event, and the log ends delivered", async () => {
    const seller = await signIn("recover");
    const hook = await receiverHook({ failTimes: 2, failStatus: 500 });
    const { webhook, secret } = await createHook(seller, hook.url);
    const m = deliveryMessage(seller, webhook.id, "key.recovered");
    expect((await consume(WEBHOOK_QUEUE, m, 1)).retryMessages).toEqual([{ msgId: "msg-1", delaySeconds: 1 }]);
    expect((await consume(WEBHOOK_QUEUE, m, 2)).retryMessages).toEqual([{ msgId: "msg-1", delaySeconds: 2 }]);
    expect((await consume(WEBHOOK_QUEUE, m, 3)).explicitAcks).toEqual(["msg-1"]);
    const got = await received(hook.name);
    expect(new Set(got.map((d) => d.body)).size).toBe(1); // byte-identical body every time
    for (const d of got) expect((await verifySignature(secret, d.signature, d.body)).ok).toBe(true);
    const log = await deliveriesOf(seller, webhook.id);
    expect(log.map((d) => [d.attempt, d.statusCode, d.state])).toEqual([[3, 200, "delivered"], [2, 500, "retrying"], [1, 500, "retrying"]]);
    // The log can be filtered by event and paged.
    const other = deliveryMessage(seller, webhook.id, "key.disabled");
    await consume(WEBHOOK_QUEUE, other);
    const page = (await (await as(seller, `/api/webhooks/${webhook.id}/deliveries?eventId=${m.eventId}&limit=2`)).json()) as { deliveries: { eventId: string; attempt: number }[] };
    expect(page.deliveries.map((d) => [d.eventId, d.attempt])).toEqual([[m.eventId, 3], [m.eventId, 2]]);
    expect((await deliveriesOf(seller, webhook.id)).map((d) => d.eventId)[0]).toBe(other.eventId);
    for (const q of ["limit=0", "limit=201", "limit=x", "eventId=nope", "other=1"]) {
      const res = await as(seller, `/api/webhooks/${webhook.id}/deliveries?${q}`);
      expect(res.status, q).toBe(400);
    }
  });

  it("never follows a redirect, and times out a slow receiver", async () => {
    const seller = await signIn("redirect");
    const elsewhere = await receiverHook();
    const hook = await receiverHook({ redirectTo: elsewhere.url });
    const { webhook } = await createHook(seller, hook.url);
    const r = await consume(WEBHOOK_QUEUE, deliveryMessage(seller, webhook.id));
    expect(r.retryMessages).toHaveLength(1);
    expect(await received(elsewhere.name)).toEqual([]);
    const [log] = await deliveriesOf(seller, webhook.id);
    expect(log).toMatchObject({ statusCode: 302, error: "redirect_not_followed", state: "retrying" });

    const slow = await receiverHook({ delayMs: 4000 });
    const { webhook: slowHook } = await createHook(seller, slow.url);
    const t = await consume(WEBHOOK_QUEUE, deliveryMessage(seller, slowHook.id));
    expect(t.retryMessages).toHaveLength(1);
    const [timedOut] = await deliveriesOf(seller, slowHook.id);
    expect(timedOut).toMatchObject({ statusCode: null, error: "timeout", state: "retrying" });
    expect(timedOut!.durationMs).toBeGreaterThanOrEqual(1400);
  });

  it("re-checks the URL before each attempt: a stored private target is refused, not called", async () => {
    const seller = await signIn("recheck");
    // Written behind the API's back (as a migration, a bug or an old rule might have).
    const [row] = await sql<{ id: string }[]>`insert into public.webhook_endpoints (seller_id, url) values (${seller.id}, 'https://10.0.0.7/hook') returning id`;
    const result = await consume(WEBHOOK_QUEUE, deliveryMessage(seller, row!.id));
    expect(result.explicitAcks).toEqual(["msg-1"]);
    const [log] = await deliveriesOf(seller, row!.id);
    expect(log).toMatchObject({ statusCode: null, error: "url_refused", state: "failed" });
  });

  it("never sends unsigned: a secret that does not open (retired key) is logged and retried, nothing is sent", async () => {
    const seller = await signIn("nosecret");
    const hook = await receiverHook();
    const { webhook } = await createHook(seller, hook.url);
    await sql`update public.webhook_signing_secrets set kid = 'wh-retired' where endpoint_id = ${webhook.id}`;
    const result = await consume(WEBHOOK_QUEUE, deliveryMessage(seller, webhook.id), 2);
    expect(result.retryMessages).toEqual([{ msgId: "msg-1", delaySeconds: 2 }]);
    expect(await received(hook.name)).toEqual([]);
    const [log] = await deliveriesOf(seller, webhook.id);
    expect(log).toMatchObject({ statusCode: null, error: "secret_unavailable", state: "retrying" });
    // Rotating seals a fresh secret under the current key: deliveries flow again.
    expect((await as(seller, `/api/webhooks/${webhook.id}/rotate`, { method: "POST" })).status).toBe(200);
    expect((await consume(WEBHOOK_QUEUE, deliveryMessage(seller, webhook.id))).explicitAcks).toEqual(["msg-1"]);
    expect(await received(hook.name)).toHaveLength(1);
  });

  it("drops deliveries for deleted or disabled endpoints and malformed messages", async () => {
    const seller = await signIn("gone");
    const hook = await receiverHook();
    const { webhook } = await createHook(seller, hook.url);
    await sql`update public.webhook_endpoints set enabled = false where id = ${webhook.id}`;
    expect((await consume(WEBHOOK_QUEUE, deliveryMessage(seller, webhook.id))).explicitAcks).toEqual(["msg-1"]);
    expect((await as(seller, `/api/webhooks/${webhook.id}`, { method: "DELETE" })).status).toBe(200);
    expect((await consume(WEBHOOK_QUEUE, deliveryMessage(seller, webhook.id))).explicitAcks).toEqual(["msg-1"]);
    expect(await received(hook.name)).toEqual([]);
    expect((await consume(WEBHOOK_QUEUE, { kind: "delivery", nonsense: true })).explicitAcks).toEqual(["msg-1"]);
    expect((await consume(WEBHOOK_QUEUE, "not json")).explicitAcks).toEqual(["msg-1"]);
  });

  it("fans an event out to the seller's subscribed endpoints only", async () => {
    const seller = await signIn("fanout");
    const all = await receiverHook();
    const payouts = await receiverHook();
    const { webhook: toAll } = await createHook(seller, all.url);
    await createHook(seller, payouts.url, ["payout.paid"]);
    const event: EventMessage = { kind: "event", sellerId: seller.id, event: { id: newEventId(), type: "key.recovered", createdAt: new Date().toISOString(), data: { keyId: "k_fanout0000000" } } };
    // The per-endpoint deliveries run through the real queue; what the fan-out puts on it is
    // recorded on the way, so "none for the other endpoint" needs no waiting: a delivery
    // message is the only way an endpoint is ever called.
    const queued: { endpointId: string }[] = [];
    const queue = testEnv.WEBHOOKS!;
    const recording = {
      ...testEnv,
      WEBHOOKS: {
        send: queue.send.bind(queue),
        sendBatch: (messages: Iterable<MessageSendRequest<{ endpointId: string }>>, options?: QueueSendBatchOptions) => {
          const list = [...messages];
          queued.push(...list.map((m) => m.body));
          return queue.sendBatch(list, options);
        },
      },
    } as typeof testEnv;
    expect((await consume(WEBHOOK_QUEUE, event, 1, "msg-1", recording)).explicitAcks).toEqual(["msg-1"]);
    expect(queued.map((d) => d.endpointId)).toEqual([toAll.id]);
    const [got] = await waitFor("fan-out delivery", async () => {
      const d = await received(all.name);
      return d.length > 0 && d;
    });
    expect(got!.eventId).toBe(event.event.id);
    expect(await received(payouts.name)).toEqual([]);
  });

  it("backoff doubles from the base and is capped", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13].map((n) => retryDelaySeconds(n))).toEqual([60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600, 21600, 21600, 21600]);
    expect(retryDelaySeconds(100, 60)).toBe(MAX_RETRY_DELAY_SECONDS);
    expect(retryDelaySeconds(3, 1)).toBe(4);
  });
});

describe("end to end through the queue", () => {
  it("PR18: a key disabled by an upstream 401 sends key.disabled to the seller's endpoint", async () => {
    const seller = await signIn("e2e");
    const hook = await receiverHook();
    const { webhook, secret } = await createHook(seller, hook.url, ["key.disabled"]);
    await configureHook(hook.name, { secret });

    // A key of this seller, listed through the seller API (sealed to the vault key, as the seller's device would).
    const { keyId, credential } = await addKey({ seller });

    await demo("/__demo/behaviour", { credential, status: 401 });
    const res = await chat();
    expect(res.status).toBeGreaterThanOrEqual(400);
    await res.body?.cancel();

    const [got] = await waitFor("key.disabled delivery", async () => {
      const d = await received(hook.name);
      return d.length > 0 && d;
    });
    expect(got!.eventType).toBe("key.disabled");
    expect(got!.verified).toBe(true);
    expect((await verifySignature(secret, got!.signature, got!.body)).ok).toBe(true);
    const payload = JSON.parse(got!.body) as WebhookPayload;
    expect(payload).toMatchObject({ type: "key.disabled", data: { keyId, state: "disabled", previousState: "healthy", reason: "upstream_401" } });
    // Metadata only: no credential, no request or response body.
    expect(got!.body).not.toContain(credential);
    expect(got!.body).not.toContain("Hello");

    const log = await waitFor("delivery log", async () => {
      const l = await deliveriesOf(seller, webhook.id);
      return l.length > 0 && l;
    });
    expect(log[0]).toMatchObject({ eventId: payload.id, eventType: "key.disabled", attempt: 1, statusCode: 200, state: "delivered" });
  });

  it("P2: a key that earns premium tells its seller (key.tier_changed)", async () => {
    const seller = await signIn("e2e-tier");
    const hook = await receiverHook();
    const { secret } = await createHook(seller, hook.url, ["key.tier_changed"]);
    await configureHook(hook.name, { secret });
    const { keyId } = await addKey({ seller, config: { tier: "premium" } });

    await earnTrackRecord(keyId);
    const [got] = await waitFor("key.tier_changed delivery", async () => {
      const d = await received(hook.name);
      return d.length > 0 && d;
    });
    expect(got!.verified).toBe(true);
    const payload = JSON.parse(got!.body) as WebhookPayload;
    expect(payload).toMatchObject({
      type: "key.tier_changed",
      data: { keyId, tier: "premium", previousTier: "standard", askedTier: "premium", trackRecord: { calls: 10, successRate: 1, uptime: 1 } },
    });
    expect((await as(seller, `/api/keys/${keyId}`, { method: "DELETE" })).status).toBe(200);
  });

  it("a receiver that keeps failing gets attempts at growing intervals, then the delivery is dead-lettered and logged failed", async () => {
    const seller = await signIn("e2e-fail");
    const hook = await receiverHook({ failTimes: -1, failStatus: 500 });
    const { webhook } = await createHook(seller, hook.url);
    const eventId = await emitSellerEvent(testEnv, seller.id, { type: "payout.failed", data: { payoutId: "po_e2e", failureCode: "account_closed" } });
    expect(eventId).toMatch(/^evt_/);

    const log = await waitFor("dead-lettered delivery", async () => {
      const l = await deliveriesOf(seller, webhook.id);
      return l.length === 4 && l.every((d) => d.state === "failed") && l;
    }, 25_000);
    expect(log.map((d) => [d.attempt, d.statusCode, d.error])).toEqual([4, 3, 2, 1].map((n) => [n, 500, "http_error"]));
    const got = await received(hook.name);
    expect(got.map((d) => d.attempt)).toEqual([1, 2, 3, 4]);
    const gaps = got.slice(1).map((d, i) => d.receivedAt - got[i]!.receivedAt);
    // 1 s, 2 s, 4 s of backoff (plus batching), each longer than the last.
    gaps.forEach((gap, i) => expect(gap).toBeGreaterThanOrEqual(2 ** i * 1000 - 100));
    expect(gaps[2]!).toBeGreaterThan(gaps[0]!);
  }, 40_000);

  it("ignores events of ids that are no seller account (ops-made keys), without throwing", async () => {
    expect(await emitSellerEvent(testEnv, "seller_test", { type: "key.disabled", keyId: "k_x" })).toBeNull();
    expect(await emitSellerEvent({}, "5b0c1a43-9d41-4b7e-8a1e-1f6f7f0c2b11", { type: "key.disabled" })).toBeNull();
  });
});
