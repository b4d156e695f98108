// Which job each Cron Trigger runs (wrangler.toml [triggers] lists the same crons:
// test/node/jobs-schedule.test.ts keeps the two in step). Plain data, no runtime imports.
//
// Every job is idempotent (running it twice, or two runs at once, changes nothing the
// first did not) and records its last run and counts in public.scheduled_jobs.
export const JOBS = ["payouts", "earnings_flush", "rollup", "retention"] as const;
export type JobName = (typeof JOBS)[number];

/** What each job does, for `npm run inspect -- jobs` and docs/operations.md. */
export const JOB_PURPOSE: Record<JobName, string> = {
  payouts: "scheduled seller payouts: request what is due, execute requested ones, reconcile sent ones",
  earnings_flush: "safety net: every key object flushes unflushed earnings and metadata to Postgres",
  rollup: "hourly aggregation of request metadata into request_log_hourly (whole hours, recomputed)",
  retention: "raw metadata 30 days, aggregates 1 year, ledger and payouts 7 years, webhook log 30 days",
};

/** Cron expression -> the jobs it runs, in order (the flush before the rollup it feeds). */
export const SCHEDULE: Record<string, readonly JobName[]> = {
  "0 * * * *": ["payouts"],
  "5 * * * *": ["earnings_flush", "rollup"],
  "30 3 * * *": ["retention"],
};

/** The crons that run `job`. */
export const cronsOf = (job: JobName) => Object.entries(SCHEDULE).filter(([, jobs]) => jobs.includes(job)).map(([cron]) => cron);

export const isJobName = (name: string): name is JobName => (JOBS as readonly string[]).includes(name);
