// Data rights (S9, PR25) of the signed-in seller: access/export (JSON, CSV), deletion.
// Correction is the ordinary edits (PATCH /api/me, PATCH /api/keys/:id, PUT /api/payout);
// objection is POST /api/stats-opt-out (worker/seller/profile.ts).
//
// Closing an account (DELETE /api/account):
//   1 every key object stops taking requests and flushes its earnings to the ledger
//   2 public.close_seller_account(): earnings and payouts stay (7 years) under a fresh
//     pseudonym; keys, payout preference, KYC status, webhooks and the personal columns go
//   3 every key is removed everywhere: KV ciphertext, pool index entry, object storage
//   4 the auth user is deleted: Supabase's through supabase-js `auth.admin.deleteUser`
//     (service-role key) in production; locally our auth.users row (which takes the
//     closed seller row with it)
// A failure stops the sequence with an error and the call can simply be repeated: a closed
// account still finds its leftover keys through the KV registry.
import { createClient } from "@supabase/supabase-js";
import type { IRequest } from "itty-router";
import * as v from "valibot";
import { asService, rowToKeyConfig, type EarningsLedgerRow, type KeyRow, type KycStatus, type PayoutPreferenceRow, type PayoutRow } from "../../schema/tables.ts";
import type { Home } from "../../schema/wire.ts";
import { clearedSessionCookie, requireSeller } from "./auth.ts";
import { withDb } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { clawbackView, ledgerEntryView } from "./earnings.ts";
import { ApiError, json, parseOr400 } from "../../core/http.ts";
import { retireAndRemove } from "./keys.ts";
import { keyStub, listKeyIds } from "../../objects/seller-key/stub.ts";
import { payoutView } from "./payouts.ts";
import { ensureSeller, profileOf, sellerRoute, type SellerContext } from "./profile.ts";

// ---------------------------------------------------------------------------------------
// Export

const ExportQuery = v.object({
  format: v.optional(v.picklist(["json", "csv"], "format must be json or csv"), "json"),
  /** CSV is one table per file: which one. */
  data: v.optional(v.picklist(["earnings", "keys", "payouts"], "data must be earnings, keys or payouts"), "earnings"),
});

async function collect(c: SellerContext) {
  const profile = await profileOf(c);
  return c.asSeller(async (tx) => {
    const keys = await tx<KeyRow[]>`select * from public.keys order by created_at, key_id`;
    const [pref] = await tx<PayoutPreferenceRow[]>`select * from public.payout_preferences where seller_id = ${c.identity.id}`;
    const ledger = await tx<EarningsLedgerRow[]>`select * from public.earnings_ledger where seller_id = ${c.identity.id} order by id`;
    const payouts = await tx<PayoutRow[]>`select * from public.payouts where seller_id = ${c.identity.id} order by requested_at`;
    const clawbacks = await tx<Parameters<typeof clawbackView>[0][]>`select * from public.clawbacks where seller_id = ${c.identity.id} order by created_at`;
    const [kyc] = await tx<{ status: KycStatus; updated_at: Date }[]>`select status, updated_at from public.kyc where seller_id = ${c.identity.id}`;
    return {
      exportedAt: new Date().toISOString(),
      seller: { id: profile.id, email: profile.email, displayName: profile.displayName, githubId: profile.githubId, statsOptOut: profile.statsOptOut, createdAt: profile.createdAt },
      kyc: { status: kyc?.status ?? "not_started", updatedAt: kyc?.updated_at.toISOString() ?? null },
      payoutPreference: pref ? { method: pref.method, stripeAccountId: pref.stripe_account_id, evmAddress: pref.evm_address, updatedAt: pref.updated_at.toISOString() } : null,
      keys: keys.map((k) => ({ keyId: k.key_id, home: k.home, createdAt: k.created_at.toISOString(), updatedAt: k.updated_at.toISOString(), config: rowToKeyConfig(k) })),
      earnings: ledger.map(ledgerEntryView),
      payouts: payouts.map(payoutView),
      clawbacks: clawbacks.map(clawbackView),
    };
  });
}

type Cell = string | number | boolean | null;

