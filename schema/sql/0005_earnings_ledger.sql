-- 0005 Earnings ledger (S7, PR16, PR24): append-only, kept 7 years.
--
-- Each SellerKey object flushes its accumulator from an alarm as one row with a flush id
-- it chose before writing; the unique flush_id makes a flush repeated after a crash a
-- no-op (`on conflict (flush_id) do nothing`, or public.record_earnings below).
-- Rows are never updated or deleted, with exactly two exceptions enforced by a trigger:
--   * pseudonymisation when a seller closes the account (seller_id -> null, pseudonym set,
--     nothing else changes), done by public.close_seller_account;
--   * retention deletes of rows older than 7 years, done by public.run_retention.
-- TRUNCATE is refused too.

create table public.earnings_ledger (
  id bigint generated always as identity primary key,
  flush_id text not null
    constraint earnings_ledger_flush_id_format check (flush_id ~ '^[A-Za-z0-9_.:-]{8,128}$'),
  key_id text not null constraint earnings_ledger_key_id_format check (key_id ~ '^k_[a-z0-9]{12,32}$'),
  -- No cascade: a seller row cannot disappear while it still owns ledger rows.
  seller_id uuid references public.sellers (id),
  pseudonym text constraint earnings_ledger_pseudonym_format check (pseudonym is null or pseudonym ~ '^p_[0-9a-f]{32}$'),
  period_start timestamptz not null,
  period_end timestamptz not null,
  amount_micros bigint not null constraint earnings_ledger_amount_nonnegative check (amount_micros >= 0),
  fee_micros bigint not null default 0
    constraint earnings_ledger_fee_range check (fee_micros >= 0 and fee_micros <= amount_micros),
  request_count integer not null constraint earnings_ledger_request_count_nonnegative check (request_count >= 0),
  created_at timestamptz not null default now(),
  constraint earnings_ledger_flush_id_key unique (flush_id),
  constraint earnings_ledger_period_order check (period_end >= period_start),
  -- Exactly one of: linked to a seller, or pseudonymised.
  constraint earnings_ledger_owner check ((seller_id is null) <> (pseudonym is null))
);
create index earnings_ledger_seller_created_idx on public.earnings_ledger (seller_id, created_at desc)
  where seller_id is not null;
create index earnings_ledger_key_idx on public.earnings_ledger (key_id, period_end desc);
create index earnings_ledger_created_idx on public.earnings_ledger (created_at);

comment on table public.earnings_ledger is
  'Append-only earnings (S7). Kept 7 years; pseudonymised (seller_id null, pseudonym set) when the seller closes the account.';

-- New rows: only for open accounts, so a late flush cannot re-link a closed seller.
create or replace function internal.earnings_ledger_before_insert() returns trigger
  language plpgsql security definer set search_path to ''
as $fn$
begin
  if new.seller_id is not null
     and exists (select 1 from public.sellers s where s.id = new.seller_id and s.deleted_at is not null) then
    raise exception 'seller % has closed the account: flush earnings before closing it', new.seller_id
      using errcode = 'CN005';
  end if;
  return new;
end
$fn$;

create trigger earnings_ledger_before_insert before insert on public.earnings_ledger
  for each row execute function internal.earnings_ledger_before_insert();

-- Statement trigger for every table whose rows are financial records.
create or replace function internal.refuse_truncate() returns trigger
  language plpgsql set search_path to ''
as $fn$
begin
  raise exception '% is append-only: TRUNCATE refused', tg_table_name using errcode = 'CN001';
end
$fn$;

create or replace function internal.earnings_ledger_append_only() returns trigger
  language plpgsql set search_path to ''
as $fn$
begin
  if tg_op = 'DELETE' then
    if old.created_at < now() - interval '7 years' then
      return old; -- retention (M1)
    end if;
    raise exception 'earnings_ledger is append-only: row % is kept 7 years', old.id using errcode = 'CN001';
  end if;

  -- UPDATE: only pseudonymisation, which removes the seller link and changes nothing else.
  if old.seller_id is not null and old.pseudonym is null
     and new.seller_id is null and new.pseudonym is not null
     and (new.id, new.flush_id, new.key_id, new.period_start, new.period_end,
          new.amount_micros, new.fee_micros, new.request_count, new.created_at)
         is not distinct from
         (old.id, old.flush_id, old.key_id, old.period_start, old.period_end,
          old.amount_micros, old.fee_micros, old.request_count, old.created_at) then
    return new;
  end if;
  raise exception 'earnings_ledger is append-only: UPDATE refused (only pseudonymisation may change a row)'
    using errcode = 'CN001';
end
$fn$;

create trigger earnings_ledger_append_only before update or delete on public.earnings_ledger
  for each row execute function internal.earnings_ledger_append_only();
create trigger earnings_ledger_no_truncate before truncate on public.earnings_ledger
  for each statement execute function internal.refuse_truncate();

alter table public.earnings_ledger enable row level security;
revoke all on table public.earnings_ledger from public, anon, authenticated, service_role;
-- The owner reads; service_role inserts and reads. Nobody but the table owner (through the
-- two security-definer functions) updates or deletes, and the trigger still applies then.
-- created_at is not insertable: rows cannot be backdated into the deletable window.
grant select on table public.earnings_ledger to authenticated;
grant select on table public.earnings_ledger to service_role;
grant insert (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
  on table public.earnings_ledger to service_role;

create policy earnings_ledger_select_own on public.earnings_ledger
  for select to authenticated using (seller_id = (select auth.uid()));

-- Idempotent credit: true when this flush was recorded now, false when it already was
-- with the same figures; CN004 when the same flush id arrives with different figures
-- (a bug worth failing loudly on rather than silently keeping either).
create or replace function public.record_earnings(
  p_flush_id text,
  p_key_id text,
  p_seller_id uuid,
  p_period_start timestamptz,
  p_period_end timestamptz,
  p_amount_micros bigint,
  p_fee_micros bigint,
  p_request_count integer
) returns boolean
  language plpgsql security invoker set search_path to ''
as $fn$
declare
  inserted integer;
  existing public.earnings_ledger;
begin
  insert into public.earnings_ledger
    (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
  values
    (p_flush_id, p_key_id, p_seller_id, p_period_start, p_period_end, p_amount_micros, p_fee_micros, p_request_count)
  on conflict (flush_id) do nothing;
  get diagnostics inserted = row_count;
  if inserted = 1 then
    return true;
  end if;

  select * into existing from public.earnings_ledger where flush_id = p_flush_id;
  if (existing.key_id, existing.seller_id, existing.period_start, existing.period_end,
      existing.amount_micros, existing.fee_micros, existing.request_count)
     is distinct from
     (p_key_id, p_seller_id, p_period_start, p_period_end, p_amount_micros, p_fee_micros, p_request_count) then
    raise exception 'flush % was already recorded with different figures', p_flush_id using errcode = 'CN004';
  end if;
  return false;
end
$fn$;

revoke all on function public.record_earnings(text, text, uuid, timestamptz, timestamptz, bigint, bigint, integer)
  from public, anon, authenticated;
grant execute on function public.record_earnings(text, text, uuid, timestamptz, timestamptz, bigint, bigint, integer)
  to service_role;
