-- 0008 Request metadata (P5, PR12, PR14): provider, route, method, time, latency, status,
-- amount, plus the request and key ids needed for disputes. No bodies, no headers, no IP
-- address, no buyer identity. Raw rows are kept 30 days, hourly aggregates 1 year
-- (public.run_retention). Key objects flush their buffers here idempotently:
-- `on conflict (request_id, key_id) do nothing`.

create table public.request_log (
  request_id text not null constraint request_log_request_id_format check (request_id ~ '^req_[A-Za-z0-9]{16,64}$'),
  key_id text not null constraint request_log_key_id_format check (key_id ~ '^k_[a-z0-9]{12,32}$'),
  provider text not null constraint request_log_provider_format check (provider ~ '^[a-z][a-z0-9-]{1,31}$'),
  -- The path only: a query string could carry data, so it is refused here.
  route text not null
    constraint request_log_route_format check (
      char_length(route) between 1 and 512 and route ~ '^/[^?#[:space:]]*$'),
  method text not null
    constraint request_log_method_known check (method in ('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS')),
  at timestamptz not null,
  latency_ms integer not null constraint request_log_latency_nonnegative check (latency_ms >= 0),
  -- 0 when no HTTP status was produced (client abort before the upstream answered).
  status smallint not null constraint request_log_status_range check (status between 0 and 599),
  amount_micros bigint not null default 0 constraint request_log_amount_nonnegative check (amount_micros >= 0),
  outcome text not null default 'served'
    constraint request_log_outcome_known check (
      outcome in ('served', 'refused', 'upstream_error', 'stream_cut', 'client_abort')),
  -- One row per key tried: a request that failed over has a row for each attempt.
  constraint request_log_pkey primary key (request_id, key_id)
);
create index request_log_at_idx on public.request_log (at);
create index request_log_key_at_idx on public.request_log (key_id, at desc);

alter table public.request_log enable row level security;
revoke all on table public.request_log from public, anon, authenticated, service_role;
grant select on table public.request_log to authenticated;
grant select, insert, delete on table public.request_log to service_role;

-- A seller sees the metadata of requests its own keys served.
create policy request_log_select_own on public.request_log
  for select to authenticated
  using (exists (select 1 from public.keys k where k.key_id = request_log.key_id and k.seller_id = (select auth.uid())));

create table public.request_log_hourly (
  hour timestamptz not null
    constraint request_log_hourly_whole_hour check (extract(epoch from hour) :: bigint % 3600 = 0),
  key_id text not null constraint request_log_hourly_key_id_format check (key_id ~ '^k_[a-z0-9]{12,32}$'),
  provider text not null,
  route text not null,
  method text not null,
  status smallint not null,
  request_count bigint not null constraint request_log_hourly_count_nonnegative check (request_count >= 0),
  amount_micros bigint not null constraint request_log_hourly_amount_nonnegative check (amount_micros >= 0),
  latency_ms_sum bigint not null constraint request_log_hourly_latency_nonnegative check (latency_ms_sum >= 0),
  latency_ms_max integer not null,
  constraint request_log_hourly_pkey primary key (hour, key_id, provider, route, method, status)
);
create index request_log_hourly_key_idx on public.request_log_hourly (key_id, hour desc);

alter table public.request_log_hourly enable row level security;
revoke all on table public.request_log_hourly from public, anon, authenticated, service_role;
grant select on table public.request_log_hourly to authenticated;
grant select, insert, update, delete on table public.request_log_hourly to service_role;

create policy request_log_hourly_select_own on public.request_log_hourly
  for select to authenticated
  using (exists (select 1 from public.keys k where k.key_id = request_log_hourly.key_id and k.seller_id = (select auth.uid())));

-- Recompute the hourly aggregates of every whole hour that has raw rows in [p_from, p_to):
-- the result replaces what was there, so running it twice changes nothing.
create or replace function public.rollup_request_log(p_from timestamptz, p_to timestamptz) returns integer
  language plpgsql security invoker set search_path to ''
as $fn$
declare
  n integer;
begin
  insert into public.request_log_hourly
    (hour, key_id, provider, route, method, status, request_count, amount_micros, latency_ms_sum, latency_ms_max)
  select to_timestamp(floor(extract(epoch from r.at) / 3600) * 3600) as hour,
         r.key_id, r.provider, r.route, r.method, r.status,
         count(*), coalesce(sum(r.amount_micros), 0), coalesce(sum(r.latency_ms), 0), coalesce(max(r.latency_ms), 0)
    from public.request_log r
   where r.at >= to_timestamp(floor(extract(epoch from p_from) / 3600) * 3600)
     and r.at < p_to
   group by 1, 2, 3, 4, 5, 6
  on conflict (hour, key_id, provider, route, method, status) do update
    set request_count = excluded.request_count,
        amount_micros = excluded.amount_micros,
        latency_ms_sum = excluded.latency_ms_sum,
        latency_ms_max = excluded.latency_ms_max;
  get diagnostics n = row_count;
  return n;
end
$fn$;

revoke all on function public.rollup_request_log(timestamptz, timestamptz) from public, anon, authenticated;
grant execute on function public.rollup_request_log(timestamptz, timestamptz) to service_role;
