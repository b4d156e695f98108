// Seller accounts (S1, PR1): the sellers row behind every signed-in call, and the plumbing
// the seller API shares: authenticate, open the request's database client, make sure the
// seller row exists (created from the verified claims on first use: email and, with
// GitHub sign-in, the GitHub account id; nothing more), then run the handler.
import type { IRequest } from "itty-router";
import type { TransactionSql } from "postgres";
import * as v from "valibot";
import { asSeller, asService, SellerProfilePatchSchema, sqlState, DB_ERRORS, type KycStatus, type SellerProfile, type SellerRow } from "../../schema/tables.ts";
import { requireSeller, type SellerIdentity } from "./auth.ts";
import { withDb, type Db } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { ApiError, json, parseOr400, readJson } from "../../core/http.ts";

export type Tx = TransactionSql<any>;

/** What a seller handler gets: the verified identity, its open account, and the request's client. */
export interface SellerContext {
  request: IRequest;
  env: Env;
  ctx: ExecutionContext;
  identity: SellerIdentity;
  seller: SellerRow;
  sql: Db;
  /** Run `fn` as this seller (role authenticated + claims): row-level security applies. */
  asSeller<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
}

/** A seller API handler: 401/403 before any database work, then the seller's context. */
export function sellerRoute(handler: (c: SellerContext) => Promise<Response>) {
  return async (request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> => {
    const identity = await requireSeller(request, env);
    return withDb(env, ctx, async (sql) => {
      const seller = await ensureSeller(sql, identity);
      if (seller.deleted_at) throw new ApiError("account_closed", "this seller account is closed");
      return handler({
        request, env, ctx, identity, seller, sql,
        asSeller: (fn) => asSeller(sql, identity.id, fn, { email: identity.email ?? undefined }),
      });
    });
  };
}

/**
 * The seller row for a verified identity, created on first use and kept in step with the
 * claims (a changed email or a newly linked GitHub account), as service_role: a seller may
 * not set its own GitHub id. The auth user must exist (Supabase's auth.users; locally the
 * dev sign-in's): a token for a user that is gone is refused. A closed account is returned
 * as it is (deleted_at set); callers decide.
 */
export async function ensureSeller(sql: Db, identity: SellerIdentity): Promise<SellerRow> {
  if (!identity.email) throw new ApiError("unauthorized", "this sign-in carries no email address; sign in with email or a GitHub account that has one");
  const githubId = identity.githubId && /^[1-9][0-9]{0,18}$/.test(identity.githubId) ? identity.githubId : null;
  try {
    return await asService(sql, async (tx) => {
      await tx`
        insert into public.sellers (id, email, github_id) values (${identity.id}, ${identity.email}, ${githubId})
        on conflict (id) do update set email = excluded.email, github_id = coalesce(excluded.github_id, public.sellers.github_id)
          where public.sellers.deleted_at is null
            and (public.sellers.email is distinct from excluded.email
                 or (excluded.github_id is not null and public.sellers.github_id is distinct from excluded.github_id))`;
      const [row] = await tx<SellerRow[]>`select * from public.sellers where id = ${identity.id}`;
      return row!;
    });
  } catch (error) {
    if (sqlState(error) === DB_ERRORS.foreign_key_violation) throw new ApiError("unauthorized", "no such account (it may have been deleted); sign in again");
    if (sqlState(error) === DB_ERRORS.unique_violation) throw new ApiError("conflict", "another seller account already uses this email or GitHub account");
    throw error;
  }
}

// ---------------------------------------------------------------------------------------
// GET/PATCH /api/me, POST /api/stats-opt-out

export async function profileOf(c: SellerContext): Promise<SellerProfile> {
  const [seller, kyc] = await c.asSeller(async (tx) => {
    const [s] = await tx<SellerRow[]>`select * from public.sellers where id = ${c.identity.id}`;
    const [k] = await tx<{ status: KycStatus; updated_at: Date }[]>`select status, updated_at from public.kyc where seller_id = ${c.identity.id}`;
    return [s ?? c.seller, k] as const;
  });
  return {
    id: seller.id,
    email: seller.email,
    displayName: seller.display_name,
    githubId: seller.github_id,
    statsOptOut: seller.stats_opt_out,
    createdAt: seller.created_at.toISOString(),
    kyc: { status: kyc?.status ?? "not_started", updatedAt: kyc?.updated_at.toISOString() ?? null },
  };
}

export const getMe = sellerRoute(async (c) => json({ seller: await profileOf(c) }));

/** Corrections (S9): the display name and the statistics opt-out; the email is Supabase Auth's. */
export const patchMe = sellerRoute(async (c) => {
  const patch = parseOr400(SellerProfilePatchSchema, await readJson(c.request), "profile");
  await c.asSeller(async (tx) => {
    if (patch.displayName !== undefined) await tx`update public.sellers set display_name = ${patch.displayName} where id = ${c.identity.id}`;
    if (patch.statsOptOut !== undefined) await tx`update public.sellers set stats_opt_out = ${patch.statsOptOut} where id = ${c.identity.id}`;
  });
  return json({ seller: await profileOf(c) });
});

const OptOutSchema = v.optional(v.strictObject({ optOut: v.optional(v.boolean(), true) }), {});

/** Objection (S9): leave (or, with {"optOut": false}, rejoin) the public marketplace statistics. */
export const statsOptOut = sellerRoute(async (c) => {
  const text = await c.request.text();
  const body = parseOr400(OptOutSchema, text.trim() ? parseJson(text) : undefined, "opt-out");
  const optOut = body.optOut ?? true;
  await c.asSeller((tx) => tx`update public.sellers set stats_opt_out = ${optOut} where id = ${c.identity.id}`);
  return json({ statsOptOut: optOut });
});

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError("invalid_json", "body is not valid JSON");
  }
}
