-- 0014 Buyer accounts in use (B4, PR11): what 0009 lacked.
--
-- * An account may hold several buyer ids (one per buyer key it proved), each in at most one
--   account. A row is written only by the Worker (service_role) after it checked a signature
--   by that buyer key bound to this account (worker/buyer-account/attach.ts): a signed-in
--   user cannot attach an id it does not hold, not even through PostgREST. The buyer sees
--   and detaches (deletes) its own rows.
-- * The per-account spend copy 0009 planned (buyer_spend) goes: nothing wrote it, and a
--   copy would keep spend past the 90 days B5/PR24 allow. The history an account shows is
--   read from where B5 keeps it, the buyer id's BuyerWallet object (and its KV SPEND copy).

create table public.buyer_account_ids (
  -- B2: the SHA-256 buyer id, never the principal (the did:key) itself.
  buyer_id_hash text primary key
    constraint buyer_account_ids_hash_format check (buyer_id_hash ~ '^[0-9a-f]{64}$'),
  account_id uuid not null references public.buyer_accounts (id) on delete cascade,
  attached_at timestamptz not null default now()
);
create index buyer_account_ids_account_idx on public.buyer_account_ids (account_id, attached_at);

alter table public.buyer_account_ids enable row level security;
revoke all on table public.buyer_account_ids from public, anon, authenticated, service_role;
grant select, delete on table public.buyer_account_ids to authenticated;
grant select, insert, update, delete on table public.buyer_account_ids to service_role;

create policy buyer_account_ids_select_own on public.buyer_account_ids
  for select to authenticated using (account_id = (select auth.uid()));
create policy buyer_account_ids_delete_own on public.buyer_account_ids
  for delete to authenticated using (account_id = (select auth.uid()));

-- 0009's single id per account, carried over (none exist: nothing wrote the column).
insert into public.buyer_account_ids (buyer_id_hash, account_id, attached_at)
  select buyer_id_hash, id, created_at from public.buyer_accounts where buyer_id_hash is not null;
drop index public.buyer_accounts_buyer_id_hash_key;
alter table public.buyer_accounts drop column buyer_id_hash;

drop table public.buyer_spend;
