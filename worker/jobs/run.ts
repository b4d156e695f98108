// The scheduled handler's body (worker/index.ts `scheduled`, wrangler.toml [triggers]):
// the jobs of the cron that fired (schedule.ts), one after another, each on its own: a job
// that fails (or whose record cannot be written) is logged and recorded, and the next job
// runs all the same. A misconfigured production runs none (worker/index.ts refuses first).
import { ApiError } from "../../core/http.ts";
import { dbErrorName } from "../../schema/tables.ts";
import type { Env } from "../../core/env.ts";
import { JOB_RUNS } from "./jobs.ts";
import { finishRun, startRun, type Counts } from "./record.ts";
import { SCHEDULE, type JobName } from "./schedule.ts";

export interface JobOutcome {
  job: JobName;
  ok: boolean;
  counts: Counts;
  error: string | null;
}

/** A stable, secret-free name for an error: our code, the database's, or the error's name. */
function errorCode(error: unknown): string {
  if (error instanceof ApiError) return error.code;
  const db = dbErrorName(error);
  if (db) return db;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && /^[A-Z0-9_]{2,40}$/.test(code)) return code;
  return error instanceof Error ? error.name : "unknown";
}

const log = (evt: string, fields: Record<string, unknown>) => console.log(JSON.stringify({ evt, ...fields }));

/** Run every job `cron` schedules, in order; never throws. */
export async function runScheduled(cron: string, env: Env, scheduledTime: number): Promise<JobOutcome[]> {
  const jobs = SCHEDULE[cron];
  if (!jobs) {
    console.error(JSON.stringify({ evt: "cron_unknown", cron }));
    return [];
  }
  const outcomes: JobOutcome[] = [];
  for (const job of jobs) outcomes.push(await runJob(job, env, new Date(scheduledTime)));
  return outcomes;
}

/** One job, recorded: running, then ok or failed with its counts. Never throws. */
export async function runJob(job: JobName, env: Env, now = new Date()): Promise<JobOutcome> {
  let watermark: Date | null = null;
  let recorded = true;
  try {
    watermark = await startRun(env, job, now);
  } catch (error) {
    // The job may still work (the payouts' Stripe half, the key objects): run it anyway.
    recorded = false;
    console.error(JSON.stringify({ evt: "job_record_failed", job, error: errorCode(error) }));
  }
  let outcome: JobOutcome;
  let newWatermark: Date | null = null;
  try {
    const result = await JOB_RUNS[job]({ env, now, watermark });
    newWatermark = result.watermark ?? null;
    outcome = { job, ok: result.error === undefined, counts: result.counts, error: result.error ?? null };
  } catch (error) {
    outcome = { job, ok: false, counts: {}, error: errorCode(error) };
  }
  if (recorded) {
    await finishRun(env, job, { ok: outcome.ok, counts: outcome.counts, error: outcome.error, watermark: newWatermark }).catch((error: unknown) =>
      console.error(JSON.stringify({ evt: "job_record_failed", job, error: errorCode(error) })));
  }
  if (outcome.ok) log("job_finished", { job, counts: outcome.counts });
  else console.error(JSON.stringify({ evt: "job_failed", job, error: outcome.error, counts: outcome.counts }));
  return outcome;
}
