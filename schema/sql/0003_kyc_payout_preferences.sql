-- 0003 KYC status (S5, PR7) and payout preferences (S4, PR6).

-- Of KYC we keep the verification status and when it last changed, nothing else. The
-- Persona inquiry is created with reference-id = seller id, so its signed webhook finds the
-- seller without us storing the inquiry, names or documents.
create table public.kyc (
  seller_id uuid primary key references public.sellers (id) on delete cascade,
  status text not null
    constraint kyc_status_known check (
      status in ('not_started', 'pending', 'needs_review', 'approved', 'declined', 'expired')),
  updated_at timestamptz not null default now()
);

create trigger kyc_touch_updated_at before update on public.kyc
  for each row execute function internal.touch_updated_at();

comment on table public.kyc is 'KYC verification status and its timestamp only (S5). Written from the Persona webhook.';

alter table public.kyc enable row level security;
revoke all on table public.kyc from public, anon, authenticated, service_role;
grant select on table public.kyc to authenticated;
grant select, insert, update, delete on table public.kyc to service_role;

create policy kyc_select_own on public.kyc
  for select to authenticated using (seller_id = (select auth.uid()));

-- Where a seller's withdrawals go: a Stripe Connect account (bank details stay with Stripe)
-- or a USDC wallet on Tempo. The database checks the format; the API additionally checks
-- the EIP-55 checksum (keccak is not available in SQL) and stores the checksummed form.
create table public.payout_preferences (
  seller_id uuid primary key references public.sellers (id) on delete cascade,
  method text not null constraint payout_preferences_method_known check (method in ('stripe_connect', 'usdc_tempo')),
  stripe_account_id text
    constraint payout_preferences_stripe_account_format check (
      stripe_account_id is null or stripe_account_id ~ '^acct_[A-Za-z0-9]{10,64}$'),
  evm_address text
    constraint payout_preferences_evm_address_format check (
      evm_address is null or (evm_address ~ '^0x[0-9A-Fa-f]{40}$' and lower(evm_address) <> '0x0000000000000000000000000000000000000000')),
  updated_at timestamptz not null default now(),
  constraint payout_preferences_one_destination check (
       (method = 'stripe_connect' and stripe_account_id is not null and evm_address is null)
    or (method = 'usdc_tempo' and evm_address is not null and stripe_account_id is null))
);

create trigger payout_preferences_touch_updated_at before update on public.payout_preferences
  for each row execute function internal.touch_updated_at();

comment on table public.payout_preferences is 'Payout destination (S4): Stripe Connect account id or EVM address. No bank details.';

alter table public.payout_preferences enable row level security;
revoke all on table public.payout_preferences from public, anon, authenticated, service_role;
grant select, delete on table public.payout_preferences to authenticated;
grant insert (seller_id, method, stripe_account_id, evm_address) on table public.payout_preferences to authenticated;
grant update (method, stripe_account_id, evm_address) on table public.payout_preferences to authenticated;
grant select, insert, update, delete on table public.payout_preferences to service_role;

create policy payout_preferences_select_own on public.payout_preferences
  for select to authenticated using (seller_id = (select auth.uid()));
create policy payout_preferences_insert_own on public.payout_preferences
  for insert to authenticated with check (seller_id = (select auth.uid()));
create policy payout_preferences_update_own on public.payout_preferences
  for update to authenticated
  using (seller_id = (select auth.uid()))
  with check (seller_id = (select auth.uid()));
create policy payout_preferences_delete_own on public.payout_preferences
  for delete to authenticated using (seller_id = (select auth.uid()));
