// M1, PR14, PR24: the scheduled jobs, run by the Worker's real scheduled handler as the
// Cron Triggers call it (wrangler.toml [triggers], worker/jobs/schedule.ts): retention,
// the hourly rollup and the safety-net earnings flush, each idempotent, each recording its
// last run and counts where operators read them (GET /ops/jobs). Postgres is the run's
// shared PGlite behind Hyperdrive: each test works on rows of its own fresh keys.
import { env, exports } from "cloudflare:workers";
import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../worker/index.ts";
import type { Env } from "../../core/env.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { DEV_SETTINGS, type DevSetting } from "../../core/environment.ts";
import { SCHEDULE } from "../../worker/jobs/schedule.ts";
import { addKey, api, call, inspect, keyRequest, randomKeyId, ownerDb, signIn } from "./helpers.ts";

const e = env as unknown as Env;
const RETENTION = "30 3 * * *";
const HOURLY = "5 * * * *";

/** The Cron Trigger, through the Worker's own entry (as the runtime fires it). */
async function cron(expr: string) {
  const self = (exports as unknown as { default: { scheduled(options: { cron: string; scheduledTime: Date }): Promise<unknown> } }).default;
  await self.scheduled({ cron: expr, scheduledTime: new Date() });
}

/** The scheduled handler with another configuration (the entry module, as the runtime calls it). */
async function cronWith(expr: string, config: Env) {
  const ctx = createExecutionContext();
  await worker.scheduled!(createScheduledController({ scheduledTime: Date.now(), cron: expr }), config, ctx);
  await waitOnExecutionContext(ctx);
}

interface JobView {
  job: string;
  crons: string[];
  purpose: string;
  last: { status: string; startedAt: string; finishedAt: string | null; counts: Record<string, number | string>; error: string | null; lastOkAt: string | null; runs: number; failures: number } | null;
}
async function jobs(): Promise<Record<string, JobView>> {
  const res = await api("/ops/jobs");
  expect(res.status).toBe(200);
  const { jobs } = (await res.json()) as { jobs: JobView[] };
  return Object.fromEntries(jobs.map((j) => [j.job, j]));
}

const rawOf = (keyId: string) => ownerDb(async (sql) => (await sql`select request_id from public.request_log where key_id = ${keyId} order by at`).map((r) => r.request_id as string));
const hourlyOf = (keyId: string) => ownerDb(async (sql) => (await sql`
  select hour, request_count::int as n, amount_micros::int as amount, latency_ms_sum::int as latency, latency_ms_max as max
    from public.request_log_hourly where key_id = ${keyId} order by hour`).map((r) => ({ ...r })));
let seq = 0;
const requestId = () => `req_jobs${Date.now().toString(36)}${(seq++).toString(36).padStart(4, "0")}${crypto.randomUUID().slice(0, 8).replace("-", "")}`;

/** A raw metadata row for `keyId`, at `at` (SQL interval expression relative to now()). */
async function raw(keyId: string, at: string, fields: { latency?: number; amount?: number } = {}) {
  const id = requestId();
  await ownerDb((sql) => sql`insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, status, amount_micros)
    values (${id}, ${keyId}, 'openai', '/v1/chat/completions', 'POST', ${sql.unsafe(at)}, ${fields.latency ?? 100}, 200, ${fields.amount ?? 1000})`);
  return id;
}

