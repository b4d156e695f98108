// The optional buyer account itself (B4, PR11): who is asking, its row, the account view,
// and deleting it with everything in it.
//
// The account is the auth user: the same Supabase Auth (locally the dev sign-in) and the
// same session as sellers (worker/seller/auth.ts). One sign-in may be a seller, a buyer or
// both; the buyer account is its own row (public.buyer_accounts), made by a buyer sign-in
// (`account: "buyer"`), by POST /api/buyer/account, or by the first attach. Every read and
// detach runs as the user (role authenticated + claims), so row-level security shows the
// buyer its own rows only; what the user may not do alone (attach an id, keep the email in
// step) runs as service_role after the Worker's own checks.
import type { IRequest } from "itty-router";
import type { TransactionSql } from "postgres";
import { asSeller, asService, type BuyerAccountIdRow, type BuyerAccountRow } from "../../schema/tables.ts";
import type { BuyerAccountDeleted, BuyerAccountView } from "../../schema/buyer-account.ts";
import { clearedSessionCookie, requireSeller, type SellerIdentity } from "../seller/auth.ts";
import { ensureBuyerAccount } from "../seller/sign-in.ts";
import { withDb, type Db } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { ApiError, json } from "../../core/http.ts";
import { walletStub } from "../../objects/buyer-wallet/stub.ts";

export type Tx = TransactionSql<any>;

/** What every buyer-account handler gets: the verified sign-in and the request's client. */
export interface SignedInContext {
  request: IRequest;
  env: Env;
  ctx: ExecutionContext;
  identity: SellerIdentity;
  sql: Db;
  /** Run `fn` as this user (role authenticated + claims): row-level security applies. */
  asBuyer<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
}

/** ... and, for most, the buyer account row. */
export interface BuyerContext extends SignedInContext {
  account: BuyerAccountRow;
}

/** A handler of a signed-in user: 401 before any database work. */
export function signedInRoute(handler: (c: SignedInContext) => Promise<Response>) {
  return async (request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> => {
    const identity = await requireSeller(request, env);
    return withDb(env, ctx, (sql) => handler({
      request, env, ctx, identity, sql,
      asBuyer: (fn) => asSeller(sql, identity.id, fn, { email: identity.email ?? undefined }),
    }));
  };
}

/**
 * A buyer-account handler: 401 before any database work, then the account, created on
 * first use when `create` (opening it), else 404 buyer_account_not_found.
 */
export function buyerRoute(handler: (c: BuyerContext) => Promise<Response>, opts: { create?: boolean } = {}) {
  return signedInRoute(async (c) => {
    const account = opts.create ? await ensureBuyerAccount(c.sql, c.identity) : await findAccount(c.asBuyer, c.identity.id);
    return handler({ ...c, account });
  });
}

async function findAccount(asBuyer: BuyerContext["asBuyer"], id: string): Promise<BuyerAccountRow> {
  const [row] = await asBuyer((tx) => tx<BuyerAccountRow[]>`select * from public.buyer_accounts where id = ${id}`);
  if (!row) throw new ApiError("buyer_account_not_found", "no buyer account for this sign-in: open one with POST /api/buyer/account (or attach a buyer key)");
  return row;
}

/** The attached ids, oldest first, as the user sees them (its own only). */
export function attachedIds(c: Pick<BuyerContext, "asBuyer">): Promise<BuyerAccountIdRow[]> {
  return c.asBuyer((tx) => tx<BuyerAccountIdRow[]>`select * from public.buyer_account_ids order by attached_at, buyer_id_hash`);
}

export async function accountView(c: BuyerContext): Promise<BuyerAccountView> {
  const ids = await attachedIds(c);
  return {
    id: c.account.id,
    email: c.account.email,
    createdAt: c.account.created_at.toISOString(),
    buyerIds: ids.map((r) => ({ buyerId: r.buyer_id_hash, attachedAt: r.attached_at.toISOString() })),
  };
}

/** GET /api/buyer/account */
export const getAccount = buyerRoute(async (c) => json({ account: await accountView(c) }));

/** POST /api/buyer/account: open the buyer account of this sign-in (a no-op when it exists). */
export const openAccount = buyerRoute(async (c) => json({ account: await accountView(c) }), { create: true });

/**
 * DELETE /api/buyer/account (PR11): the account with everything in it.
 *   1 the spend history of every attached id: per-day spend and the history list in its
 *     BuyerWallet, and their KV SPEND copies (the balance stays: the key still spends it)
 *   2 the sign-in, unless it also holds an open seller account: Supabase's auth user
 *     (admin API) in production, our local auth.users row otherwise
 *   3 the account row, its email and its attachments (cascade), as the user (RLS)
 * A failure stops with an error and the call can be repeated: nothing is gone before the
 * steps after it can still find it. Afterwards the same session gets 404 (or 401 once the
 * sign-in is gone).
 */
export const deleteAccount = buyerRoute(async (c) => {
  const ids = await attachedIds(c);
  let erasedSpendDays = 0;
  for (const { buyer_id_hash: buyerId } of ids) erasedSpendDays += (await walletStub(c.env, buyerId).eraseSpendHistory(buyerId)).erasedDays;

  const [seller] = await asService(c.sql, (tx) => tx<{ id: string }[]>`select id from public.sellers where id = ${c.identity.id} and deleted_at is null`);
  const signInDeleted = seller === undefined;
  if (signInDeleted) {
    const { supabaseAdmin, deleteSupabaseUser } = await import("../seller/data-rights.ts");
    const admin = supabaseAdmin(c.env);
    if (admin) await deleteSupabaseUser(admin, c.identity.id);
    else await asService(c.sql, (tx) => tx`delete from auth.users where id = ${c.identity.id}`);
  }
  // Production: Supabase's auth.users is in this database, so step 2 already took the row.
  await c.asBuyer((tx) => tx`delete from public.buyer_accounts where id = ${c.identity.id}`);

  console.log(JSON.stringify({ evt: "buyer.account_deleted", detachedBuyerIds: ids.length, erasedSpendDays, signInDeleted }));
  const body: BuyerAccountDeleted = { deleted: true, detachedBuyerIds: ids.length, erasedSpendDays, signInDeleted };
  return json(body, 200, signInDeleted ? { "set-cookie": clearedSessionCookie() } : {});
});
