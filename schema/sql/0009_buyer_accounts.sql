-- 0009 Optional buyer accounts (B4, PR11): an email and a spend history, deletable with
-- everything in it. Anonymous buyers never appear here. id is the Supabase Auth user id.

create table public.buyer_accounts (
  id uuid primary key references auth.users (id) on delete cascade,
  email text not null
    constraint buyer_accounts_email_format check (
      char_length(email) <= 320 and email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'),
  -- The SHA-256 buyer id (B2) of a payment principal the buyer chose to attach, so its
  -- spend can be shown. Never the principal itself.
  buyer_id_hash text constraint buyer_accounts_buyer_id_hash_format check (buyer_id_hash is null or buyer_id_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now()
);
create unique index buyer_accounts_email_key on public.buyer_accounts (lower(email));
create unique index buyer_accounts_buyer_id_hash_key on public.buyer_accounts (buyer_id_hash) where buyer_id_hash is not null;

alter table public.buyer_accounts enable row level security;
revoke all on table public.buyer_accounts from public, anon, authenticated, service_role;
grant select, delete on table public.buyer_accounts to authenticated;
grant insert (id, email) on table public.buyer_accounts to authenticated;
grant select, insert, update, delete on table public.buyer_accounts to service_role;

create policy buyer_accounts_select_own on public.buyer_accounts
  for select to authenticated using (id = (select auth.uid()));
create policy buyer_accounts_insert_own on public.buyer_accounts
  for insert to authenticated
  with check (id = (select auth.uid()) and email is not distinct from (select auth.jwt() ->> 'email'));
create policy buyer_accounts_delete_own on public.buyer_accounts
  for delete to authenticated using (id = (select auth.uid()));

create table public.buyer_spend (
  account_id uuid not null references public.buyer_accounts (id) on delete cascade,
  day date not null,
  amount_micros bigint not null constraint buyer_spend_amount_nonnegative check (amount_micros >= 0),
  request_count integer not null constraint buyer_spend_count_nonnegative check (request_count >= 0),
  constraint buyer_spend_pkey primary key (account_id, day)
);

alter table public.buyer_spend enable row level security;
revoke all on table public.buyer_spend from public, anon, authenticated, service_role;
grant select on table public.buyer_spend to authenticated;
grant select, insert, update, delete on table public.buyer_spend to service_role;

create policy buyer_spend_select_own on public.buyer_spend
  for select to authenticated using (account_id = (select auth.uid()));
