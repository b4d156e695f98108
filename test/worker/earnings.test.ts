// S7, PR16, PR12: key objects flush what they earned (and the requests' metadata) to
// Postgres from an alarm, idempotently: running the alarm twice, or repeating a flush
// after a crash between the database commit and the local reset, never counts twice.
import { env } from "cloudflare:workers";
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { FLUSH_ROWS, type EarningsFlusher } from "../../objects/seller-key/earnings-flush.ts";
import type { SellerKey } from "../../objects/seller-key/seller-key.ts";
import type { Env } from "../../core/env.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { addKey, as, inspect, keyRequest, ownerDb, persisted, signIn, type TestSeller } from "./helpers.ts";

const e = env as unknown as Env;

interface Earnings {
  balance: { earnedMicros: number; withdrawnMicros: number; availableMicros: number };
  history: { keyId: string; grossMicros: number; feeMicros: number; netMicros: number; requestCount: number }[];
}
const earningsOf = async (s: TestSeller) => (await (await as(s, "/api/earnings")).json()) as Earnings;

/** Paid requests as the router hands them to the key object (price 1000, fee 10%). */
async function serve(keyId: string, n: number) {
  for (let i = 0; i < n; i++) {
    const res = await keyStub(e, keyId, "default").fetch(keyRequest({ paidMicros: 1000 }));
    expect(res.status).toBe(200);
    await res.text();
  }
}

/**
 * `rows` metadata rows already waiting in a key object (ids from the printf `idFormat`, one
 * ms apart from `fromMs`), then the object restarted: it counts its rows when it starts.
 */
async function withBufferedRows(stub: ReturnType<typeof keyStub>, rows: number, idFormat: string, fromMs: number) {
  await runInDurableObject(stub, (_i, state) => {
    state.storage.sql.exec(
      `INSERT INTO request_meta (request_id, at, method, route, status, latency_ms, amount_micros, outcome)
       SELECT printf(?, x), ? + x, 'POST', '/v1/chat/completions', 200, 1, 0, 'served'
       FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT x FROM c)`,
      idFormat, fromMs, rows,
    );
  });
  await evictDurableObject(stub);
}

/** As if this key's flushes had been failing: it is in their backoff. */
const inFlushBackoff = (stub: ReturnType<typeof keyStub>) =>
  runInDurableObject(stub, (instance) => {
    (instance as unknown as { flushRetryMs: number }).flushRetryMs = 60_000;
  });

const requestLogRows = (keyId: string) => ownerDb(async (sql) => (await sql`select count(*)::int as n from public.request_log where key_id = ${keyId}`)[0]!.n as number);

