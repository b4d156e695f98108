-- 0004 Seller webhooks (S6): endpoints, their signing secrets, and the delivery log.

create or replace function internal.are_event_types(ts text[]) returns boolean
  language sql immutable set search_path to ''
as $fn$
  select coalesce(bool_and(t ~ '^[a-z]+(\.[a-z_]+){1,3}$' and char_length(t) <= 64), true) from unnest(ts) as t
$fn$;

create table public.webhook_endpoints (
  id uuid primary key default gen_random_uuid(),
  seller_id uuid not null references public.sellers (id) on delete cascade,
  -- http is allowed for dev receivers; the API requires https and refuses private,
  -- loopback and link-local targets outside dev (SSRF). No userinfo in the URL.
  url text not null
    constraint webhook_endpoints_url_format check (
      char_length(url) <= 2048 and url ~ '^https?://[^[:space:]/?#@]+(/[^[:space:]]*)?$'),
  -- Empty = every event type.
  events text[] not null default '{}'
    constraint webhook_endpoints_events_valid check (cardinality(events) <= 32 and internal.are_event_types(events)),
  enabled boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint webhook_endpoints_id_seller_key unique (id, seller_id)
);
create index webhook_endpoints_seller_id_idx on public.webhook_endpoints (seller_id);

create trigger webhook_endpoints_touch_updated_at before update on public.webhook_endpoints
  for each row execute function internal.touch_updated_at();

alter table public.webhook_endpoints enable row level security;
revoke all on table public.webhook_endpoints from public, anon, authenticated, service_role;
grant select, delete on table public.webhook_endpoints to authenticated;
grant insert (seller_id, url, events, enabled) on table public.webhook_endpoints to authenticated;
grant update (url, events, enabled) on table public.webhook_endpoints to authenticated;
grant select, insert, update, delete on table public.webhook_endpoints to service_role;

create policy webhook_endpoints_select_own on public.webhook_endpoints
  for select to authenticated using (seller_id = (select auth.uid()));
create policy webhook_endpoints_insert_own on public.webhook_endpoints
  for insert to authenticated with check (seller_id = (select auth.uid()));
create policy webhook_endpoints_update_own on public.webhook_endpoints
  for update to authenticated
  using (seller_id = (select auth.uid()))
  with check (seller_id = (select auth.uid()));
create policy webhook_endpoints_delete_own on public.webhook_endpoints
  for delete to authenticated using (seller_id = (select auth.uid()));

-- The signing secret. The server signs every delivery (HMAC-SHA256 over timestamp + body),
-- so it needs the secret itself: a hash would be useless. It is stored encrypted:
-- AES-256-GCM under a Worker secret (WEBHOOK_SECRET_KEYS, versioned by kid like the vault
-- keys), in its own table that only service_role may touch. A database dump, a backup, a
-- Supabase dashboard session or an RLS mistake on webhook_endpoints therefore reveals no
-- usable secret; forging a webhook needs the database and the Worker secret together.
-- The seller sees the plaintext once, in the API response that creates or rotates it.
create table public.webhook_signing_secrets (
  endpoint_id uuid primary key references public.webhook_endpoints (id) on delete cascade,
  kid text not null constraint webhook_signing_secrets_kid_format check (kid ~ '^[A-Za-z0-9_-]{1,64}$'),
  -- 96-bit GCM nonce and ciphertext||tag of a 32-64 byte secret: the shape of an envelope,
  -- so a plaintext secret cannot be stored here by mistake.
  iv bytea not null constraint webhook_signing_secrets_iv_length check (octet_length(iv) = 12),
  ciphertext bytea not null
    constraint webhook_signing_secrets_ciphertext_length check (octet_length(ciphertext) between 48 and 96),
  created_at timestamptz not null default now()
);

comment on table public.webhook_signing_secrets is
  'Webhook signing secrets, AES-256-GCM encrypted under a Worker secret (kid). service_role only.';

alter table public.webhook_signing_secrets enable row level security;
revoke all on table public.webhook_signing_secrets from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.webhook_signing_secrets to service_role;
-- No policy for authenticated: even a future grant by mistake would show no rows.

-- Delivery log: one row per attempt, visible to the seller. No payload bodies: the event
-- id and type are enough to match the seller's own records; response bodies are not kept.
create table public.webhook_deliveries (
  id bigint generated always as identity primary key,
  endpoint_id uuid not null,
  seller_id uuid not null,
  event_id text not null constraint webhook_deliveries_event_id_format check (event_id ~ '^evt_[A-Za-z0-9]{8,64}$'),
  event_type text not null
    constraint webhook_deliveries_event_type_format check (event_type ~ '^[a-z]+(\.[a-z_]+){1,3}$' and char_length(event_type) <= 64),
  attempt integer not null constraint webhook_deliveries_attempt_range check (attempt between 1 and 100),
  -- null when no HTTP response came back (timeout, refused, blocked); then error says why.
  status_code integer constraint webhook_deliveries_status_range check (status_code is null or status_code between 100 and 599),
  error text constraint webhook_deliveries_error_code check (error is null or error ~ '^[a-z0-9_]{1,40}$'),
  duration_ms integer constraint webhook_deliveries_duration_nonnegative check (duration_ms is null or duration_ms >= 0),
  next_attempt_at timestamptz,
  delivered_at timestamptz,
  created_at timestamptz not null default now(),
  constraint webhook_deliveries_endpoint_fk foreign key (endpoint_id, seller_id)
    references public.webhook_endpoints (id, seller_id) on delete cascade,
  constraint webhook_deliveries_attempt_key unique (endpoint_id, event_id, attempt),
  constraint webhook_deliveries_delivered_is_final check (delivered_at is null or next_attempt_at is null)
);
create index webhook_deliveries_seller_created_idx on public.webhook_deliveries (seller_id, created_at desc);
create index webhook_deliveries_due_idx on public.webhook_deliveries (next_attempt_at) where next_attempt_at is not null;

alter table public.webhook_deliveries enable row level security;
revoke all on table public.webhook_deliveries from public, anon, authenticated, service_role;
grant select on table public.webhook_deliveries to authenticated;
grant select, insert, update, delete on table public.webhook_deliveries to service_role;

create policy webhook_deliveries_select_own on public.webhook_deliveries
  for select to authenticated using (seller_id = (select auth.uid()));
