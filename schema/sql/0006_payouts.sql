-- 0006 Payouts (S4, S5, S7): withdrawals of earned balance. Financial records, kept 7
-- years like the ledger and pseudonymised the same way when an account closes.
--
-- Inserting a payout is where the database enforces what must never go wrong:
--   * KYC approved, else CN002 (S5: payouts stay locked until verified);
--   * a payout preference exists, else CN006; method and destination are copied from it
--     here, so a caller cannot send money anywhere else;
--   * the amount does not exceed the available balance, else CN003. The seller row is
--     locked first, so two concurrent withdrawals cannot both pass the check.

create table public.payouts (
  id uuid primary key default gen_random_uuid(),
  seller_id uuid references public.sellers (id),
  pseudonym text constraint payouts_pseudonym_format check (pseudonym is null or pseudonym ~ '^p_[0-9a-f]{32}$'),
  method text not null constraint payouts_method_known check (method in ('stripe_connect', 'usdc_tempo')),
  -- acct_... or 0x...; emptied on pseudonymisation.
  destination text
    constraint payouts_destination_format check (
      destination is null or destination ~ '^acct_[A-Za-z0-9]{10,64}$' or destination ~ '^0x[0-9A-Fa-f]{40}$'),
  amount_micros bigint not null constraint payouts_amount_positive check (amount_micros > 0),
  status text not null default 'pending'
    constraint payouts_status_known check (status in ('pending', 'processing', 'paid', 'failed', 'canceled')),
  -- Stripe transfer/payout id or on-chain transaction hash.
  external_ref text constraint payouts_external_ref_format check (external_ref is null or external_ref ~ '^[A-Za-z0-9_:.-]{1,128}$'),
  failure_code text constraint payouts_failure_code_format check (failure_code is null or failure_code ~ '^[a-z0-9_.]{1,64}$'),
  requested_at timestamptz not null default now(),
  completed_at timestamptz,
  constraint payouts_owner check ((seller_id is null) <> (pseudonym is null)),
  constraint payouts_linked_has_destination check (seller_id is null or destination is not null),
  constraint payouts_completed_when_final check ((status in ('paid', 'failed', 'canceled')) = (completed_at is not null))
);
create index payouts_seller_requested_idx on public.payouts (seller_id, requested_at desc) where seller_id is not null;

comment on table public.payouts is 'Seller withdrawals. Locked until KYC is approved; never above the available balance.';

create or replace function internal.payouts_before_insert() returns trigger
  language plpgsql security definer set search_path to ''
as $fn$
declare
  pref public.payout_preferences;
  earned bigint;
  committed bigint;
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
  new.status := 'pending';
  new.requested_at := now();
  new.completed_at := null;

  select coalesce(sum(e.amount_micros - e.fee_micros), 0) into earned
    from public.earnings_ledger e where e.seller_id = new.seller_id;
  select coalesce(sum(p.amount_micros), 0) into committed
    from public.payouts p where p.seller_id = new.seller_id and p.status not in ('failed', 'canceled');
  if new.amount_micros > earned - committed then
    raise exception 'payout of % exceeds the available balance of %', new.amount_micros, earned - committed
      using errcode = 'CN003';
  end if;
  return new;
end
$fn$;

create trigger payouts_before_insert before insert on public.payouts
  for each row execute function internal.payouts_before_insert();

-- Amount, method and the request time never change; status moves forward only; a row is
-- deleted only by retention; seller_id changes only by pseudonymisation.
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
  if (new.id, new.amount_micros, new.method, new.requested_at) is distinct from
     (old.id, old.amount_micros, old.method, old.requested_at) then
    raise exception 'a payout''s amount, method and request time are fixed' using errcode = 'CN001';
  end if;
  if new.seller_id is distinct from old.seller_id
     and not (old.seller_id is not null and new.seller_id is null and new.pseudonym is not null and new.destination is null) then
    raise exception 'a payout''s seller changes only by pseudonymisation' using errcode = 'CN001';
  end if;
  if old.status in ('paid', 'failed', 'canceled') and new.status is distinct from old.status then
    raise exception 'payout % is final (%)', old.id, old.status using errcode = 'CN001';
  end if;
  return new;
end
$fn$;

create trigger payouts_guard before update or delete on public.payouts
  for each row execute function internal.payouts_guard();
create trigger payouts_no_truncate before truncate on public.payouts
  for each statement execute function internal.refuse_truncate();

alter table public.payouts enable row level security;
revoke all on table public.payouts from public, anon, authenticated, service_role;
grant select on table public.payouts to authenticated;
grant select on table public.payouts to service_role;
grant insert (seller_id, amount_micros) on table public.payouts to service_role;
grant update (status, external_ref, failure_code, completed_at) on table public.payouts to service_role;

create policy payouts_select_own on public.payouts
  for select to authenticated using (seller_id = (select auth.uid()));

-- Balance per seller. security_invoker: the caller's row-level security applies, so a
-- seller sees exactly its own line.
create view public.seller_balances with (security_invoker = true) as
select
  s.id as seller_id,
  coalesce((select sum(e.amount_micros - e.fee_micros) from public.earnings_ledger e where e.seller_id = s.id), 0)::bigint
    as earned_micros,
  coalesce((select sum(p.amount_micros) from public.payouts p
             where p.seller_id = s.id and p.status not in ('failed', 'canceled')), 0)::bigint
    as withdrawn_micros,
  (coalesce((select sum(e.amount_micros - e.fee_micros) from public.earnings_ledger e where e.seller_id = s.id), 0)
   - coalesce((select sum(p.amount_micros) from public.payouts p
                where p.seller_id = s.id and p.status not in ('failed', 'canceled')), 0))::bigint
    as available_micros
from public.sellers s;

revoke all on table public.seller_balances from public, anon, authenticated, service_role;
grant select on table public.seller_balances to authenticated, service_role;
