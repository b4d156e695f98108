-- 0012 Scheduled jobs (M1): one row per job (retention, the hourly rollup, the safety-net
-- earnings flush, payouts), written by the Worker's scheduled handler (worker/jobs/) as
-- service_role and read by operators through GET /ops/jobs (`npm run inspect -- jobs`).
-- The last run only, with its counts, plus running totals: enough to see that each job
-- runs, when it last succeeded, what it did and why it last failed. No seller data.

create table public.scheduled_jobs (
  job text primary key constraint scheduled_jobs_job_format check (job ~ '^[a-z][a-z0-9_]{1,39}$'),
  -- The last run: 'running' until it ends (a run that never ends stays 'running': ops see it).
  status text not null constraint scheduled_jobs_status_known check (status in ('running', 'ok', 'failed')),
  started_at timestamptz not null,
  finished_at timestamptz,
  -- What the last run did, e.g. {"request_log": 12, "request_log_hourly": 0, ...}.
  counts jsonb not null default '{}'::jsonb constraint scheduled_jobs_counts_object check (jsonb_typeof(counts) = 'object'),
  -- Why the last run failed: an error code or name, never a driver message (it can quote rows).
  error text constraint scheduled_jobs_error_length check (error is null or char_length(error) <= 300),
  last_ok_at timestamptz,
  -- Where the job has got to, for jobs that resume (the rollup: the end of the last whole hour rolled up).
  watermark timestamptz,
  runs bigint not null default 0 constraint scheduled_jobs_runs_nonnegative check (runs >= 0),
  failures bigint not null default 0 constraint scheduled_jobs_failures_nonnegative check (failures >= 0)
);

alter table public.scheduled_jobs enable row level security;
revoke all on table public.scheduled_jobs from public, anon, authenticated, service_role;
grant select, insert, update on table public.scheduled_jobs to service_role;
-- No policy: service_role bypasses row-level security; no other role may read or write.
