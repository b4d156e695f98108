// KYC through Persona (S5, PR7). We keep the verification status and when it last changed,
// nothing else: no inquiry id, no name, no document. The inquiry is created with
// `reference-id` = seller id, so Persona's signed webhook names the seller by itself.
//
//   POST /api/kyc/start     create an inquiry (Persona REST API), answer its one-time link
//   POST /webhooks/persona  Persona's events: `Persona-Signature: t=<unix>,v1=<hex>` where v1 is
//                           HMAC-SHA256(secret, `${t}.${raw body}`); several space-separated
//                           pairs while Persona rotates the secret. Older than 5 minutes (or
//                           that far in the future) is refused, so a captured delivery
//                           cannot be replayed later.
import { devSetting } from "../../core/environment.ts";
import type { IRequest } from "itty-router";
import * as v from "valibot";
import { asService, UuidSchema, type KycStatus } from "../../schema/tables.ts";
import { withDb } from "../../core/postgres.ts";
import type { Env } from "../../core/env.ts";
import { ApiError, json, safeEqual } from "../../core/http.ts";
import { sellerRoute } from "./profile.ts";

export const PERSONA_VERSION = "2023-01-05";
export const SIGNATURE_TOLERANCE_SECONDS = 300;
const MAX_WEBHOOK_BYTES = 256 * 1024;

const setting = (value: string | undefined) => (value && value.trim() ? value.trim() : undefined);

// ---------------------------------------------------------------------------------------
// Starting verification

const InquiryCreated = v.object({ data: v.object({ id: v.pipe(v.string(), v.regex(/^inq_[A-Za-z0-9]+$/)) }) });
const OneTimeLink = v.object({ meta: v.object({ "one-time-link": v.pipe(v.string(), v.url()) }) });

async function persona(env: Env, path: string, body: unknown): Promise<unknown> {
  const base = (devSetting(env, "PERSONA_API_BASE") ?? "https://api.withpersona.com").replace(/\/+$/, "");
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${env.PERSONA_API_KEY}`, "persona-version": PERSONA_VERSION, "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
  } catch {
    throw new ApiError("upstream_error", "identity verification (Persona) is unreachable; try again");
  }
  if (!res.ok) {
    await res.body?.cancel();
    console.error(JSON.stringify({ evt: "persona_error", status: res.status }));
    throw new ApiError("upstream_error", `identity verification (Persona) answered ${res.status}`);
  }
  return res.json().catch(() => null);
}

/** Start (or restart, after a decline or expiry) identity verification; answers the link to open. */
export const startKyc = sellerRoute(async (c) => {
  const env = c.env;
  if (!setting(env.PERSONA_API_KEY) || !setting(env.PERSONA_TEMPLATE_ID)) {
    throw new ApiError("kyc_unavailable", "identity verification is not configured here (PERSONA_API_KEY, PERSONA_TEMPLATE_ID)");
  }
  const current = await c.asSeller(async (tx) => (await tx<{ status: KycStatus }[]>`select status from public.kyc where seller_id = ${c.identity.id}`)[0]?.status);
  if (current === "approved") return json({ status: "approved", url: null });
  const created = v.safeParse(InquiryCreated, await persona(env, "/api/v1/inquiries", {
    data: { attributes: { "inquiry-template-id": setting(env.PERSONA_TEMPLATE_ID), "reference-id": c.identity.id } },
  }));
  if (!created.success) throw new ApiError("upstream_error", "identity verification (Persona) answered an unexpected inquiry");
  const link = v.safeParse(OneTimeLink, await persona(env, `/api/v1/inquiries/${created.output.data.id}/generate-one-time-link`, {}));
  if (!link.success) throw new ApiError("upstream_error", "identity verification (Persona) answered no link");
  await asService(c.sql, (tx) => tx`
    insert into public.kyc (seller_id, status) values (${c.identity.id}, 'pending')
    on conflict (seller_id) do update set status = 'pending'`);
  return json({ status: "pending", url: link.output.meta["one-time-link"] }, 201);
});

// ---------------------------------------------------------------------------------------
// Persona's webhook

const hex = (bytes: ArrayBuffer) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");

export async function personaSignature(secret: string, timestamp: number, body: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return hex(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${timestamp}.${body}`)));
}