describe("earnings flush", () => {
  it("PR16: a served request schedules the flush alarm; the alarm credits the ledger and moves the metadata", async () => {
    const s = await signIn("earner");
    const { keyId } = await addKey({ seller: s, config: { priceMicros: 1000 } });
    const stub = keyStub(e, keyId, "default");
    expect(await runInDurableObject(stub, (_i, state) => state.storage.getAlarm())).toBeNull();
    await serve(keyId, 3);
    expect(await runInDurableObject(stub, (_i, state) => state.storage.getAlarm())).toBeGreaterThan(Date.now());
    expect((await inspect(keyId)).earnings).toEqual({ unflushedMicros: 2700, feeMicros: 300, servedCount: 3 });
    expect((await earningsOf(s)).balance.earnedMicros).toBe(0);
    const buffered = await stub.bufferedMeta();
    expect(buffered).toHaveLength(3);

    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const after = await earningsOf(s);
    expect(after.balance).toEqual({ earnedMicros: 2700, withdrawnMicros: 0, availableMicros: 2700 });
    expect(after.history).toMatchObject([{ keyId, grossMicros: 3000, feeMicros: 300, netMicros: 2700, requestCount: 3 }]);
    expect(await requestLogRows(keyId)).toBe(3);
    // PR12: each row arrives as it was recorded, metadata only.
    const logged = await ownerDb((sql) => sql`
      select request_id, provider, route, method, (extract(epoch from at) * 1000)::bigint::text as at_ms, latency_ms, status, amount_micros::text, outcome
      from public.request_log where key_id = ${keyId} order by at, request_id`);
    expect(logged.map((r) => ({ ...r }))).toEqual(
      [...buffered].sort((a, b) => a.at - b.at || a.requestId.localeCompare(b.requestId)).map((m) => ({
        request_id: m.requestId, provider: "openai", route: m.route, method: m.method, at_ms: String(m.at),
        latency_ms: m.latencyMs, status: m.status, amount_micros: String(m.amountMicros), outcome: m.outcome,
      })),
    );
    expect(await inspect(keyId)).toMatchObject({ earnings: { unflushedMicros: 0, feeMicros: 0, servedCount: 0 }, bufferedMetadata: 0 });

    // The alarm again, and an explicit flush: nothing left, nothing counted twice.
    expect(await runDurableObjectAlarm(stub)).toBe(false);
    expect(await stub.flushEarnings()).toMatchObject({ ok: true, value: { flushed: false } });
    expect((await earningsOf(s)).balance.earnedMicros).toBe(2700);
    expect((await earningsOf(s)).history).toHaveLength(1);
    expect(await requestLogRows(keyId)).toBe(3);
  });

  it("a flush repeated after a crash between the database commit and the local reset does not double count", async () => {
    const s = await signIn("crash");
    const { keyId } = await addKey({ seller: s, config: { priceMicros: 1000 } });
    const stub = keyStub(e, keyId, "default");
    await serve(keyId, 2);

    // Crash: the flush reaches Postgres, then the object dies before forgetting it.
    const crashed = await runInDurableObject(stub, async (instance: SellerKey) => {
      const flusher = (instance as unknown as { flusher: EarningsFlusher }).flusher;
      const complete = flusher.complete;
      flusher.complete = () => {
        throw new Error("crash after commit");
      };
      try {
        return await instance.flushEarnings();
      } finally {
        flusher.complete = complete;
      }
    });
    expect(crashed.ok).toBe(false);
    expect((await earningsOf(s)).balance.earnedMicros).toBe(1800); // committed
    const pending = await runInDurableObject(stub, (instance: SellerKey) => (instance as unknown as { flusher: EarningsFlusher }).flusher.pending());
    expect(pending).toMatchObject({ keyId, amountMicros: 2000, feeMicros: 200, requestCount: 2 });

    // Meanwhile the key earns more; then the alarm runs: the pending flush is sent again
    // (a no-op in Postgres), completed, and the new earnings follow in the next flush.
    await serve(keyId, 1);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const afterRetry = await earningsOf(s);
    expect(afterRetry.balance.earnedMicros).toBe(1800);
    expect(afterRetry.history).toHaveLength(1);
    const rest = await stub.flushEarnings();
    expect(rest).toMatchObject({ ok: true, value: { flushed: true, recordedNow: true, amountMicros: 1000 } });
    const final = await earningsOf(s);
    expect(final.balance.earnedMicros).toBe(2700);
    expect(final.history.map((h) => h.netMicros).sort()).toEqual([1800, 900]);
    expect(await requestLogRows(keyId)).toBe(3);
    const ledger = await ownerDb((sql) => sql`select flush_id from public.earnings_ledger where key_id = ${keyId} order by id`);
    expect(ledger.map((r) => r.flush_id)).toEqual([pending!.flushId, expect.stringMatching(new RegExp(`^${keyId}\\.[0-9a-f]{10}\\.2$`))]);
  });

  it("a database that cannot be reached keeps the earnings for a later flush", async () => {
    const s = await signIn("offline");
    const { keyId } = await addKey({ seller: s, config: { priceMicros: 1000 } });
    const stub = keyStub(e, keyId, "default");
    await serve(keyId, 1);
    const failed = await runInDurableObject(stub, async (instance: SellerKey) => {
      const self = instance as unknown as { env: Env };
      const real = self.env;
      self.env = { ...real, HYPERDRIVE: { connectionString: "postgres://postgres:postgres@127.0.0.1:1/postgres" } as Hyperdrive };
      try {
        return await instance.flushEarnings();
      } finally {
        self.env = real;
      }
    });
    expect(failed).toMatchObject({ ok: false, code: "db_unavailable" });
    expect((await earningsOf(s)).balance.earnedMicros).toBe(0);
    expect(await stub.flushEarnings()).toMatchObject({ ok: true, value: { flushed: true } });
    expect((await earningsOf(s)).balance.earnedMicros).toBe(900);
  });

  it("removing a key flushes it first: nothing earned is lost", async () => {
    const s = await signIn("remover");
    const { keyId } = await addKey({ seller: s, config: { priceMicros: 1000 } });
    await serve(keyId, 2);
    expect((await as(s, `/api/keys/${keyId}`, { method: "DELETE" })).status).toBe(200);
    expect((await earningsOf(s)).balance.earnedMicros).toBe(1800);
  });

  it("a busy key's flush is brought forward: a flush's worth of rows waiting schedules it within a second, not after EARNINGS_FLUSH_MS", async () => {
    const keyWith = async (rows: number) => {
      const { keyId } = await addKey();
      const stub = keyStub(e, keyId, "default");
      await withBufferedRows(stub, rows, "req_busy%012d", Date.now() - 60_000);
      return { keyId, stub };
    };
    const serveOne = async (stub: ReturnType<typeof keyStub>) => {
      const res = await stub.fetch(keyRequest({}));
      expect(res.status).toBe(200);
      await res.text();
    };
    const alarmAt = (stub: ReturnType<typeof keyStub>) => runInDurableObject(stub, (_i, state) => state.storage.getAlarm());
    const alarmIn = async (stub: ReturnType<typeof keyStub>) => {
      const at = await alarmAt(stub);
      expect(at).not.toBeNull();
      return at! - Date.now();
    };
    const flushMs = Number(e.EARNINGS_FLUSH_MS);
    expect(flushMs).toBeGreaterThan(60_000); // the tests' setting: far from "at once"

    // One row short of a flush's worth: the usual schedule.
    const quiet = await keyWith(FLUSH_ROWS - 2);
    await serveOne(quiet.stub);
    expect(await alarmIn(quiet.stub)).toBeGreaterThan(flushMs - 60_000);

    // A flush's worth: the alarm is due within a second (workerd may already be running
    // it), and it moves those rows to Postgres.
    const busy = await keyWith(FLUSH_ROWS - 1);
    await serveOne(busy.stub);
    const due = await alarmAt(busy.stub);
    if (due !== null) {
      expect(due).toBeLessThanOrEqual(Date.now() + 1_000);
      await runDurableObjectAlarm(busy.stub);
    }
    let flushed = 0;
    for (let tries = 0; tries < 100 && flushed < FLUSH_ROWS; tries++) {
      flushed = await requestLogRows(busy.keyId);
      if (flushed < FLUSH_ROWS) await new Promise((r) => setTimeout(r, 50));
    }
    expect(flushed).toBe(FLUSH_ROWS);

    // While flushes fail, their backoff stands: rows piling up do not bring the next one forward.
    const failing = await keyWith(FLUSH_ROWS - 1);
    await inFlushBackoff(failing.stub);
    await serveOne(failing.stub);
    expect(await alarmIn(failing.stub)).toBeGreaterThan(flushMs - 60_000);
  });

  it("metadata waiting for Postgres is capped: past 10,500 rows the oldest go, down to 10,000, and the newest stay", async () => {
    const { keyId } = await addKey();
    const stub = keyStub(e, keyId, "default");
    // A key whose flushes have failed for a while (so its flush is not brought forward
    // either): 10,500 rows already buffered.
    await withBufferedRows(stub, 10_500, "req_old%09d", Date.now() - 3_600_000);
    await inFlushBackoff(stub);
    const res = await stub.fetch(keyRequest({ requestId: "req_newest000000000001" }));
    expect(res.status).toBe(200);
    await res.text();
    await persisted(stub);
    const rows = await runInDurableObject(stub, (_i, state) => ({
      count: state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM request_meta").one().n,
      oldest: state.storage.sql.exec<{ id: string }>("SELECT request_id AS id FROM request_meta ORDER BY at LIMIT 1").one().id,
      newest: state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM request_meta WHERE request_id = 'req_newest000000000001'").one().n,
    }));
    expect(rows).toEqual({ count: 10_000, oldest: "req_old000000502", newest: 1 });
  });
});
