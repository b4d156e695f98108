// M4, PR12, PR13, PR14: the analytics sink. Request metadata leaves the key objects only
// after their earnings flush committed it to Postgres, through the real ANALYTICS queue and
// the Worker's real queue handler, to Tinybird's Events API (a fake on loopback,
// test/fake-tinybird.ts, that fails or hangs on demand) or, without a Tinybird token, the
// local Postgres request_log. A failing or hanging sink never fails or touches a request,
// and once it recovers every row arrives exactly once.
import { env } from "cloudflare:workers";
import { createExecutionContext, createMessageBatch, getQueueResult, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import worker from "../../worker/index.ts";
import type { Env } from "../../core/env.ts";
import type { AnalyticsRow } from "../../schema/analytics.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { AnalyticsOutbox } from "../../objects/seller-key/analytics-outbox.ts";
import { tinybirdBase } from "../../worker/analytics/tinybird.ts";
import { PROXY, addKey, call, chatBody, inspect, randomKeyId, ownerDb, removeAllKeys } from "./helpers.ts";

const e = env as unknown as Env;
const FAKE = e.TINYBIRD_API_BASE!;
const DATASOURCE = e.TINYBIRD_DATASOURCE;
const COLUMNS = ["amount_micros", "at", "duration_ms", "key_id", "latency_ms", "method", "outcome", "provider", "request_id", "route", "status"];

async function fake<T>(path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(`${FAKE}${path}`, init);
  if (!res.ok) throw new Error(`fake tinybird ${path}: ${res.status}`);
  return res.json() as Promise<T>;
}
const setMode = (mode: "ok" | "fail" | "hang") => fake("/__fake/mode", { method: "PUT", body: JSON.stringify({ mode }) });
const ingested = () => fake<Record<string, unknown>[]>(`/__fake/rows?name=${DATASOURCE}`);
const attempts = () => fake<{ mode: string; status: number | null; abandoned: boolean; requestIds: string[] }[]>("/__fake/attempts");
afterAll(() => setMode("ok"));

/** Wait for a condition the sink's progress makes true; bounded by tries, not by a clock. */
async function until<T>(what: string, probe: () => Promise<T | undefined | false>, tries = 600): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const value = await probe();
    if (value) return value;
    await new Promise((done) => setTimeout(done, 50));
  }
  throw new Error(`never happened: ${what}`);
}

/** Paid-for-nothing proxy calls through the real Worker (router -> key object -> demo upstream). */
async function traffic(n: number, body = chatBody()): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await call("/openai/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json", "cn2-proxy-token": PROXY }, body });
    expect(res.status).toBe(200);
    const answer = (await res.json()) as { choices: unknown[] };
    expect(answer.choices.length).toBeGreaterThan(0);
    ids.push(res.headers.get("cn2-request-id")!);
  }
  return ids;
}

const seenAtSink = async (ids: string[]) => (await attempts()).filter((a) => a.requestIds.some((id) => ids.includes(id)));
const loggedInPostgres = (keyId: string) => ownerDb(async (sql) => (await sql`select request_id from public.request_log where key_id = ${keyId}`).map((r) => r.request_id as string));