/** Throws invalid_signature unless one `t=..,v1=..` pair signs this body, within the tolerance. */
export async function verifyPersonaSignature(header: string | null, body: string, secret: string, nowSeconds = Math.floor(Date.now() / 1000)): Promise<void> {
  if (!header) throw new ApiError("invalid_signature", "missing Persona-Signature header");
  let stale = false;
  for (const pair of header.trim().split(/\s+/)) {
    const fields = new Map<string, string[]>();
    for (const part of pair.split(",")) {
      const eq = part.indexOf("=");
      if (eq > 0) fields.set(part.slice(0, eq), [...(fields.get(part.slice(0, eq)) ?? []), part.slice(eq + 1)]);
    }
    const t = fields.get("t")?.[0];
    if (!t || !/^\d{1,12}$/.test(t)) continue;
    const timestamp = Number(t);
    if (Math.abs(nowSeconds - timestamp) > SIGNATURE_TOLERANCE_SECONDS) {
      stale = true;
      continue;
    }
    const expected = await personaSignature(secret, timestamp, body);
    if ((fields.get("v1") ?? []).some((sig) => safeEqual(sig.toLowerCase(), expected))) return;
  }
  throw new ApiError("invalid_signature", stale ? "Persona-Signature timestamp is outside the 5-minute tolerance (replayed or delayed)" : "Persona-Signature does not match");
}

const PersonaEvent = v.object({
  data: v.object({
    type: v.literal("event"),
    attributes: v.object({
      name: v.string(),
      payload: v.object({
        data: v.object({
          type: v.literal("inquiry"),
          attributes: v.looseObject({ status: v.string(), "reference-id": v.optional(v.nullable(v.string())) }),
        }),
      }),
    }),
  }),
});

/** Persona inquiry status -> ours. "completed" means submitted, not decided: still pending. */
const STATUS: Record<string, KycStatus> = {
  created: "pending", pending: "pending", completed: "pending", needs_review: "needs_review", "needs-review": "needs_review",
  approved: "approved", declined: "declined", failed: "declined", expired: "expired",
};

export async function personaWebhook(request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> {
  const secret = setting(env.PERSONA_WEBHOOK_SECRET);
  if (!secret) throw new ApiError("kyc_unavailable", "the Persona webhook is not configured here (PERSONA_WEBHOOK_SECRET)");
  const body = await request.text();
  if (body.length > MAX_WEBHOOK_BYTES) throw new ApiError("body_too_large", "webhook body too large");
  await verifyPersonaSignature(request.headers.get("persona-signature"), body, secret);

  let event: v.InferOutput<typeof PersonaEvent> | null = null;
  try {
    const parsed = v.safeParse(PersonaEvent, JSON.parse(body));
    if (parsed.success) event = parsed.output;
  } catch {
    // signed but not JSON: nothing we act on
  }
  const inquiry = event?.data.attributes.payload.data.attributes;
  const status = inquiry ? STATUS[inquiry.status] : undefined;
  const sellerId = v.safeParse(UuidSchema, inquiry?.["reference-id"] ?? "");
  // Events about other things, or inquiries not made by us, are acknowledged and ignored.
  if (!status || !sellerId.success) return json({ received: true, applied: false });

  const applied = await withDb(env, ctx, (sql) => asService(sql, async (tx) => {
    // Only an open account; a late "pending" never undoes a decision (the seller restarts
    // verification through POST /api/kyc/start, which sets pending itself).
    const rows = await tx`
      insert into public.kyc (seller_id, status)
      select s.id, ${status} from public.sellers s where s.id = ${sellerId.output} and s.deleted_at is null
      on conflict (seller_id) do update set status = excluded.status
        where public.kyc.status is distinct from excluded.status
          and not (excluded.status = 'pending' and public.kyc.status in ('approved', 'declined', 'expired', 'needs_review'))
      returning status`;
    return rows.length > 0;
  }));
  console.log(JSON.stringify({ evt: "kyc.webhook", event: event!.data.attributes.name, status, applied }));
  return json({ received: true, applied });
}
