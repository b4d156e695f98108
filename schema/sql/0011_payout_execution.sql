-- 0011 Payout execution (issue 12; S4, S5, S7): onboarding state, the payout states
-- requested -> sent -> paid | failed, the transition log, schedules, retries, dispute
-- clawbacks, and the balance that nets them. Everything financial stays append-only and
-- kept 7 years, pseudonymised when an account closes (0010).
--
-- Exactly once, in the database:
--   * public.request_payout() locks the seller row, so concurrent withdrawals of one
--     seller run one at a time and each sees the others' rows;
--   * at most one open (requested or sent) payout per seller (a partial unique index);
--   * a scheduled payout carries its period (weekly:2026-W49): unique per seller, so a
--     cron that fires twice finds the first one;
--   * a retry names the failed payout it retries: unique, so retrying twice makes one;
--   * a state moves forward only (payouts_guard), and each state is logged once
--     (payout_events unique (payout_id, status)).

-- ---------------------------------------------------------------------------------------
-- Onboarding state and the seller's schedule

alter table public.payout_preferences
  -- Set from Stripe's account.updated webhook (never by the seller).
  add column stripe_payouts_enabled boolean not null default false,
  -- The seller confirmed the USDC address by sending it again (never set by a PUT).
  add column evm_confirmed_at timestamptz,
  add column schedule text not null default 'weekly'
    constraint payout_preferences_schedule_known check (schedule in ('daily', 'weekly', 'monthly', 'manual'));

grant insert (schedule), update (schedule) on table public.payout_preferences to authenticated;