describe("retention (M1)", () => {
  it("PR14: the daily cron removes raw metadata after 30 days and aggregates after 1 year, keeps younger rows, and a second run changes nothing", async () => {
    const keyId = randomKeyId();
    const old = await raw(keyId, "date_trunc('hour', now() - interval '40 days') + interval '10 minutes'", { latency: 80, amount: 300 });
    const young = await raw(keyId, "now() - interval '29 days'");
    await ownerDb((sql) => sql`insert into public.request_log_hourly (hour, key_id, provider, route, method, status, request_count, amount_micros, latency_ms_sum, latency_ms_max) values
      (date_trunc('hour', now() - interval '400 days'), ${keyId}, 'openai', '/v1/chat/completions', 'POST', 200, 9, 2700, 900, 100),
      (date_trunc('hour', now() - interval '300 days'), ${keyId}, 'openai', '/v1/chat/completions', 'POST', 200, 4, 1200, 400, 100)`);

    await cron(RETENTION);
    // Raw: the 40-day row is gone (rolled up first), the 29-day row stays.
    expect(await rawOf(keyId)).toEqual([young]);
    expect(old).not.toBe(young);
    // Aggregates: the 400-day hour is gone; the 300-day hour stays; the 40-day hour was rolled up before its raw row went.
    const hourly = await hourlyOf(keyId);
    expect(hourly.map(({ n, amount, latency }) => ({ n, amount, latency }))).toEqual([
      { n: 4, amount: 1200, latency: 400 },
      { n: 1, amount: 300, latency: 80 },
    ]);
    const first = (await jobs()).retention!.last!;
    expect(first.status).toBe("ok");
    expect(first.counts.request_log).toBeGreaterThanOrEqual(1);
    expect(first.counts.request_log_hourly).toBeGreaterThanOrEqual(1);

    // A second run: nothing left to delete, nothing of this key changes.
    await cron(RETENTION);
    expect(await rawOf(keyId)).toEqual([young]);
    expect(await hourlyOf(keyId)).toEqual(hourly);
    const second = (await jobs()).retention!.last!;
    expect(second.status).toBe("ok");
    expect(second.runs).toBe(first.runs + 1);
    expect(Date.parse(second.startedAt)).toBeGreaterThanOrEqual(Date.parse(first.startedAt));
    expect(second.counts).toMatchObject({ request_log: 0, request_log_hourly: 0, earnings_ledger: 0 });
  });

  it("PR24: the daily cron keeps earnings 7 years: an older ledger row goes, a younger one stays, a second run changes nothing", async () => {
    const seller = await signIn("veteran");
    const keyId = randomKeyId();
    const old = `${keyId}.old`;
    const recent = `${keyId}.recent`;
    // Backdating needs the owner: service_role cannot set created_at.
    await ownerDb((sql) => sql`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, request_count, created_at) values
      (${old}, ${keyId}, ${seller.id}, now() - interval '7 years 3 days', now() - interval '7 years 2 days', 5, 1, now() - interval '7 years 1 day'),
      (${recent}, ${keyId}, ${seller.id}, now() - interval '6 years 1 day', now() - interval '6 years', 7, 1, now() - interval '6 years')`);
    const ledger = () => ownerDb(async (sql) => (await sql`select flush_id from public.earnings_ledger where key_id = ${keyId} order by flush_id`).map((r) => r.flush_id as string));

    await cron(RETENTION);
    expect(await ledger()).toEqual([recent]);
    expect((await jobs()).retention!.last!.counts.earnings_ledger).toBeGreaterThanOrEqual(1);
    await cron(RETENTION);
    expect(await ledger()).toEqual([recent]);
    expect((await jobs()).retention!.last!.counts.earnings_ledger).toBe(0);
  });
});

describe("the hourly cron", () => {
  it("rolls up whole hours idempotently: a second run changes nothing, a late row is counted on the next run", async () => {
    const keyId = randomKeyId();
    const hour = "date_trunc('hour', now() - interval '2 hours')";
    await raw(keyId, `${hour} + interval '1 minute'`, { latency: 100, amount: 10 });
    await raw(keyId, `${hour} + interval '2 minutes'`, { latency: 300, amount: 10 });
    // This hour is not whole yet: it waits for the next run.
    await raw(keyId, "now()", { latency: 50, amount: 10 });

    await cron(HOURLY);
    const once = await hourlyOf(keyId);
    expect(once.map(({ n, amount, latency, max }) => ({ n, amount, latency, max }))).toEqual([{ n: 2, amount: 20, latency: 400, max: 300 }]);
    await cron(HOURLY);
    expect(await hourlyOf(keyId)).toEqual(once);
    const rollup = (await jobs()).rollup!.last!;
    expect(rollup.status).toBe("ok");
    expect(rollup.counts.groups).toBeGreaterThanOrEqual(1);

    // A row that reached Postgres late (a flush retried after an outage) for an hour already rolled up.
    await raw(keyId, `${hour} + interval '30 minutes'`, { latency: 500, amount: 10 });
    await cron(HOURLY);
    expect((await hourlyOf(keyId)).map(({ n, amount, latency, max }) => ({ n, amount, latency, max }))).toEqual([{ n: 3, amount: 30, latency: 900, max: 500 }]);
  });

  it("the safety-net flush moves a key's unflushed earnings and metadata to Postgres; a second run moves nothing more", async () => {
    const seller = await signIn("netted");
    const { keyId } = await addKey({ seller, config: { priceMicros: 1000 } });
    for (let i = 0; i < 3; i++) {
      const res = await keyStub(e, keyId, "default").fetch(keyRequest({ paidMicros: 1000 }));
      expect(res.status).toBe(200);
      await res.text();
    }
    expect((await inspect(keyId)).earnings).toEqual({ unflushedMicros: 2700, feeMicros: 300, servedCount: 3 });
    const ledger = () => ownerDb(async (sql) => (await sql`select coalesce(sum(amount_micros), 0)::int as gross, count(*)::int as n from public.earnings_ledger where key_id = ${keyId}`)[0]);
    expect(await ledger()).toEqual({ gross: 0, n: 0 });

    // No alarm runs here (EARNINGS_FLUSH_MS is 10 minutes in the tests): only the cron moves it.
    await cron(HOURLY);
    expect((await inspect(keyId)).earnings).toEqual({ unflushedMicros: 0, feeMicros: 0, servedCount: 0 });
    expect(await ledger()).toEqual({ gross: 3000, n: 1 });
    expect(await rawOf(keyId)).toHaveLength(3);
    const first = (await jobs()).earnings_flush!.last!;
    expect(first.status).toBe("ok");
    expect(first.counts.flushed).toBeGreaterThanOrEqual(1);
    expect(first.counts.micros).toBeGreaterThanOrEqual(3000);
    expect(first.counts.rows).toBeGreaterThanOrEqual(3);

    await cron(HOURLY);
    expect(await ledger()).toEqual({ gross: 3000, n: 1 });
    expect(await rawOf(keyId)).toHaveLength(3);
  });
});

