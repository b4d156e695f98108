// Payout preferences (S4, PR6) and withdrawal requests. A seller is paid to a Stripe
// Connect account (bank details stay with Stripe; we keep the acct_ id) or to a USDC
// wallet on Tempo (an EVM address, EIP-55 checksum verified, stored checksummed).
// Withdrawals stay locked until KYC is approved (S5): the database refuses the payout row
// otherwise (CN002), whatever the caller, and never lets one exceed the balance (CN003).
import { getAddress } from "viem";
import * as v from "valibot";
import { asService, PayoutPreferenceSchema, type KycStatus, type PayoutPreferenceRow, type PayoutRow } from "../../schema/tables.ts";
import { json, parseOr400, readJson } from "../../core/http.ts";
import { sellerRoute, type SellerContext } from "./profile.ts";
import { emitSellerEvent } from "../../core/emit-event.ts";

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
    return { preference: pref ? prefView(pref) : null, kyc: status, payoutsLocked: status !== "approved" };
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

const WithdrawalSchema = v.strictObject({
  amountMicros: v.pipe(v.number(), v.safeInteger("must be an integer number of micro-dollars"), v.minValue(1)),
});

export const payoutView = (p: PayoutRow) => ({
  id: p.id, method: p.method, destination: p.destination, amountMicros: Number(p.amount_micros), status: p.status,
  requestedAt: p.requested_at.toISOString(), completedAt: p.completed_at?.toISOString() ?? null,
});

/**
 * Ask for a withdrawal. The row is inserted as service_role (sellers cannot write payouts);
 * the database copies the destination from the preference and enforces KYC and balance.
 * Executing it (Stripe transfer, USDC send) is the payout worker's job, not this call's.
 */
export const requestPayout = sellerRoute(async (c) => {
  const { amountMicros } = parseOr400(WithdrawalSchema, await readJson(c.request), "withdrawal");
  const [row] = await asService(c.sql, (tx) => tx<PayoutRow[]>`
    insert into public.payouts (seller_id, amount_micros) values (${c.identity.id}, ${amountMicros}) returning *`);
  const payout = payoutView(row!);
  // S6: the seller's webhooks hear about it (payout.paid / payout.failed come with execution).
  c.ctx.waitUntil(emitSellerEvent(c.env, c.identity.id, { type: "payout.created", data: { payoutId: payout.id, amountMicros: payout.amountMicros, method: payout.method, status: payout.status } }));
  return json({ payout }, 201);
});