describe("the analytics sink (M4)", () => {
  // One key in the marketplace per test: its object serves (and flushes) every request.
  beforeEach(() => removeAllKeys());

  it("a failing, then hanging sink fails no request and touches none; once it recovers every row arrives exactly once", async () => {
    const { keyId } = await addKey();
    const stub = keyStub(e, keyId, "default");
    const marker = `secret-prompt-${crypto.randomUUID()}`;
    const body = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: marker }] });

    // 1. The sink fails (503). Requests succeed; the flush commits to Postgres; the sink is retried.
    await setMode("fail");
    const first = await traffic(4, body);
    // The request path does no sink I/O: nothing of these requests has reached the sink before their key object flushes.
    expect(await seenAtSink(first)).toEqual([]);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect((await loggedInPostgres(keyId)).sort()).toEqual([...first].sort());
    await until("two failed deliveries of the first rows", async () => (await seenAtSink(first)).filter((a) => a.status === 503).length >= 2);
    // Traffic while the sink keeps failing: the same answers, and the key stays healthy.
    const second = await traffic(4, body);
    expect(await seenAtSink(second)).toEqual([]);
    expect(await runDurableObjectAlarm(stub)).toBe(true);

    // 2. The sink hangs: reads the batch and never answers. The consumer gives up on it
    // (ANALYTICS_TIMEOUT_MS) and the queue brings the batch back, to hang again.
    await setMode("hang");
    await until("a hanging delivery the consumer gave up on", async () => (await seenAtSink([...first, ...second])).some((a) => a.mode === "hang" && a.abandoned));
    const third = await traffic(4, body);
    expect(await seenAtSink(third)).toEqual([]);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect((await loggedInPostgres(keyId)).sort()).toEqual([...first, ...second, ...third].sort());
    const key = await inspect(keyId);
    expect(key.health.state).toBe("healthy");
    // Nothing was ingested while the sink failed or hung.
    const all = [...first, ...second, ...third];
    expect((await ingested()).filter((r) => all.includes(r.request_id as string))).toEqual([]);

    // 3. The sink recovers: every row arrives, once.
    await setMode("ok");
    const rowsOf = async () => (await ingested()).filter((r) => all.includes(r.request_id as string));
    await until("every row at the sink", async () => new Set((await rowsOf()).map((r) => r.request_id)).size === all.length);
    // A sentinel flushed after recovery arrives too; by then any stray redelivery would have landed as well.
    const sentinel = await traffic(1);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await until("the sentinel at the sink", async () => (await ingested()).some((r) => r.request_id === sentinel[0]));
    const rows = await rowsOf();
    expect(rows.map((r) => r.request_id).sort()).toEqual([...all].sort());
    // PR12 PR13: the eleven metadata fields, as recorded; no body, no header, no IP, no buyer.
    for (const row of rows) {
      expect(Object.keys(row).sort()).toEqual(COLUMNS);
      expect(row).toMatchObject({ key_id: keyId, provider: "openai", route: "/v1/chat/completions", method: "POST", status: 200, amount_micros: 0, outcome: "served" });
      expect(row.at).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$/);
      // An answer read whole: its time to the last byte is known, and not before its first.
      expect(row.duration_ms).toEqual(expect.any(Number));
      expect(row.duration_ms as number).toBeGreaterThanOrEqual(row.latency_ms as number);
    }
    expect(JSON.stringify(await ingested())).not.toContain(marker);
    // The key object's outbox is empty: nothing left waiting.
    expect((await inspect(keyId)).analyticsOutbox).toBe(0);
    // The flush path was untouched: each row once in Postgres as well.
    expect((await loggedInPostgres(keyId)).sort()).toEqual([...all, ...sentinel].sort());
  }, 90_000);

  it("a queue that refuses the rows fails no flush: the rows reach Postgres, wait in the key's outbox and go with the next alarm", async () => {
    const { keyId } = await addKey();
    const stub = keyStub(e, keyId, "default");
    const ids = await traffic(3);
    // The key object's queue binding refuses every send.
    await runInDurableObject(stub, (instance) => {
      const self = instance as unknown as { env: Env };
      self.env = { ...self.env, ANALYTICS: { ...self.env.ANALYTICS, sendBatch: () => Promise.reject(new Error("queue unavailable")) } } as Env;
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect((await loggedInPostgres(keyId)).sort()).toEqual([...ids].sort());
    expect((await inspect(keyId)).analyticsOutbox).toBe(3);
    // The alarm comes back for them.
    expect(await runInDurableObject(stub, (_i, state) => state.storage.getAlarm())).not.toBeNull();
    expect(await seenAtSink(ids)).toEqual([]);

    // The queue works again: the next alarm enqueues them, and they arrive once.
    await runInDurableObject(stub, (instance) => {
      (instance as unknown as { env: Env }).env = e;
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect((await inspect(keyId)).analyticsOutbox).toBe(0);
    await until("the waiting rows at the sink", async () => (await ingested()).filter((r) => ids.includes(r.request_id as string)).length === 3);
    expect((await ingested()).filter((r) => ids.includes(r.request_id as string)).map((r) => r.request_id).sort()).toEqual([...ids].sort());
  });

  it("PR13: a request's body reaches no sink: neither Tinybird nor the local request_log", async () => {
    const { keyId } = await addKey();
    const marker = `body-marker-${crypto.randomUUID()}`;
    const ids = await traffic(2, JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: marker }] }));
    expect(await runDurableObjectAlarm(keyStub(e, keyId, "default"))).toBe(true);
    await until("the rows at the sink", async () => (await ingested()).filter((r) => ids.includes(r.request_id as string)).length === 2);
    expect(JSON.stringify(await ingested())).not.toContain(marker);
    expect(JSON.stringify(await attempts())).not.toContain(marker);
    const logged = await ownerDb((sql) => sql`select * from public.request_log where key_id = ${keyId}`);
    expect(logged).toHaveLength(2);
    expect(JSON.stringify(logged)).not.toContain(marker);
  });

  it("an outbox made before the time to the last byte was carried gains the column, and its waiting rows go with it unknown", async () => {
    const { keyId } = await addKey();
    const stub = keyStub(e, keyId, "default");
    const requestId = `req_old${crypto.randomUUID().replaceAll("-", "")}`;
    const found = await runInDurableObject(stub, (_i, state) => {
      const sql = state.storage.sql;
      sql.exec("DROP TABLE IF EXISTS analytics_outbox");
      sql.exec(`CREATE TABLE analytics_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, at INTEGER NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL,
        status INTEGER NOT NULL, latency_ms INTEGER NOT NULL, amount_micros INTEGER NOT NULL, outcome TEXT NOT NULL)`);
      sql.exec("INSERT INTO analytics_outbox (request_id, at, method, route, status, latency_ms, amount_micros, outcome) VALUES (?, ?, 'POST', '/v1/chat/completions', 200, 12, 0, 'served')", requestId, Date.now());
      const outbox = new AnalyticsOutbox(state.storage);
      return { size: outbox.size(), columns: sql.exec("SELECT * FROM analytics_outbox LIMIT 0").columnNames, rows: sql.exec("SELECT request_id, duration_ms FROM analytics_outbox").toArray() };
    });
    expect(found.size).toBe(1);
    expect(found.columns).toContain("duration_ms");
    expect(found.rows).toEqual([{ request_id: requestId, duration_ms: null }]);
    // A drain sends it, its time unknown.
    const drained = await runInDurableObject(stub, (_i, state) => new AnalyticsOutbox(state.storage).drain(e, { keyId, provider: "openai" }));
    expect(drained).toEqual({ sent: 1, left: 0 });
    const atSink = await until("the old row at the sink", async () => (await ingested()).find((r) => r.request_id === requestId));
    expect(atSink).toMatchObject({ key_id: keyId, latency_ms: 12, duration_ms: null });
  });

  it("without a Tinybird token, a key object's queued rows write the time to the last byte into request_log", async () => {
    const { keyId } = await addKey();
    const stub = keyStub(e, keyId, "default");
    const ids = await traffic(2);
    // The messages the key object's outbox enqueues, taken as they are sent (the object runs in this isolate).
    const bodies: unknown[] = [];
    await runInDurableObject(stub, (instance) => {
      const self = instance as unknown as { env: Env };
      const sendBatch = async (batch: Iterable<MessageSendRequest<unknown>>): Promise<QueueSendBatchResponse> => {
        for (const m of batch) bodies.push(structuredClone(m.body));
        return { metadata: { metrics: { backlogCount: 0, backlogBytes: 0 } } };
      };
      self.env = { ...self.env, ANALYTICS: { ...self.env.ANALYTICS, sendBatch } } as Env;
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await runInDurableObject(stub, (instance) => {
      (instance as unknown as { env: Env }).env = e;
    });
    expect((await inspect(keyId)).analyticsOutbox).toBe(0);
    const queued = bodies.flatMap((b) => (b as { rows: AnalyticsRow[] }).rows);
    expect(queued.map((r) => r.request_id).sort()).toEqual([...ids].sort());
    // Answers read whole: the time to the last byte is known, and not before the first.
    for (const r of queued) {
      expect(r.duration_ms).toEqual(expect.any(Number));
      expect(r.duration_ms!).toBeGreaterThanOrEqual(r.latency_ms);
    }
    // The flush wrote these rows already: take them out, so that what is read back is the sink's own insert.
    await ownerDb((sql) => sql`delete from public.request_log where key_id = ${keyId}`);
    const local = { ...e, TINYBIRD_TOKEN: undefined } as Env;
    const result = await consume("cn2-analytics", bodies.map((body, i) => ({ id: `m-${i}`, attempts: 1, body })), local);
    expect(result.retryMessages).toEqual([]);
    const stored = await ownerDb((sql) => sql<{ request_id: string; latency_ms: number; duration_ms: number | null }[]>`
      select request_id, latency_ms, duration_ms from public.request_log where key_id = ${keyId}`);
    const byId = (a: { request_id: string }, b: { request_id: string }) => (a.request_id < b.request_id ? -1 : 1);
    const expected = queued.map((r) => ({ request_id: r.request_id, latency_ms: r.latency_ms, duration_ms: r.duration_ms }));
    expect(stored.map((r) => ({ ...r })).sort(byId)).toEqual(expected.sort(byId));
  });
});