describe("running the jobs", () => {
  it("M1: every cron in wrangler.toml has jobs, and each job's last run and counts are visible through the ops route only", async () => {
    await cron(RETENTION);
    const view = await jobs();
    expect(Object.keys(view).sort()).toEqual(["earnings_flush", "payouts", "retention", "rollup"]);
    for (const [expr, names] of Object.entries(SCHEDULE)) for (const name of names) expect(view[name]!.crons).toContain(expr);
    const retention = view.retention!.last!;
    expect(retention).toMatchObject({ status: "ok", error: null });
    expect(Object.keys(retention.counts).sort()).toEqual(
      ["clawbacks", "earnings_ledger", "payout_events", "payouts", "request_log", "request_log_hourly", "webhook_deliveries"]);
    expect(retention.lastOkAt).not.toBeNull();
    expect(Date.parse(retention.finishedAt!)).toBeGreaterThanOrEqual(Date.parse(retention.startedAt));
    // The record is the database's: the ops route reads exactly it.
    const [row] = await ownerDb((sql) => sql`select status, counts, runs::int as runs from public.scheduled_jobs where job = 'retention'`);
    expect({ status: row!.status, counts: row!.counts, runs: row!.runs }).toEqual({ status: retention.status, counts: retention.counts, runs: retention.runs });
    // Operators only.
    expect((await call("/ops/jobs")).status).toBe(401);
    expect((await call("/ops/jobs", { headers: { authorization: "Bearer not-the-token" } })).status).toBe(401);
    // An operator may run a job now; it is recorded like a scheduled run.
    const ran = await api("/ops/jobs/rollup/run", { method: "POST" });
    expect(ran.status).toBe(200);
    expect(((await ran.json()) as { outcome: { job: string; ok: boolean } }).outcome).toMatchObject({ job: "rollup", ok: true });
    expect((await jobs()).rollup!.last!.runs).toBeGreaterThan(view.rollup!.last?.runs ?? 0);
    const unknown = await api("/ops/jobs/vacuum/run", { method: "POST" });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe("not_found");
  });

  it("one failing job does not stop the others: the flush fails (key objects unreachable), the rollup after it still runs, both recorded", async () => {
    const keyId = randomKeyId();
    await raw(keyId, "date_trunc('hour', now() - interval '3 hours') + interval '5 minutes'");
    // Every key object unreachable: each flush the safety net asks for fails.
    const broken = { ...e, SELLER_KEY: { ...e.SELLER_KEY, idFromName: () => { throw new Error("unreachable"); }, get: () => { throw new Error("unreachable"); } } } as unknown as Env;
    const before = await jobs();
    await cronWith(HOURLY, broken);
    const after = await jobs();
    const flush = after.earnings_flush!.last!;
    expect(flush.status).toBe("failed");
    expect(flush.error).toMatch(/key\(s\) did not flush/);
    expect(flush.failures).toBe((before.earnings_flush!.last?.failures ?? 0) + 1);
    expect(Number(flush.counts.failed)).toBeGreaterThanOrEqual(1);
    const rollup = after.rollup!.last!;
    expect(rollup.status).toBe("ok");
    expect(rollup.runs).toBe((before.rollup!.last?.runs ?? 0) + 1);
    expect((await hourlyOf(keyId)).map(({ n }) => n)).toEqual([1]);
  });

  it("a misconfigured production runs no job: nothing is deleted, nothing recorded", async () => {
    const keyId = randomKeyId();
    const old = await raw(keyId, "now() - interval '45 days'");
    // The production configuration (no CN2_DEV) with one development setting left in it.
    const prod: Record<string, unknown> = { ...e };
    delete prod.CN2_DEV;
    for (const name of Object.keys(DEV_SETTINGS) as DevSetting[]) delete prod[name];
    const misconfigured = { ...prod, DEV_FAUCET: "1" } as Env;
    // (Payouts are left out of the comparison: other files fire the payout cron meanwhile.)
    const records = () => ownerDb((sql) => sql`select job, runs::int as runs, started_at from public.scheduled_jobs where job <> 'payouts' order by job`);
    const before = await records();
    for (const expr of Object.keys(SCHEDULE)) await cronWith(expr, misconfigured);
    expect(await rawOf(keyId)).toEqual([old]);
    const after = await records();
    expect(after.map((r) => ({ ...r }))).toEqual(before.map((r) => ({ ...r })));
    // The same configuration without the stray setting runs them.
    await cronWith(RETENTION, prod as unknown as Env);
    expect(await rawOf(keyId)).toEqual([]);
  });
});
