-- 0010 Data rights (S9, PR25) and retention (M1, PR14, PR24).

-- Close a seller account. In one transaction:
--   * earnings and payouts stay (7 years) but lose the seller link: seller_id -> null and
--     one fresh random pseudonym for all of this seller's rows; payout destinations are
--     emptied; disputes about the seller's keys lose the seller link;
--   * keys, payout preference, KYC status, webhook endpoints (with their secrets and
--     delivery log) are deleted;
--   * the seller row keeps only its id and deleted_at; email, display name and GitHub id
--     are gone.
-- Returns the removed key ids: the caller must then delete their ciphertext (KV), their
-- objects' storage and their pool entries, and in production the Supabase auth user
-- (which removes the remaining seller row by cascade). Flush the key objects' earnings
-- before calling this: later ledger inserts for a closed seller are refused (CN005).
create or replace function public.close_seller_account(p_seller_id uuid) returns jsonb
  language plpgsql security definer set search_path to ''
as $fn$
declare
  v_pseudonym text := internal.new_pseudonym();
  v_keys text[];
  v_ledger integer;
  v_payouts integer;
begin
  perform 1 from public.sellers s where s.id = p_seller_id and s.deleted_at is null for update;
  if not found then
    raise exception 'no open seller account %', p_seller_id using errcode = 'CN007';
  end if;

  select coalesce(array_agg(k.key_id order by k.key_id), '{}') into v_keys
    from public.keys k where k.seller_id = p_seller_id;

  update public.earnings_ledger set seller_id = null, pseudonym = v_pseudonym where seller_id = p_seller_id;
  get diagnostics v_ledger = row_count;
  update public.payouts set seller_id = null, pseudonym = v_pseudonym, destination = null where seller_id = p_seller_id;
  get diagnostics v_payouts = row_count;
  update public.disputes set seller_id = null where seller_id = p_seller_id;

  delete from public.keys where seller_id = p_seller_id;
  delete from public.payout_preferences where seller_id = p_seller_id;
  delete from public.kyc where seller_id = p_seller_id;
  delete from public.webhook_endpoints where seller_id = p_seller_id;

  update public.sellers
     set email = null, display_name = null, github_id = null, stats_opt_out = true, deleted_at = now()
   where id = p_seller_id;

  return jsonb_build_object(
    'removed_key_ids', to_jsonb(v_keys),
    'pseudonymised_ledger_rows', v_ledger,
    'pseudonymised_payouts', v_payouts);
end
$fn$;

revoke all on function public.close_seller_account(uuid) from public, anon, authenticated;
grant execute on function public.close_seller_account(uuid) to service_role;

-- The scheduled retention job (M1). Raw request metadata is cut at a whole hour 30 days
-- back, after the hours about to go have been rolled up, so every hour in the aggregates
-- was computed from complete raw data.
create or replace function public.run_retention() returns jsonb
  language plpgsql security definer set search_path to ''
as $fn$
declare
  raw_cutoff timestamptz := to_timestamp(floor(extract(epoch from now() - interval '30 days') / 3600) * 3600);
  oldest timestamptz;
  n_raw integer;
  n_hourly integer;
  n_ledger integer;
  n_payouts integer;
  n_disputes integer;
  n_deliveries integer;
begin
  select min(at) into oldest from public.request_log where at < raw_cutoff;
  if oldest is not null then
    perform public.rollup_request_log(oldest, raw_cutoff);
  end if;
  delete from public.request_log where at < raw_cutoff;
  get diagnostics n_raw = row_count;
  delete from public.request_log_hourly where hour < now() - interval '1 year';
  get diagnostics n_hourly = row_count;
  delete from public.earnings_ledger where created_at < now() - interval '7 years';
  get diagnostics n_ledger = row_count;
  delete from public.payouts where requested_at < now() - interval '7 years';
  get diagnostics n_payouts = row_count;
  delete from public.disputes where opened_at < now() - interval '7 years' and status = 'resolved';
  get diagnostics n_disputes = row_count;
  -- The delivery log is operational, not financial: the same 30 days as raw metadata.
  delete from public.webhook_deliveries where created_at < now() - interval '30 days';
  get diagnostics n_deliveries = row_count;
  return jsonb_build_object(
    'request_log', n_raw, 'request_log_hourly', n_hourly, 'earnings_ledger', n_ledger,
    'payouts', n_payouts, 'disputes', n_disputes, 'webhook_deliveries', n_deliveries);
end
$fn$;

revoke all on function public.run_retention() from public, anon, authenticated;
grant execute on function public.run_retention() to service_role;
