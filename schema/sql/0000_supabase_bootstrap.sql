-- 0000 Supabase bootstrap: what a Supabase project already provides, created here for every
-- other database (PGlite locally, Debian PostgreSQL in CI). On a real Supabase project this
-- file changes nothing: every statement is guarded by an existence check, and the `auth`
-- schema (owned there by supabase_auth_admin) is left alone when it exists.
-- Mirrors supabase/postgres init scripts and supabase/auth's definitions of auth.uid(),
-- auth.role(), auth.email() and auth.jwt(), which read the claims that PostgREST (or our
-- asSeller helper) puts in `request.jwt.claims` for the current transaction.

-- The three API roles. NOLOGIN NOINHERIT as on Supabase; service_role bypasses row-level
-- security there, so it does here.
do $bootstrap$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    if not exists (select 1 from pg_catalog.pg_roles where rolname = r) then
      begin
        execute format('create role %I nologin noinherit', r);
      exception when duplicate_object or unique_violation then
        null; -- roles are cluster-wide: another database's migration created it meanwhile
      end;
    end if;
  end loop;
  -- Only where we created it (on Supabase it already has it, and we may not alter it).
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role' and rolbypassrls) then
    alter role service_role bypassrls;
  end if;
end
$bootstrap$;

-- The connecting user (postgres on Supabase and in CI) must be able to `set local role`
-- to each API role. Superusers already can; Supabase already granted it to postgres.
do $membership$
declare
  r text;
begin
  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    if not pg_catalog.pg_has_role(current_user, r, 'member') then
      begin
        execute format('grant %I to %I', r, current_user);
      exception
        when duplicate_object or unique_violation then null;
        when insufficient_privilege then raise notice 'cannot grant % to %: set local role % will fail for this user', r, current_user, r;
      end;
    end if;
  end loop;
end
$membership$;

-- Supabase grants these on `public`; a fresh database has only the PUBLIC grant.
grant usage on schema public to anon, authenticated, service_role;

-- The auth schema with the smallest auth.users Supabase Auth would own, and the claim
-- readers. Created only where no `auth` schema exists, i.e. never on Supabase.
do $auth$
begin
  if exists (select 1 from pg_catalog.pg_namespace where nspname = 'auth') then
    raise notice 'schema auth exists (Supabase): bootstrap of auth skipped';
    return;
  end if;

  create schema auth;
  grant usage on schema auth to anon, authenticated, service_role;

  -- Supabase Auth's table has many more columns; we depend on id and email only.
  create table auth.users (
    id uuid primary key default gen_random_uuid(),
    email text unique,
    created_at timestamptz not null default now()
  );
  revoke all on table auth.users from public, anon, authenticated;
  grant select, insert, update, delete on table auth.users to service_role;

  create function auth.uid() returns uuid
    language sql stable set search_path to ''
  as $fn$
    select coalesce(
      nullif(current_setting('request.jwt.claim.sub', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
  $fn$;

  create function auth.role() returns text
    language sql stable set search_path to ''
  as $fn$
    select coalesce(
      nullif(current_setting('request.jwt.claim.role', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
  $fn$;

  create function auth.email() returns text
    language sql stable set search_path to ''
  as $fn$
    select coalesce(
      nullif(current_setting('request.jwt.claim.email', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
  $fn$;

  create function auth.jwt() returns jsonb
    language sql stable set search_path to ''
  as $fn$
    select coalesce(
      nullif(current_setting('request.jwt.claim', true), ''),
      nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
  $fn$;
end
$auth$;

-- Our own helpers (trigger functions, format checks) live outside the API-exposed schema.
-- The API roles need USAGE: a check constraint runs its SQL function as the writing role,
-- and that function's body looks up its helpers by name. Tables here get no grants (the
-- migration runner's internal.schema_migrations stays private to the owner).
create schema if not exists internal;
revoke all on schema internal from public;
grant usage on schema internal to anon, authenticated, service_role;

-- Shared trigger: keep updated_at honest.
create or replace function internal.touch_updated_at() returns trigger
  language plpgsql set search_path to ''
as $fn$
begin
  new.updated_at := now();
  return new;
end
$fn$;

-- Random pseudonym for pseudonymised financial rows: not derived from the seller id, so
-- it cannot be recomputed from it.
create or replace function internal.new_pseudonym() returns text
  language sql volatile set search_path to ''
as $fn$
  select 'p_' || replace(gen_random_uuid()::text, '-', '')
$fn$;
