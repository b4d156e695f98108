-- 0015 Disputes live in the buyer's wallet, not here (P7, PR9, PR19).
--
-- A dispute is opened and resolved in the buyer's BuyerWallet object, beside the payment
-- claim it is about (worker/payments/disputes.ts): opening checks the claim and inserts in
-- one step, and a refund credits the claim back through the same exactly-once mark as any
-- refund. KV `DISPUTES` is the operators' index. The one consequence the books need is
-- money: a refund claws the serving seller's share back, recorded once per dispute in
-- public.clawbacks (0011) with the dispute, request, key and seller, netted before the next
-- payout and shown in the seller's earnings and export. A rejection moves no money.
--
-- public.disputes (0007) was meant as a mirror of the wallet's disputes and nothing ever
-- wrote it: a second copy would be a second truth to keep in step, and it would keep each
-- buyer's id and receipt for 7 years where the wallet keeps a resolved dispute for one. So
-- it goes, with the two functions that touched it (as in 0011, without those lines).

create or replace function public.close_seller_account(p_seller_id uuid) returns jsonb
  language plpgsql security definer set search_path to ''
as $fn$
declare
  v_pseudonym text := internal.new_pseudonym();
  v_keys text[];
  v_ledger integer;
  v_payouts integer;
  v_clawbacks integer;
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
  update public.clawbacks set seller_id = null, pseudonym = v_pseudonym where seller_id = p_seller_id;
  get diagnostics v_clawbacks = row_count;

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
    'pseudonymised_payouts', v_payouts,
    'pseudonymised_clawbacks', v_clawbacks);
end
$fn$;

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
  n_payout_events integer;
  n_clawbacks integer;
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
  -- A retry links to the payout it retried: unlink before the older one goes.
  delete from public.payouts where requested_at < now() - interval '7 years'
    and not exists (select 1 from public.payouts r where r.retry_of = payouts.id and r.requested_at >= now() - interval '7 years');
  get diagnostics n_payouts = row_count;
  delete from public.payout_events where at < now() - interval '7 years';
  get diagnostics n_payout_events = row_count;
  delete from public.clawbacks where created_at < now() - interval '7 years';
  get diagnostics n_clawbacks = row_count;
  delete from public.webhook_deliveries where created_at < now() - interval '30 days';
  get diagnostics n_deliveries = row_count;
  return jsonb_build_object(
    'request_log', n_raw, 'request_log_hourly', n_hourly, 'earnings_ledger', n_ledger,
    'payouts', n_payouts, 'payout_events', n_payout_events, 'clawbacks', n_clawbacks,
    'webhook_deliveries', n_deliveries);
end
$fn$;

drop table public.disputes;