-- A new destination is not ready until Stripe (or the seller's confirmation) says so again.
create or replace function internal.payout_preferences_reset_readiness() returns trigger
  language plpgsql set search_path to ''
as $fn$
begin
  if tg_op = 'INSERT' then
    new.stripe_payouts_enabled := false;
    new.evm_confirmed_at := null;
    return new;
  end if;
  if new.stripe_account_id is distinct from old.stripe_account_id then
    new.stripe_payouts_enabled := false;
  end if;
  if new.evm_address is distinct from old.evm_address then
    new.evm_confirmed_at := null;
  end if;
  return new;
end
$fn$;

create trigger payout_preferences_reset_readiness before insert or update on public.payout_preferences
  for each row execute function internal.payout_preferences_reset_readiness();

-- Stripe webhooks find the seller by account id.
create index payout_preferences_stripe_account_idx on public.payout_preferences (stripe_account_id)
  where stripe_account_id is not null;

-- ---------------------------------------------------------------------------------------
-- Payout states: requested -> sent -> paid | failed (canceled kept for ops)

alter table public.payouts drop constraint payouts_status_known;
alter table public.payouts alter column status set default 'requested';
update public.payouts set status = 'requested' where status = 'pending';
update public.payouts set status = 'sent' where status = 'processing';
alter table public.payouts add constraint payouts_status_known
  check (status in ('requested', 'sent', 'paid', 'failed', 'canceled'));

alter table public.payouts
  -- The amount in the rail's own unit, exact: US cents (Stripe) or TIP-20 base units
  -- (6 decimals: one unit is one micro-dollar of USDC).
  add column amount_units bigint constraint payouts_amount_units_positive check (amount_units is null or amount_units > 0),
  -- Scheduled payouts: the period they pay, e.g. weekly:2026-W49.
  add column schedule_key text constraint payouts_schedule_key_format check (schedule_key is null or schedule_key ~ '^(daily|weekly|monthly):[0-9]{4}-[0-9W-]{2,6}$'),
  -- An ops retry: the failed payout it replaces.
  add column retry_of uuid references public.payouts (id),
  add column sent_at timestamptz,
  add constraint payouts_schedule_key_unique unique (seller_id, schedule_key),
  add constraint payouts_retry_of_unique unique (retry_of);

-- One payout in flight per seller: concurrent requests cannot both be open.
create unique index payouts_one_open_per_seller on public.payouts (seller_id) where status in ('requested', 'sent');
create index payouts_status_idx on public.payouts (status, requested_at) where status in ('requested', 'sent', 'failed');

grant insert (schedule_key, retry_of) on table public.payouts to service_role;
grant update (sent_at) on table public.payouts to service_role;

-- Micro-dollars per unit of a payout method: 1 cent = 10,000; 1 TIP-20 unit (6 decimals) = 1.
create or replace function internal.payout_unit_micros(p_method text) returns bigint
  language sql immutable set search_path to ''
as $fn$
  select case p_method when 'stripe_connect' then 10000 when 'usdc_tempo' then 1 end::bigint
$fn$;

-- ---------------------------------------------------------------------------------------
-- Dispute clawbacks: a refunded dispute debits the serving seller's share

create table public.clawbacks (
  id uuid primary key default gen_random_uuid(),
  dispute_id text not null constraint clawbacks_dispute_id_format check (dispute_id ~ '^dsp_[0-9a-f]{32}$'),
  request_id text not null constraint clawbacks_request_id_format check (request_id ~ '^req_[A-Za-z0-9]{16,64}$'),
  key_id text not null constraint clawbacks_key_id_format check (key_id ~ '^k_[a-z0-9]{12,32}$'),
  seller_id uuid references public.sellers (id),
  pseudonym text constraint clawbacks_pseudonym_format check (pseudonym is null or pseudonym ~ '^p_[0-9a-f]{32}$'),
  -- The seller's share of the refunded payment (what the buyer paid minus the fee).
  amount_micros bigint not null constraint clawbacks_amount_positive check (amount_micros > 0),
  created_at timestamptz not null default now(),
  constraint clawbacks_dispute_id_key unique (dispute_id),
  constraint clawbacks_owner check ((seller_id is null) <> (pseudonym is null))
);
create index clawbacks_seller_idx on public.clawbacks (seller_id, created_at desc) where seller_id is not null;
create index clawbacks_created_idx on public.clawbacks (created_at);

comment on table public.clawbacks is 'Append-only: the seller share of refunded disputes, netted before the next payout. Kept 7 years.';

create or replace function internal.clawbacks_append_only() returns trigger
  language plpgsql set search_path to ''
as $fn$
begin
  if tg_op = 'DELETE' then
    if old.created_at < now() - interval '7 years' then
      return old;
    end if;
    raise exception 'clawbacks are kept 7 years' using errcode = 'CN001';
  end if;
  if old.seller_id is not null and new.seller_id is null and new.pseudonym is not null
     and (new.id, new.dispute_id, new.request_id, new.key_id, new.amount_micros, new.created_at)
         is not distinct from (old.id, old.dispute_id, old.request_id, old.key_id, old.amount_micros, old.created_at) then
    return new;
  end if;
  raise exception 'clawbacks are append-only (only pseudonymisation may change a row)' using errcode = 'CN001';
end
$fn$;

create trigger clawbacks_append_only before update or delete on public.clawbacks
  for each row execute function internal.clawbacks_append_only();
create trigger clawbacks_no_truncate before truncate on public.clawbacks
  for each statement execute function internal.refuse_truncate();

alter table public.clawbacks enable row level security;
revoke all on table public.clawbacks from public, anon, authenticated, service_role;
grant select on table public.clawbacks to authenticated, service_role;
grant insert (dispute_id, request_id, key_id, seller_id, amount_micros) on table public.clawbacks to service_role;
create policy clawbacks_select_own on public.clawbacks
  for select to authenticated using (seller_id = (select auth.uid()));

-- What a seller can withdraw: earnings (net of fees) minus payouts that did not fail minus
-- dispute clawbacks. Negative after a clawback that followed a payout; the next payout nets it.
create or replace function internal.available_micros(p_seller_id uuid) returns bigint
  language sql stable security definer set search_path to ''
as $fn$
  select (coalesce((select sum(e.amount_micros - e.fee_micros) from public.earnings_ledger e where e.seller_id = p_seller_id), 0)
        - coalesce((select sum(p.amount_micros) from public.payouts p
                     where p.seller_id = p_seller_id and p.status not in ('failed', 'canceled')), 0)
        - coalesce((select sum(c.amount_micros) from public.clawbacks c where c.seller_id = p_seller_id), 0))::bigint
$fn$;

-- ---------------------------------------------------------------------------------------
-- The transition log: one row per state a payout reached, written by trigger

create table public.payout_events (
  id bigint generated always as identity primary key,
  payout_id uuid not null,
  status text not null constraint payout_events_status_known check (status in ('requested', 'sent', 'paid', 'failed', 'canceled')),
  external_ref text,
  failure_code text,
  at timestamptz not null default now(),
  constraint payout_events_once unique (payout_id, status)
);
create index payout_events_at_idx on public.payout_events (at);

create or replace function internal.payout_events_append_only() returns trigger
  language plpgsql set search_path to ''
as $fn$
begin
  if tg_op = 'DELETE' and old.at < now() - interval '7 years' then
    return old;
  end if;
  raise exception 'payout_events are append-only' using errcode = 'CN001';
end
$fn$;

create trigger payout_events_append_only before update or delete on public.payout_events
  for each row execute function internal.payout_events_append_only();
create trigger payout_events_no_truncate before truncate on public.payout_events
  for each statement execute function internal.refuse_truncate();

create or replace function internal.payouts_log_state() returns trigger
  language plpgsql security definer set search_path to ''
as $fn$
begin
  if tg_op = 'INSERT' or new.status is distinct from old.status then
    insert into public.payout_events (payout_id, status, external_ref, failure_code)
    values (new.id, new.status, new.external_ref, new.failure_code);
  end if;
  return null;
end
$fn$;

create trigger payouts_log_state after insert or update on public.payouts
  for each row execute function internal.payouts_log_state();

alter table public.payout_events enable row level security;
revoke all on table public.payout_events from public, anon, authenticated, service_role;
grant select on table public.payout_events to service_role;

-- ---------------------------------------------------------------------------------------
-- Insert rules (replacing 0006's): KYC, a preference, the unit, the balance net of clawbacks

create or replace function internal.payouts_before_insert() returns trigger
  language plpgsql security definer set search_path to ''
as $fn$
declare
  pref public.payout_preferences;
  unit bigint;
  available bigint;
begin
  if new.seller_id is null then
    raise exception 'a payout needs a seller' using errcode = 'CN006';
  end if;
  -- Serialise withdrawals per seller.
  perform 1 from public.sellers s where s.id = new.seller_id and s.deleted_at is null for update;
  if not found then
    raise exception 'seller % has no open account', new.seller_id using errcode = 'CN005';
  end if;
  if not exists (select 1 from public.kyc k where k.seller_id = new.seller_id and k.status = 'approved') then
    raise exception 'payouts are locked until KYC is approved' using errcode = 'CN002';
  end if;
  select * into pref from public.payout_preferences p where p.seller_id = new.seller_id;
  if not found then
    raise exception 'no payout preference set' using errcode = 'CN006';
  end if;
  new.method := pref.method;
  new.destination := coalesce(pref.stripe_account_id, pref.evm_address);
  new.status := 'requested';
  new.requested_at := now();
  new.completed_at := null;
  new.sent_at := null;
  new.external_ref := null;
  new.failure_code := null;

  unit := internal.payout_unit_micros(pref.method);
  if new.amount_micros % unit <> 0 then
    raise exception 'payout of % micro-dollars is not a whole number of % units', new.amount_micros, pref.method using errcode = 'CN010';
  end if;
  new.amount_units := new.amount_micros / unit;

  available := internal.available_micros(new.seller_id);
  if new.amount_micros > available then
    raise exception 'payout of % exceeds the available balance of %', new.amount_micros, available
      using errcode = 'CN003';
  end if;
  return new;
end
$fn$;

-- Fixed: amount, units, method, request time, schedule key, retry link. Status moves
-- forward only: requested -> sent | failed | canceled, sent -> paid | failed.
create or replace function internal.payouts_guard() returns trigger
  language plpgsql set search_path to ''
as $fn$
begin
  if tg_op = 'DELETE' then
    if old.requested_at < now() - interval '7 years' then
      return old;
    end if;
    raise exception 'payouts are kept 7 years' using errcode = 'CN001';
  end if;
  if (new.id, new.amount_micros, new.amount_units, new.method, new.requested_at, new.schedule_key, new.retry_of) is distinct from
     (old.id, old.amount_micros, old.amount_units, old.method, old.requested_at, old.schedule_key, old.retry_of) then
    raise exception 'a payout''s amount, method, request time, schedule and retry link are fixed' using errcode = 'CN001';
  end if;
  if new.seller_id is distinct from old.seller_id
     and not (old.seller_id is not null and new.seller_id is null and new.pseudonym is not null and new.destination is null) then
    raise exception 'a payout''s seller changes only by pseudonymisation' using errcode = 'CN001';
  end if;
  if new.status is distinct from old.status then
    if old.status in ('paid', 'failed', 'canceled') then
      raise exception 'payout % is final (%)', old.id, old.status using errcode = 'CN001';
    end if;
    if not ((old.status = 'requested' and new.status in ('sent', 'failed', 'canceled'))
         or (old.status = 'sent' and new.status in ('paid', 'failed'))) then
      raise exception 'payout % cannot move from % to %', old.id, old.status, new.status using errcode = 'CN001';
    end if;
  end if;
  if old.external_ref is not null and new.external_ref is distinct from old.external_ref then
    raise exception 'payout % already names its transfer', old.id using errcode = 'CN001';
  end if;
  return new;
end
$fn$;

-- ---------------------------------------------------------------------------------------
-- Asking for a payout: the one entry for the API, the CLI and the schedule

-- p_amount null = everything available. The amount is rounded down to the method's unit
-- (the remainder stays in the balance); below p_min_micros it is refused (CN009). A
-- method that is not ready (Stripe payouts not enabled, USDC address not confirmed) is
-- refused (CN008). With a schedule key, a payout already made for that period is
-- returned instead of a new one.
create or replace function public.request_payout(
  p_seller_id uuid,
  p_amount_micros bigint,
  p_min_micros bigint,
  p_schedule_key text default null,
  p_retry_of uuid default null
) returns public.payouts
  language plpgsql security definer set search_path to ''
as $fn$
declare
  pref public.payout_preferences;
  unit bigint;
  amount bigint;
  existing public.payouts;
  created public.payouts;
begin
  perform 1 from public.sellers s where s.id = p_seller_id and s.deleted_at is null for update;
  if not found then
    raise exception 'seller % has no open account', p_seller_id using errcode = 'CN005';
  end if;
  if p_schedule_key is not null then
    select * into existing from public.payouts p where p.seller_id = p_seller_id and p.schedule_key = p_schedule_key;
    if found then
      return existing;
    end if;
  end if;
  if p_retry_of is not null then
    select * into existing from public.payouts p where p.retry_of = p_retry_of;
    if found then
      return existing;
    end if;
  end if;
  if not exists (select 1 from public.kyc k where k.seller_id = p_seller_id and k.status = 'approved') then
    raise exception 'payouts are locked until KYC is approved' using errcode = 'CN002';
  end if;
  select * into pref from public.payout_preferences p where p.seller_id = p_seller_id;
  if not found then
    raise exception 'no payout preference set' using errcode = 'CN006';
  end if;
  if (pref.method = 'stripe_connect' and not pref.stripe_payouts_enabled)
     or (pref.method = 'usdc_tempo' and pref.evm_confirmed_at is null) then
    raise exception 'the payout method is not ready' using errcode = 'CN008';
  end if;
  if exists (select 1 from public.payouts p where p.seller_id = p_seller_id and p.status in ('requested', 'sent')) then
    raise exception 'a payout is already in progress' using errcode = 'CN011';
  end if;
  unit := internal.payout_unit_micros(pref.method);
  amount := coalesce(p_amount_micros, internal.available_micros(p_seller_id));
  if amount > internal.available_micros(p_seller_id) then
    raise exception 'payout of % exceeds the available balance', amount using errcode = 'CN003';
  end if;
  amount := (greatest(amount, 0) / unit) * unit;
  if amount < greatest(p_min_micros, 1) then
    raise exception 'payout of % is below the minimum of %', amount, greatest(p_min_micros, 1) using errcode = 'CN009';
  end if;
  insert into public.payouts (seller_id, amount_micros, schedule_key, retry_of)
  values (p_seller_id, amount, p_schedule_key, p_retry_of)
  returning * into created;
  return created;
end
$fn$;

revoke all on function public.request_payout(uuid, bigint, bigint, text, uuid) from public, anon, authenticated;
grant execute on function public.request_payout(uuid, bigint, bigint, text, uuid) to service_role;

-- ---------------------------------------------------------------------------------------
-- Balance view (replacing 0006's): clawbacks netted; a new last column shows them

create or replace view public.seller_balances with (security_invoker = true) as
select
  s.id as seller_id,
  coalesce((select sum(e.amount_micros - e.fee_micros) from public.earnings_ledger e where e.seller_id = s.id), 0)::bigint
    as earned_micros,
  coalesce((select sum(p.amount_micros) from public.payouts p
             where p.seller_id = s.id and p.status not in ('failed', 'canceled')), 0)::bigint
    as withdrawn_micros,
  (coalesce((select sum(e.amount_micros - e.fee_micros) from public.earnings_ledger e where e.seller_id = s.id), 0)
   - coalesce((select sum(p.amount_micros) from public.payouts p
                where p.seller_id = s.id and p.status not in ('failed', 'canceled')), 0)
   - coalesce((select sum(c.amount_micros) from public.clawbacks c where c.seller_id = s.id), 0))::bigint
    as available_micros,
  coalesce((select sum(c.amount_micros) from public.clawbacks c where c.seller_id = s.id), 0)::bigint
    as clawed_back_micros
from public.sellers s;

-- ---------------------------------------------------------------------------------------
-- Account closure and retention (replacing 0010's): clawbacks too

create or replace function public.close_seller_account(p_seller_id uuid) returns jsonb
  language plpgsql security definer set search_path to ''
as $fn$
declare
  v_pseudonym text := internal.new_pseudonym();
  v_keys text[];
  v_ledger integer;
  v_payouts integer;
  v_clawbacks integer;
begin
  perform 1 from public.sellers s where s.id = p_seller_id and s.deleted_at is null for update;
  if not found then
    raise exception 'no open seller account %', p_seller_id using errcode = 'CN007';
  end if;

  select coalesce(array_agg(k.key_id order by k.key_id), '{}') into v_keys
    from public.keys k where k.seller_id = p_seller_id;

  update public.earnings_ledger set seller_id = null, pseudonym = v_pseudonym where seller_id = p_seller_id;
  get diagnostics v_ledger = row_count;
  update public.payouts set seller_id = null, pseudonym = v_pseudonym, destination = null where seller_id = p_seller_id;
  get diagnostics v_payouts = row_count;
  update public.clawbacks set seller_id = null, pseudonym = v_pseudonym where seller_id = p_seller_id;
  get diagnostics v_clawbacks = row_count;
  update public.disputes set seller_id = null where seller_id = p_seller_id;

  delete from public.keys where seller_id = p_seller_id;
  delete from public.payout_preferences where seller_id = p_seller_id;
  delete from public.kyc where seller_id = p_seller_id;
  delete from public.webhook_endpoints where seller_id = p_seller_id;

  update public.sellers
     set email = null, display_name = null, github_id = null, stats_opt_out = true, deleted_at = now()
   where id = p_seller_id;

  return jsonb_build_object(
    'removed_key_ids', to_jsonb(v_keys),
    'pseudonymised_ledger_rows', v_ledger,
    'pseudonymised_payouts', v_payouts,
    'pseudonymised_clawbacks', v_clawbacks);
end
$fn$;

create or replace function public.run_retention() returns jsonb
  language plpgsql security definer set search_path to ''
as $fn$
declare
  raw_cutoff timestamptz := to_timestamp(floor(extract(epoch from now() - interval '30 days') / 3600) * 3600);
  oldest timestamptz;
  n_raw integer;
  n_hourly integer;
  n_ledger integer;
  n_payouts integer;
  n_payout_events integer;
  n_clawbacks integer;
  n_disputes integer;
  n_deliveries integer;
begin
  select min(at) into oldest from public.request_log where at < raw_cutoff;
  if oldest is not null then
    perform public.rollup_request_log(oldest, raw_cutoff);
  end if;
  delete from public.request_log where at < raw_cutoff;
  get diagnostics n_raw = row_count;
  delete from public.request_log_hourly where hour < now() - interval '1 year';
  get diagnostics n_hourly = row_count;
  delete from public.earnings_ledger where created_at < now() - interval '7 years';
  get diagnostics n_ledger = row_count;
  -- A retry links to the payout it retried: unlink before the older one goes.
  delete from public.payouts where requested_at < now() - interval '7 years'
    and not exists (select 1 from public.payouts r where r.retry_of = payouts.id and r.requested_at >= now() - interval '7 years');
  get diagnostics n_payouts = row_count;
  delete from public.payout_events where at < now() - interval '7 years';
  get diagnostics n_payout_events = row_count;
  delete from public.clawbacks where created_at < now() - interval '7 years';
  get diagnostics n_clawbacks = row_count;
  delete from public.disputes where opened_at < now() - interval '7 years' and status = 'resolved';
  get diagnostics n_disputes = row_count;
  delete from public.webhook_deliveries where created_at < now() - interval '30 days';
  get diagnostics n_deliveries = row_count;
  return jsonb_build_object(
    'request_log', n_raw, 'request_log_hourly', n_hourly, 'earnings_ledger', n_ledger,
    'payouts', n_payouts, 'payout_events', n_payout_events, 'clawbacks', n_clawbacks,
    'disputes', n_disputes, 'webhook_deliveries', n_deliveries);
end
$fn$;
