// The record of each scheduled job's last run (public.scheduled_jobs, migration 0012):
// marked running when it starts, ok or failed with its counts when it ends. Written as
// service_role; read by operators through GET /ops/jobs.
import { asService } from "../../schema/tables.ts";
import { withDb, type DbEnv } from "../../core/postgres.ts";
import type { JobName } from "./schedule.ts";

export type Counts = Record<string, number | string>;

export interface JobRecord {
  job: JobName;
  status: "running" | "ok" | "failed";
  startedAt: string;
  finishedAt: string | null;
  counts: Counts;
  error: string | null;
  lastOkAt: string | null;
  watermark: string | null;
  runs: number;
  failures: number;
}

interface Row {
  job: JobName;
  status: JobRecord["status"];
  started_at: Date;
  finished_at: Date | null;
  counts: Counts;
  error: string | null;
  last_ok_at: Date | null;
  watermark: Date | null;
  runs: string;
  failures: string;
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** A run starts: the row says running; resolves to the job's watermark (where it had got to). */
export async function startRun(env: DbEnv, job: JobName, startedAt: Date): Promise<Date | null> {
  const [row] = await withDb(env, null, (sql) => asService(sql, (tx) => tx<{ watermark: Date | null }[]>`
    insert into public.scheduled_jobs (job, status, started_at, runs) values (${job}, 'running', ${startedAt}, 1)
    on conflict (job) do update set status = 'running', started_at = excluded.started_at, finished_at = null,
      runs = public.scheduled_jobs.runs + 1
    returning watermark`));
  return row?.watermark ?? null;
}

/** A run ends: ok or failed, its counts, why it failed, and the new watermark if it moved. */
export async function finishRun(env: DbEnv, job: JobName, result: { ok: boolean; counts: Counts; error: string | null; watermark: Date | null }): Promise<void> {
  await withDb(env, null, (sql) => asService(sql, (tx) => tx`
    update public.scheduled_jobs set
      status = ${result.ok ? "ok" : "failed"}, finished_at = now(), counts = ${tx.json(result.counts)},
      error = ${result.error === null ? null : result.error.slice(0, 300)},
      last_ok_at = case when ${result.ok} then now() else last_ok_at end,
      failures = failures + case when ${result.ok} then 0 else 1 end,
      watermark = coalesce(${result.watermark}, watermark)
    where job = ${job}`));
}

/** Every job's record (jobs that never ran have none). */
export async function jobRecords(env: DbEnv): Promise<JobRecord[]> {
  const rows = await withDb(env, null, (sql) => asService(sql, (tx) => tx<Row[]>`select * from public.scheduled_jobs order by job`));
  return rows.map((r) => ({
    job: r.job, status: r.status, startedAt: iso(r.started_at)!, finishedAt: iso(r.finished_at), counts: r.counts,
    error: r.error, lastOkAt: iso(r.last_ok_at), watermark: iso(r.watermark), runs: Number(r.runs), failures: Number(r.failures),
  }));
}