/**
 * The Worker's queue handler on a batch made here (as the runtime would deliver it). The
 * plugin's getQueueResult does not report the delay passed to retry(): it is recorded here.
 */
async function consume(queue: string, messages: { id: string; attempts: number; body: unknown }[], config: Env) {
  const batch = createMessageBatch(queue, messages.map((m) => ({ ...m, timestamp: new Date() })));
  const delays = new Map<string, number | undefined>();
  for (const message of batch.messages) {
    const retry = message.retry.bind(message);
    message.retry = (options?: QueueRetryOptions) => {
      delays.set(message.id, options?.delaySeconds);
      retry(options);
    };
  }
  const ctx = createExecutionContext();
  await worker.queue!(batch as MessageBatch<unknown>, config, ctx);
  const result = await getQueueResult(batch, ctx);
  return { ...result, retryMessages: result.retryMessages.map((r) => ({ msgId: r.msgId, delaySeconds: delays.get(r.msgId) })) };
}

let n = 0;
const row = (keyId: string, over: Partial<AnalyticsRow> = {}): AnalyticsRow => ({
  request_id: `req_sink${Date.now().toString(36)}${(n++).toString(36).padStart(6, "0")}`, key_id: keyId, provider: "groq", route: "/openai/v1/chat/completions",
  method: "POST", at: Date.now() - 60_000, latency_ms: 42, duration_ms: 58, status: 200, amount_micros: 1500, outcome: "served", ...over,
});

