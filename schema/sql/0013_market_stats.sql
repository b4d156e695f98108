-- 0013 Public marketplace statistics (M2, PR20).
--
-- 1. request_log.duration_ms. latency_ms has always been the time to the upstream's first
--    byte (the key object measures from its upstream call to the response headers; the
--    health EWMA uses the same figure). The time to the answer's last byte was not
--    recorded anywhere: the key object now records it in the same metadata row (set when
--    a small answer has been read whole, or when a piped stream ends cleanly) and flushes
--    it with the row. Null when there is none: the request failed, or its stream never
--    ended cleanly. A stream's row is recorded when the answer starts and recorded again
--    when it ends; if the first copy was already flushed, the second fills the time in.
--
-- 2. public.market_stats(): the figures behind GET /api/stats, per provider, region and
--    tier, computed here so that nothing but aggregates ever leaves the database for the
--    public route. It runs as its owner (security definer) and anon may execute it, while
--    anon still reads no table at all: the Worker calls it as anon. Its rules (PR20):
--      * only keys of open accounts that did not object to statistics (sellers.stats_opt_out,
--        POST /api/stats-opt-out) count, in every figure;
--      * a cell is suppressed when fewer than 3 distinct sellers have an active key in it:
--        its row is returned with suppressed = true and every figure null;
--      * each time window of a cell is suppressed the same way when fewer than 3 distinct
--        sellers served requests in it (a window with one seller's traffic would describe
--        that seller);
--      * no seller id, key id, request id or route is returned. The threshold is not a
--        parameter: a caller cannot lower it.

alter table public.request_log
  add column duration_ms integer
    constraint request_log_duration_nonnegative check (duration_ms is null or duration_ms >= 0);

