// Operators and the scheduled jobs (M1, M3): GET /ops/jobs lists every job with its crons,
// purpose and last run (`npm run inspect -- jobs`); POST /ops/jobs/:job/run runs one now,
// recorded like a scheduled run (`npm run inspect -- jobs run <job>`).
import type { Env } from "../../core/env.ts";
import { ApiError, json } from "../../core/http.ts";
import { jobRecords } from "./record.ts";
import { runJob } from "./run.ts";
import { JOB_PURPOSE, JOBS, cronsOf, isJobName } from "./schedule.ts";

export async function listJobsHandler(env: Env): Promise<Response> {
  const records = new Map((await jobRecords(env)).map((r) => [r.job, r]));
  return json({
    jobs: JOBS.map((job) => ({ job, crons: cronsOf(job), purpose: JOB_PURPOSE[job], last: records.get(job) ?? null })),
  });
}

export async function runJobHandler(env: Env, name: string | undefined): Promise<Response> {
  if (!name || !isJobName(name)) throw new ApiError("not_found", `no job "${name ?? ""}" (one of ${JOBS.join(", ")})`);
  // The run happened either way: its outcome says whether the job succeeded (and is recorded).
  return json({ outcome: await runJob(name, env) });
}