describe("the sink's consumer", () => {
  it("without a Tinybird token the batch goes to the local Postgres request_log, idempotently next to the flush; old rows and extra fields do not pass", async () => {
    const local = { ...e, TINYBIRD_TOKEN: undefined } as Env;
    const keyId = randomKeyId();
    const fresh = row(keyId);
    const flushed = row(keyId, { latency_ms: 7 });
    const stale = row(keyId, { at: Date.now() - 31 * 86_400_000 });
    // The time to the last byte: unknown (a failed request); a stream's row sent before it
    // ended and again with its time, in one batch; a row queued before the field existed.
    const failed = row(keyId, { status: 503, outcome: "upstream_error", duration_ms: null });
    const streamed = row(keyId, { latency_ms: 30, duration_ms: 900 });
    const { duration_ms: _, ...older } = row(keyId);
    // What the key object's flush wrote already (with its own figures): the sink must not change it.
    await ownerDb((sql) => sql`insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, status, amount_micros, outcome)
      values (${flushed.request_id}, ${keyId}, 'groq', ${flushed.route}, 'POST', now(), 999, 200, 1500, 'served')`);
    const withIp = { v: 1, rows: [{ ...row(keyId), ip: "203.0.113.7" }] };

    const result = await consume("cn2-analytics", [
      { id: "m-ok", attempts: 1, body: { v: 1, rows: [fresh, flushed, stale] } },
      { id: "m-extra-field", attempts: 1, body: withIp },
      { id: "m-durations", attempts: 1, body: { v: 1, rows: [failed, { ...streamed, duration_ms: null }, older, streamed] } },
    ], local);
    expect(result.explicitAcks.sort()).toEqual(["m-durations", "m-extra-field", "m-ok"]);
    expect(result.retryMessages).toEqual([]);
    const rows = async () => (await ownerDb((sql) => sql`
      select request_id, provider, route, method, (extract(epoch from at) * 1000)::bigint::text as at_ms, latency_ms, duration_ms, status, amount_micros::int as amount, outcome
        from public.request_log where key_id = ${keyId} order by request_id`)).map((r) => ({ ...r }));
    const stored = await rows();
    expect(stored.map((r) => r.request_id).sort()).toEqual([fresh.request_id, flushed.request_id, failed.request_id, streamed.request_id, older.request_id].sort());
    expect(stored.find((r) => r.request_id === fresh.request_id)).toEqual({
      request_id: fresh.request_id, provider: "groq", route: fresh.route, method: "POST", at_ms: String(fresh.at), latency_ms: 42, duration_ms: 58, status: 200, amount: 1500, outcome: "served",
    });
    expect(stored.find((r) => r.request_id === flushed.request_id)).toMatchObject({ latency_ms: 999, duration_ms: null });
    expect(stored.find((r) => r.request_id === failed.request_id)).toMatchObject({ latency_ms: 42, duration_ms: null, status: 503 });
    expect(stored.find((r) => r.request_id === streamed.request_id)).toMatchObject({ latency_ms: 30, duration_ms: 900 });
    expect(stored.find((r) => r.request_id === older.request_id)).toMatchObject({ latency_ms: 42, duration_ms: null });
    // Delivered again (a queue redelivery): nothing changes.
    const again = await consume("cn2-analytics", [{ id: "m-again", attempts: 2, body: { v: 1, rows: [fresh, flushed] } }], local);
    expect(again.explicitAcks).toEqual(["m-again"]);
    expect(await rows()).toEqual(stored);
  });

  it("a sink that cannot be reached is retried with exponential backoff; the dead-letter queue tries again hours apart, then drops with a log", async () => {
    const unreachable = { ...e, TINYBIRD_API_BASE: "http://127.0.0.1:9" } as Env;
    const keyId = randomKeyId();
    const result = await consume("cn2-analytics", [
      { id: "first", attempts: 1, body: { v: 1, rows: [row(keyId)] } },
      { id: "third", attempts: 3, body: { v: 1, rows: [row(keyId)] } },
    ], unreachable);
    expect(result.explicitAcks).toEqual([]);
    // ANALYTICS_RETRY_BASE_SECONDS is 1 in the tests: 1 s after the first attempt, 4 s after the third.
    expect(result.retryMessages.sort((a, b) => a.msgId.localeCompare(b.msgId))).toEqual([{ msgId: "first", delaySeconds: 1 }, { msgId: "third", delaySeconds: 4 }]);

    const dead = await consume("cn2-analytics-dlq", [
      { id: "dlq-early", attempts: 1, body: { v: 1, rows: [row(keyId)] } },
      { id: "dlq-last", attempts: 5, body: { v: 1, rows: [row(keyId)] } },
    ], unreachable);
    expect(dead.explicitAcks).toEqual(["dlq-last"]);
    expect(dead.retryMessages).toEqual([{ msgId: "dlq-early", delaySeconds: 1024 }]);
  });

  it("in production the Tinybird host is TINYBIRD_HOST over https only; the development base is ignored there", () => {
    const prod = { ...e, CN2_DEV: undefined } as Env;
    expect(tinybirdBase(e)).toBe(FAKE);
    expect(tinybirdBase(prod)).toBe("https://api.tinybird.co");
    expect(tinybirdBase({ ...prod, TINYBIRD_HOST: "https://api.us-east.aws.tinybird.co/" })).toBe("https://api.us-east.aws.tinybird.co");
    expect(() => tinybirdBase({ ...prod, TINYBIRD_HOST: "http://api.tinybird.co" })).toThrow("tinybird_host_not_https");
  });
});
