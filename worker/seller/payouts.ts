// Payout preferences (S4, PR6) and withdrawal requests. A seller is paid to a Stripe
// Connect account (bank details stay with Stripe; we keep the acct_ id) or to a USDC
// wallet on Tempo (an EVM address, EIP-55 checksum verified, stored checksummed).
// Withdrawals stay locked until KYC is approved (S5): the database refuses the payout row
// otherwise (CN002), whatever the caller, and never lets one exceed the balance (CN003).
// A withdrawal is executed at once (worker/payouts/execute.ts): Stripe transfer or USDC.
import { getAddress } from "viem";
import * as v from "valibot";
import { PayoutPreferenceSchema, type KycStatus, type PayoutPreferenceRow } from "../../schema/tables.ts";
import { json, parseOr400, readJson } from "../../core/http.ts";
import { executePayout } from "../payouts/execute.ts";
import { notifyPayout } from "../payouts/notify.ts";
import { readiness } from "./payout-onboarding.ts";
import { minPayoutMicros } from "../payouts/schedule.ts";
import { payoutView, requestPayoutRow } from "../payouts/store.ts";
import { sellerRoute, type SellerContext } from "./profile.ts";

export { payoutView };

export interface PayoutPreferenceView {
  method: PayoutPreferenceRow["method"];
  stripeAccountId: string | null;
  evmAddress: string | null;
  updatedAt: string;
}

const prefView = (row: PayoutPreferenceRow): PayoutPreferenceView => ({
  method: row.method, stripeAccountId: row.stripe_account_id, evmAddress: row.evm_address, updatedAt: row.updated_at.toISOString(),
});

async function payoutState(c: SellerContext) {
  return c.asSeller(async (tx) => {
    const [pref] = await tx<PayoutPreferenceRow[]>`select * from public.payout_preferences where seller_id = ${c.identity.id}`;
    const [kyc] = await tx<{ status: KycStatus }[]>`select status from public.kyc where seller_id = ${c.identity.id}`;
    const status = kyc?.status ?? "not_started";
    return { preference: pref ? { ...prefView(pref), ...readiness(pref) } : null, kyc: status, payoutsLocked: status !== "approved" };
  });
}

export const getPayout = sellerRoute(async (c) => json(await payoutState(c)));

/** Set (or replace) the payout destination. Correction (S9) is the same call. */
export const putPayout = sellerRoute(async (c) => {
  const input = parseOr400(PayoutPreferenceSchema, await readJson(c.request), "payout preference");
  const stripe = input.method === "stripe_connect" ? input.stripeAccountId : null;
  const evm = input.method === "usdc_tempo" ? getAddress(input.evmAddress) : null;
  await c.asSeller((tx) => tx`
    insert into public.payout_preferences (seller_id, method, stripe_account_id, evm_address)
    values (${c.identity.id}, ${input.method}, ${stripe}, ${evm})
    on conflict (seller_id) do update
      set method = excluded.method, stripe_account_id = excluded.stripe_account_id, evm_address = excluded.evm_address`);
  return json(await payoutState(c));
});

export const deletePayout = sellerRoute(async (c) => {
  await c.asSeller((tx) => tx`delete from public.payout_preferences where seller_id = ${c.identity.id}`);
  return json(await payoutState(c));
});

const WithdrawalSchema = v.optional(v.strictObject({
  /** Omitted: everything available (rounded down to cents for Stripe; the rest stays). */
  amountMicros: v.optional(v.pipe(v.number(), v.safeInteger("must be an integer number of micro-dollars"), v.minValue(1))),
}), {});

/**
 * Ask for a withdrawal and execute it. The database (public.request_payout, as
 * service_role) locks the seller, checks KYC, the method's readiness, the minimum and the
 * balance, and copies the destination from the preference; then the payout is sent
 * (Stripe transfer / USDC transfer). 201 with the payout as it stands after sending.
 */
export const requestPayout = sellerRoute(async (c) => {
  const text = await c.request.text();
  let body: unknown;
  try {
    body = text.trim() ? JSON.parse(text) : undefined;
  } catch {
    return json({ error: { code: "invalid_json", message: "body is not valid JSON" } }, 400);
  }
  const { amountMicros } = parseOr400(WithdrawalSchema, body, "withdrawal");
  const row = await requestPayoutRow(c.sql, c.identity.id, { amountMicros: amountMicros ?? null, minMicros: minPayoutMicros(c.env) });
  // S6: the seller's webhooks hear about each state (payout.created, .sent, .paid, .failed).
  await notifyPayout(c.env, row);
  const after = (await executePayout(c.env, c.sql, row.id)) ?? row;
  return json({ payout: payoutView(after) }, 201);
});