-- The one change a flush may make to a row already there: fill in a missing duration_ms
-- (a stream's row sent before it ended, then again with the time).
grant update (duration_ms) on table public.request_log to service_role;

comment on column public.request_log.latency_ms is
  'Time to first byte, ms: from the key object''s upstream call to the upstream''s response headers.';
comment on column public.request_log.duration_ms is
  'Time to the answer''s last byte, ms, from the same start as latency_ms; null when unknown (failed, or still streaming when flushed).';

-- Windows: 5 minutes, 30 minutes, a day and a week, ending now. Per window:
--   requests      attempts that reached the upstream (one per key tried), without the ones
--                 whose buyer went away (client_abort: not the key's doing)
--   success_rate  the share of those answered with a status below 400 and not cut
--   uptime        as OpenRouter counts it: successful / (successful + errors), where errors
--                 are failures of the key or its provider (5xx, timeouts, unreachable, cut
--                 streams, a refused credential) and rate-limited answers (429) count on
--                 neither side; a buyer's own 4xx is an answer, so it counts as up
--   latency_*     p50/p90/p99 of duration_ms over the successful attempts that have one
--   ttfb_*        p50/p90/p99 of latency_ms (time to first byte) over the successful attempts
-- Percentiles are percentile_cont (linear interpolation), rounded to whole milliseconds;
-- rates are rounded to 4 decimals; the median price is rounded to a whole micro-dollar.
create or replace function public.market_stats()
returns table (
  provider text,
  region text,
  tier text,
  suppressed boolean,
  active_keys integer,
  price_min_micros bigint,
  price_median_micros bigint,
  price_max_micros bigint,
  window_name text,
  window_suppressed boolean,
  requests bigint,
  success_rate double precision,
  uptime double precision,
  latency_p50_ms integer,
  latency_p90_ms integer,
  latency_p99_ms integer,
  ttfb_p50_ms integer,
  ttfb_p90_ms integer,
  ttfb_p99_ms integer
)
language sql stable security definer set search_path to ''
as $fn$
  with participating as (
    select k.key_id, k.seller_id, k.provider, k.region, k.tier, k.status, k.price_micros
      from public.keys k
      join public.sellers s on s.id = k.seller_id
     where s.deleted_at is null and not s.stats_opt_out
  ),
  cells as (
    select p.provider, p.region, p.tier,
           (count(*) filter (where p.status = 'active'))::integer as active_keys,
           count(distinct p.seller_id) filter (where p.status = 'active') as sellers,
           min(p.price_micros) filter (where p.status = 'active') as price_min,
           round((percentile_cont(0.5) within group (order by p.price_micros) filter (where p.status = 'active'))::numeric)::bigint as price_median,
           max(p.price_micros) filter (where p.status = 'active') as price_max
      from participating p
     group by p.provider, p.region, p.tier
    having count(*) filter (where p.status = 'active') > 0
  ),
  windows (name, span, ord) as (
    values ('5m', interval '5 minutes', 1), ('30m', interval '30 minutes', 2),
           ('1d', interval '1 day', 3), ('7d', interval '7 days', 4)
  ),
  attempts as (
    select p.provider, p.region, p.tier, p.seller_id, r.at, r.status, r.outcome, r.latency_ms, r.duration_ms,
           (r.outcome = 'served' and r.status < 400) as ok,
           (r.status <> 429 and r.outcome in ('upstream_error', 'stream_cut')) as failed
      from public.request_log r
      join participating p on p.key_id = r.key_id
     where r.at > now() - interval '7 days'
       and r.outcome <> 'client_abort'
  ),
  traffic as (
    select a.provider, a.region, a.tier, w.name,
           count(distinct a.seller_id) as sellers,
           count(*) as requests,
           count(*) filter (where a.ok) as ok,
           count(*) filter (where a.status <> 429) as uptime_base,
           count(*) filter (where a.failed) as failures,
           percentile_cont(array[0.5, 0.9, 0.99]) within group (order by a.duration_ms)
             filter (where a.ok and a.duration_ms is not null) as latency,
           percentile_cont(array[0.5, 0.9, 0.99]) within group (order by a.latency_ms)
             filter (where a.ok) as ttfb
      from attempts a
      join windows w on a.at > now() - w.span
     group by a.provider, a.region, a.tier, w.name
  ),
  shown as (
    select c.*, w.name as window_name, w.ord,
           c.sellers >= 3 as cell_shown,
           c.sellers >= 3 and coalesce(t.sellers, 0) >= 3 as window_shown,
           t.requests, t.ok, t.uptime_base, t.failures, t.latency, t.ttfb
      from cells c
     cross join windows w
      left join traffic t on t.provider = c.provider and t.region = c.region and t.tier = c.tier and t.name = w.name
  )
  select s.provider, s.region, s.tier,
         not s.cell_shown,
         case when s.cell_shown then s.active_keys end,
         case when s.cell_shown then s.price_min end,
         case when s.cell_shown then s.price_median end,
         case when s.cell_shown then s.price_max end,
         s.window_name,
         not s.window_shown,
         case when s.window_shown then s.requests end,
         case when s.window_shown then round(s.ok::numeric / s.requests, 4)::double precision end,
         case when s.window_shown and s.uptime_base > 0
              then round((s.uptime_base - s.failures)::numeric / s.uptime_base, 4)::double precision end,
         case when s.window_shown then round(s.latency[1]::numeric)::integer end,
         case when s.window_shown then round(s.latency[2]::numeric)::integer end,
         case when s.window_shown then round(s.latency[3]::numeric)::integer end,
         case when s.window_shown then round(s.ttfb[1]::numeric)::integer end,
         case when s.window_shown then round(s.ttfb[2]::numeric)::integer end,
         case when s.window_shown then round(s.ttfb[3]::numeric)::integer end
    from shown s
   order by s.provider, s.region, s.tier, s.ord
$fn$;

comment on function public.market_stats() is
  'Public marketplace statistics (M2, PR20): aggregates per provider/region/tier and window; cells and windows with fewer than 3 sellers suppressed; opted-out sellers left out.';

revoke all on function public.market_stats() from public;
grant execute on function public.market_stats() to anon, authenticated, service_role;
