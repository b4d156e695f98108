-- 0002 Key configurations (S3, PR5). Configuration only: the credential itself is
-- ciphertext in KV (S2) and plaintext only in its key object's memory. This table has,
-- and must never get, a column holding key material.

-- Format checks shared with the app's valibot schemas (schema/wire.ts).
create or replace function internal.is_route_pattern(p text) returns boolean
  language sql immutable set search_path to ''
as $fn$
  select p is not null
     and char_length(p) <= 200
     and p ~ '^(GET|POST|PUT|PATCH|DELETE|\*) /[A-Za-z0-9_.:/*{}-]*$'
$fn$;

create or replace function internal.are_route_patterns(ps text[]) returns boolean
  language sql immutable set search_path to ''
as $fn$
  select coalesce(bool_and(internal.is_route_pattern(p)), true) from unnest(ps) as p
$fn$;

-- [{ "route": "POST /v1/...", "priceMicros": 123 }, ...]
create or replace function internal.are_route_prices(rp jsonb) returns boolean
  language sql immutable set search_path to ''
as $fn$
  select jsonb_typeof(rp) = 'array'
     and jsonb_array_length(rp) <= 100
     and coalesce((
       select bool_and(
                jsonb_typeof(e) = 'object'
            and internal.is_route_pattern(e ->> 'route')
            and jsonb_typeof(e -> 'priceMicros') = 'number'
            and (e ->> 'priceMicros') ~ '^[0-9]{1,15}$')
       from jsonb_array_elements(rp) as e), true)
$fn$;

create table public.keys (
  key_id text primary key
    constraint keys_key_id_format check (key_id ~ '^k_[a-z0-9]{12,32}$'),
  seller_id uuid not null references public.sellers (id) on delete cascade,
  provider text not null
    constraint keys_provider_format check (provider ~ '^[a-z][a-z0-9-]{1,31}$'),
  price_micros bigint not null constraint keys_price_nonnegative check (price_micros >= 0),
  route_prices jsonb not null default '[]'::jsonb
    constraint keys_route_prices_valid check (internal.are_route_prices(route_prices)),
  requests_per_minute integer not null
    constraint keys_requests_per_minute_range check (requests_per_minute between 1 and 100000),
  max_concurrent integer not null
    constraint keys_max_concurrent_range check (max_concurrent between 1 and 10000),
  daily_budget_micros bigint
    constraint keys_daily_budget_nonnegative check (daily_budget_micros is null or daily_budget_micros >= 0),
  monthly_budget_micros bigint
    constraint keys_monthly_budget_nonnegative check (monthly_budget_micros is null or monthly_budget_micros >= 0),
  allowed_routes text[] not null default '{}'
    constraint keys_allowed_routes_valid check (
      cardinality(allowed_routes) <= 100 and internal.are_route_patterns(allowed_routes)),
  region text not null constraint keys_region_known check (region in ('eu', 'us', 'asia', 'global')),
  tier text not null default 'standard'
    constraint keys_tier_known check (tier in ('standard', 'premium', 'economy')),
  status text not null default 'active'
    constraint keys_status_known check (status in ('active', 'paused', 'disabled')),
  -- Where the key's Durable Object lives. Fixed at creation.
  home text not null default 'default' constraint keys_home_known check (home in ('eu', 'default')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- An EU-tagged key serves EU buyers (B3, PR21): its object must live in the EU.
  constraint keys_eu_region_lives_in_eu check (region <> 'eu' or home = 'eu')
);
create index keys_seller_id_idx on public.keys (seller_id);
create index keys_pool_idx on public.keys (provider, region, tier) where status = 'active';

create trigger keys_touch_updated_at before update on public.keys
  for each row execute function internal.touch_updated_at();

comment on table public.keys is
  'Seller key configuration (S3). Never a credential: ciphertext lives in KV, plaintext only in the key object''s memory.';

alter table public.keys enable row level security;
revoke all on table public.keys from public, anon, authenticated, service_role;

-- A seller lists, creates, configures and removes its own keys. Provider and home are
-- fixed at creation (the credential belongs to one provider; the object to one place).
grant select, delete on table public.keys to authenticated;
grant insert (key_id, seller_id, provider, price_micros, route_prices, requests_per_minute, max_concurrent,
              daily_budget_micros, monthly_budget_micros, allowed_routes, region, tier, status, home)
  on table public.keys to authenticated;
grant update (price_micros, route_prices, requests_per_minute, max_concurrent, daily_budget_micros,
              monthly_budget_micros, allowed_routes, region, tier, status)
  on table public.keys to authenticated;
grant select, insert, update, delete on table public.keys to service_role;

create policy keys_select_own on public.keys
  for select to authenticated using (seller_id = (select auth.uid()));
create policy keys_insert_own on public.keys
  for insert to authenticated with check (seller_id = (select auth.uid()));
create policy keys_update_own on public.keys
  for update to authenticated
  using (seller_id = (select auth.uid()))
  with check (seller_id = (select auth.uid()));
create policy keys_delete_own on public.keys
  for delete to authenticated using (seller_id = (select auth.uid()));
