// Seller onboarding for payouts (S4, PR6): a Stripe Connect account and its hosted
// onboarding link, followed by account.updated webhooks until Stripe enables payouts
// (worker/payouts/stripe-connect.ts); or a USDC address on Tempo (PUT /api/payout, EIP-55
// checked there) that the seller confirms by sending it again; and the payout schedule.
//
//   POST /api/payout/stripe/onboard {returnUrl?, refreshUrl?} -> {accountId, url, expiresAt, ...state}
//   POST /api/payout/confirm {evmAddress}                     -> state (address confirmed)
//   PUT  /api/payout/schedule {schedule}                       -> state
import { getAddress } from "viem";
import * as v from "valibot";
import { asService, EvmAddressSchema, PAYOUT_SCHEDULES, type PayoutPreferenceRow } from "../../schema/tables.ts";
import { ApiError, json, parseOr400, readJson } from "../../core/http.ts";
import { sellerRoute, type SellerContext } from "./profile.ts";
import { createConnectedAccount, onboardingLink } from "../payouts/stripe-connect.ts";

const Url = v.pipe(v.string(), v.url("must be an absolute URL"), v.maxLength(2000), v.regex(/^https?:\/\//, "must be http(s)"));
const OnboardSchema = v.optional(v.strictObject({ returnUrl: v.optional(Url), refreshUrl: v.optional(Url) }), {});
const ConfirmSchema = v.strictObject({ evmAddress: EvmAddressSchema });
const ScheduleSchema = v.strictObject({ schedule: v.picklist(PAYOUT_SCHEDULES, `schedule must be one of ${PAYOUT_SCHEDULES.join(", ")}`) });

/** What GET /api/payout adds about readiness (worker/seller/payouts.ts). */
export function readiness(pref: PayoutPreferenceRow | undefined) {
  if (!pref) return { ready: false, schedule: "weekly" as const, stripePayoutsEnabled: false, evmConfirmedAt: null };
  const ready = pref.method === "stripe_connect" ? pref.stripe_payouts_enabled : pref.evm_confirmed_at !== null;
  return { ready, schedule: pref.schedule, stripePayoutsEnabled: pref.stripe_payouts_enabled, evmConfirmedAt: pref.evm_confirmed_at?.toISOString() ?? null };
}

async function preference(c: SellerContext): Promise<PayoutPreferenceRow | undefined> {
  const [pref] = await c.asSeller((tx) => tx<PayoutPreferenceRow[]>`select * from public.payout_preferences where seller_id = ${c.identity.id}`);
  return pref;
}

/**
 * Start (or resume) Stripe onboarding. The connected account is made once per seller and
 * becomes the payout method; a new account link is returned each time (they expire).
 */
export const onboardStripe = sellerRoute(async (c) => {
  const text = await c.request.text();
  let body: unknown;
  try {
    body = text.trim() ? JSON.parse(text) : undefined;
  } catch {
    throw new ApiError("invalid_json", "body is not valid JSON");
  }
  const input = parseOr400(OnboardSchema, body, "onboarding");
  const origin = new URL(c.request.url).origin;
  const pref = await preference(c);
  let accountId = pref?.method === "stripe_connect" ? pref.stripe_account_id : null;
  if (!accountId) {
    accountId = await createConnectedAccount(c.env, c.identity.id);
    await c.asSeller((tx) => tx`
      insert into public.payout_preferences (seller_id, method, stripe_account_id, evm_address)
      values (${c.identity.id}, 'stripe_connect', ${accountId}, null)
      on conflict (seller_id) do update set method = excluded.method, stripe_account_id = excluded.stripe_account_id, evm_address = null`);
  }
  const link = await onboardingLink(c.env, accountId, {
    returnUrl: input.returnUrl ?? `${origin}/?payout=onboarded`,
    refreshUrl: input.refreshUrl ?? `${origin}/?payout=refresh`,
  });
  return json({ accountId, ...link, ...readiness(await preference(c)) }, 201);
});

/** Confirm the USDC address: the seller sends it again and it must be the stored one. */
export const confirmEvmAddress = sellerRoute(async (c) => {
  const { evmAddress } = parseOr400(ConfirmSchema, await readJson(c.request), "confirmation");
  const pref = await preference(c);
  if (!pref || pref.method !== "usdc_tempo" || !pref.evm_address) throw new ApiError("payout_method_required", "set a USDC address first (PUT /api/payout)");
  if (getAddress(evmAddress) !== pref.evm_address) throw new ApiError("invalid_request", "this is not the address set as your payout destination");
  // As service_role: the seller cannot set the confirmation column itself, only through here.
  await asService(c.sql, (tx) => tx`
    update public.payout_preferences set evm_confirmed_at = coalesce(evm_confirmed_at, now())
     where seller_id = ${c.identity.id} and evm_address = ${pref.evm_address}`);
  return json(readiness(await preference(c)));
});

export const putSchedule = sellerRoute(async (c) => {
  const { schedule } = parseOr400(ScheduleSchema, await readJson(c.request), "schedule");
  const updated = await c.asSeller((tx) => tx`update public.payout_preferences set schedule = ${schedule} where seller_id = ${c.identity.id}`);
  if (updated.count === 0) throw new ApiError("payout_method_required", "set a payout method first");
  return json(readiness(await preference(c)));
});
