-- 0001 Sellers (S1, PR1): email, optional display name, GitHub account id when signed in
-- with GitHub. Nothing else personal. id is the Supabase Auth user id.
--
-- Conventions for every table in these migrations:
--   * row-level security on; policies only for `authenticated` with `(select auth.uid())`
--     (evaluated once per statement); anon gets no privilege at all;
--   * `revoke all` right after `create table`: Supabase's default privileges grant ALL on
--     new public tables to anon and authenticated, and we grant back only what is needed,
--     column by column for writes;
--   * service_role bypasses RLS (BYPASSRLS) but is still limited by these grants;
--   * money is bigint micro-dollars, never negative.

create table public.sellers (
  id uuid primary key references auth.users (id) on delete cascade,
  email text
    constraint sellers_email_format check (
      email is null or (char_length(email) <= 320 and email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$')),
  display_name text
    constraint sellers_display_name_format check (
      display_name is null or (char_length(display_name) between 1 and 80 and display_name !~ '[[:cntrl:]]')),
  github_id bigint
    constraint sellers_github_id_positive check (github_id is null or github_id > 0),
  stats_opt_out boolean not null default false,
  created_at timestamptz not null default now(),
  deleted_at timestamptz,
  -- An open account has an email; a closed one keeps no personal data at all (S9).
  constraint sellers_open_has_email check (deleted_at is not null or email is not null),
  constraint sellers_closed_is_empty check (
    deleted_at is null or (email is null and display_name is null and github_id is null))
);
create unique index sellers_email_key on public.sellers (lower(email)) where email is not null;
create unique index sellers_github_id_key on public.sellers (github_id) where github_id is not null;

comment on table public.sellers is
  'Seller accounts (S1). Closing an account (public.close_seller_account) empties the personal columns and sets deleted_at.';

alter table public.sellers enable row level security;
revoke all on table public.sellers from public, anon, authenticated, service_role;

-- A seller reads its own row, creates it once with the email its verified JWT carries
-- (so nobody can squat someone else's address), and edits only display name and opt-out.
grant select on table public.sellers to authenticated;
grant insert (id, email, display_name) on table public.sellers to authenticated;
grant update (display_name, stats_opt_out) on table public.sellers to authenticated;
grant select, insert, update on table public.sellers to service_role;

create policy sellers_select_own on public.sellers
  for select to authenticated
  using (id = (select auth.uid()));
create policy sellers_insert_own on public.sellers
  for insert to authenticated
  with check (id = (select auth.uid()) and email is not distinct from (select auth.jwt() ->> 'email'));
create policy sellers_update_own on public.sellers
  for update to authenticated
  using (id = (select auth.uid()) and deleted_at is null)
  with check (id = (select auth.uid()));