/** RFC 4180, and no cell a spreadsheet would run as a formula. */
export function toCsv(header: string[], rows: Cell[][]): string {
  const cell = (value: Cell) => {
    if (value === null) return "";
    let s = String(value);
    if (typeof value === "string" && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
    return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return [header, ...rows].map((r) => r.map(cell).join(",")).join("\r\n") + "\r\n";
}

export const exportData = sellerRoute(async (c) => {
  const q = parseOr400(ExportQuery, Object.fromEntries(new URL(c.request.url).searchParams), "export");
  const data = await collect(c);
  const day = data.exportedAt.slice(0, 10);
  if (q.format === "json") {
    return json(data, 200, { "content-disposition": `attachment; filename="cn2-export-${day}.json"`, "cache-control": "no-store" });
  }
  let csv: string;
  if (q.data === "earnings") {
    csv = toCsv(["id", "key_id", "period_start", "period_end", "gross_micros", "fee_micros", "net_micros", "request_count", "recorded_at"],
      data.earnings.map((e) => [e.id, e.keyId, e.periodStart, e.periodEnd, e.grossMicros, e.feeMicros, e.netMicros, e.requestCount, e.recordedAt]));
  } else if (q.data === "keys") {
    csv = toCsv(["key_id", "provider", "region", "tier", "status", "price_micros", "route_prices", "requests_per_minute", "max_concurrent",
      "daily_budget_micros", "monthly_budget_micros", "allowed_routes", "home", "created_at", "updated_at"],
      data.keys.map(({ keyId, home, createdAt, updatedAt, config: k }) => [keyId, k.provider, k.region, k.tier, k.status, k.priceMicros,
        k.routePrices.map((r) => `${r.route}=${r.priceMicros}`).join(" | "), k.requestsPerMinute, k.maxConcurrent,
        k.dailyBudgetMicros, k.monthlyBudgetMicros, k.allowedRoutes.join(" | "), home, createdAt, updatedAt]));
  } else {
    csv = toCsv(["id", "method", "destination", "amount_micros", "status", "requested_at", "completed_at"],
      data.payouts.map((p) => [p.id, p.method, p.destination, p.amountMicros, p.status, p.requestedAt, p.completedAt]));
  }
  return new Response(csv, {
    headers: { "content-type": "text/csv; charset=utf-8", "content-disposition": `attachment; filename="cn2-${q.data}-${day}.csv"`, "cache-control": "no-store" },
  });
});

// ---------------------------------------------------------------------------------------
// Deletion

const setting = (value: string | undefined) => (value && value.trim() ? value.trim() : undefined);

/** Supabase Admin API, when this deployment signs sellers in with Supabase. (Also buyer-account deletion.) */
export function supabaseAdmin(env: Env): { url: string; key: string } | null {
  const url = setting(env.SUPABASE_URL);
  if (!url) return null;
  const key = setting(env.SUPABASE_SERVICE_ROLE_KEY);
  if (!key) throw new ApiError("auth_not_configured", "account deletion needs SUPABASE_SERVICE_ROLE_KEY to delete the Supabase auth user");
  return { url: url.replace(/\/+$/, ""), key };
}

/** Delete the Supabase auth user (the sign-in itself); one already gone counts as deleted. */
export async function deleteSupabaseUser(admin: { url: string; key: string }, userId: string): Promise<void> {
  // Server-side client: no session to keep or refresh, only the service role's admin calls.
  const supabase = createClient(admin.url, admin.key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: { fetch: (input, init) => fetch(input, { ...init, signal: AbortSignal.timeout(15_000) }) },
  });
  let error: { status?: number; code?: string; name?: string } | null;
  try {
    ({ error } = await supabase.auth.admin.deleteUser(userId));
  } catch {
    throw new ApiError("upstream_error", "the auth provider could not be reached to delete the sign-in; try again");
  }
  if (!error) return;
  // 404: already gone (a repeated call).
  if (error.status === 404 || error.code === "user_not_found") return;
  if (error.status === undefined || error.name === "AuthRetryableFetchError") {
    throw new ApiError("upstream_error", "the auth provider could not be reached to delete the sign-in; try again");
  }
  console.error(JSON.stringify({ evt: "auth_user_delete_failed", status: error.status, code: typeof error.code === "string" ? error.code : null }));
  throw new ApiError("upstream_error", `the auth provider refused to delete the sign-in (${error.status}); try again`);
}

export async function deleteAccount(request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> {
  const identity = await requireSeller(request, env);
  const admin = supabaseAdmin(env);
  const result = await withDb(env, ctx, async (sql) => {
    const seller = await ensureSeller(sql, identity);
    // Keys by Postgres (the open account) and by the KV registry (leftovers of an earlier try).
    const keys = new Map<string, Home>();
    for (const row of await asService(sql, (tx) => tx<{ key_id: string; home: Home }[]>`select key_id, home from public.keys where seller_id = ${identity.id}`)) keys.set(row.key_id, row.home);
    for (const { keyId, meta } of await listKeyIds(env, identity.id)) keys.set(keyId, meta.home);

    let closed: { removed_key_ids: string[]; pseudonymised_ledger_rows: number; pseudonymised_payouts: number } | null = null;
    if (!seller.deleted_at) {
      // 1 Stop and flush every key first: the ledger refuses new rows once the account is closed.
      for (const [keyId, home] of keys) {
        const retired = await keyStub(env, keyId, home).retire();
        if (!retired.ok) throw new ApiError(retired.code, `key ${keyId}: ${retired.message}`);
      }
      // 2 Close in Postgres: pseudonymise, delete keys and personal data.
      const [row] = await asService(sql, (tx) => tx<{ result: NonNullable<typeof closed> }[]>`select public.close_seller_account(${identity.id}) as result`);
      closed = row!.result;
    }
    // 3 Remove every key everywhere.
    for (const [keyId, home] of keys) await retireAndRemove(env, keyId, home).catch(async () => keyStub(env, keyId, home).remove());
    // 4 The sign-in itself.
    if (admin) await deleteSupabaseUser(admin, identity.id);
    else await asService(sql, (tx) => tx`delete from auth.users where id = ${identity.id}`);
    return {
      deleted: true,
      removedKeys: keys.size,
      pseudonymisedLedgerRows: closed?.pseudonymised_ledger_rows ?? 0,
      pseudonymisedPayouts: closed?.pseudonymised_payouts ?? 0,
    };
  });
  console.log(JSON.stringify({ evt: "seller.account_closed", removedKeys: result.removedKeys }));
  return json(result, 200, { "set-cookie": clearedSessionCookie() });
}
