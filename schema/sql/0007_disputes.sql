-- 0007 Disputes (P7, PR19): opened from a request id and its Payment-Receipt, resolved by
-- refund, credit or rejection. The buyer appears only as the SHA-256 buyer id (B2); there
-- is no free text, so nothing personal can be typed in.

create table public.disputes (
  id uuid primary key default gen_random_uuid(),
  request_id text not null constraint disputes_request_id_format check (request_id ~ '^req_[A-Za-z0-9]{16,64}$'),
  -- The Payment-Receipt header value the buyer got with the answer.
  receipt text not null constraint disputes_receipt_length check (char_length(receipt) between 1 and 4096),
  buyer_id_hash text not null constraint disputes_buyer_id_hash_format check (buyer_id_hash ~ '^[0-9a-f]{64}$'),
  key_id text constraint disputes_key_id_format check (key_id is null or key_id ~ '^k_[a-z0-9]{12,32}$'),
  -- The seller whose key served the request; emptied when that seller closes the account.
  seller_id uuid references public.sellers (id) on delete set null,
  amount_micros bigint not null constraint disputes_amount_nonnegative check (amount_micros >= 0),
  reason text not null
    constraint disputes_reason_known check (
      reason in ('not_served', 'wrong_amount', 'upstream_error', 'duplicate_charge', 'other')),
  status text not null default 'open' constraint disputes_status_known check (status in ('open', 'resolved')),
  resolution text
    constraint disputes_resolution_known check (
      resolution is null or resolution in ('refunded', 'credited', 'rejected', 'withdrawn')),
  opened_at timestamptz not null default now(),
  resolved_at timestamptz,
  constraint disputes_request_id_key unique (request_id),
  constraint disputes_resolution_matches_status check (
       (status = 'open' and resolution is null and resolved_at is null)
    or (status = 'resolved' and resolution is not null and resolved_at is not null))
);
create index disputes_seller_opened_idx on public.disputes (seller_id, opened_at desc) where seller_id is not null;
create index disputes_buyer_idx on public.disputes (buyer_id_hash);

alter table public.disputes enable row level security;
revoke all on table public.disputes from public, anon, authenticated, service_role;
-- Sellers see disputes about their keys; only the service opens and resolves them.
grant select on table public.disputes to authenticated;
grant select, insert, update on table public.disputes to service_role;

create policy disputes_select_own on public.disputes
  for select to authenticated using (seller_id = (select auth.uid()));
