// S5, PR7: KYC through Persona (faked on loopback, tools/fake-persona.ts). Only a status and
// its timestamp are kept; the webhook is believed only with a valid, fresh signature; and
// payouts stay locked until the status is approved.
import { env } from "cloudflare:workers";
import { describe, expect, it, onTestFinished } from "vitest";
import type { Env } from "../../core/env.ts";
import { personaSignature, verifyPersonaSignature } from "../../worker/seller/kyc.ts";
import { as, call, ownerDb, signIn, type TestSeller } from "./helpers.ts";
import { captureConsole, dumpAllKv, dumpAllObjects, occurrences } from "./sinks.ts";

const e = env as unknown as Env & { PERSONA_API_BASE: string; PERSONA_WEBHOOK_SECRET: string };
const SECRET = e.PERSONA_WEBHOOK_SECRET;
const now = () => Math.floor(Date.now() / 1000);

/** An inquiry event in Persona's shape, with personal data Persona would include. */
function event(sellerId: string, status: string, extra: Record<string, unknown> = {}) {
  return JSON.stringify({
    data: {
      type: "event",
      id: `evt_${crypto.randomUUID().replaceAll("-", "")}`,
      attributes: {
        name: `inquiry.${status}`,
        payload: { data: { type: "inquiry", id: "inq_abc123", attributes: { status, "reference-id": sellerId, "name-first": "Ada", "name-last": "Lovelace-Marker", birthdate: "1815-12-10", ...extra } } },
      },
    },
  });
}

async function deliver(body: string, opts: { t?: number; secret?: string; header?: string } = {}) {
  const t = opts.t ?? now();
  const header = opts.header ?? `t=${t},v1=${await personaSignature(opts.secret ?? SECRET, t, body)}`;
  return call("/webhooks/persona", { method: "POST", headers: { "content-type": "application/json", "persona-signature": header }, body });
}

const kycOf = async (s: TestSeller) => ((await (await as(s, "/api/me")).json()) as { seller: { kyc: { status: string; updatedAt: string | null } } }).seller.kyc;

describe("KYC through Persona", () => {
  it("starts an inquiry with the seller as reference, and answers Persona's one-time link", async () => {
    const s = await signIn("kyc");
    const res = await as(s, "/api/kyc/start", { method: "POST" });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { status: string; url: string };
    expect(body.status).toBe("pending");
    expect(body.url.startsWith(`${e.PERSONA_API_BASE}/verify?code=`)).toBe(true);
    const log = (await (await fetch(`${e.PERSONA_API_BASE}/__fake/log`)).json()) as { calls: { path: string; authorized: boolean }[]; inquiries: { referenceId: string }[] };
    expect(log.inquiries.some((i) => i.referenceId === s.id)).toBe(true);
    expect(log.calls.filter((c) => c.path.startsWith("/api/v1/")).every((c) => c.authorized)).toBe(true);
    expect(await kycOf(s)).toMatchObject({ status: "pending" });
  });

  it("PR7: a signed webhook sets the status; only status and its timestamp are kept; payouts unlock only when approved", async () => {
    const logs = captureConsole();
    onTestFinished(logs.stop);
    const s = await signIn("kyc");
    expect(await (await as(s, "/api/payout", { method: "PUT", json: { method: "stripe_connect", stripeAccountId: "acct_1KycSeller00001" } })).json()).toMatchObject({ payoutsLocked: true, kyc: "not_started" });
    // Locked: the database refuses a payout before approval, whatever the balance.
    await ownerDb((sql) => sql`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
                                values (${`kyc-test-${s.id}`}, 'k_kyctest0000000', ${s.id}, now(), now(), 5000000, 0, 1)`);
    const locked = await as(s, "/api/payouts", { method: "POST", json: { amountMicros: 1000000 } });
    expect(locked.status).toBe(403);
    expect(((await locked.json()) as { error: { code: string } }).error.code).toBe("kyc_required");

    const review = await deliver(event(s.id, "needs_review"));
    expect(await review.json()).toEqual({ received: true, applied: true });
    expect(await kycOf(s)).toMatchObject({ status: "needs_review" });
    const before = Date.now();
    expect((await deliver(event(s.id, "approved"))).status).toBe(200);
    const after = Date.now();
    const kyc = await kycOf(s);
    expect(kyc.status).toBe("approved");
    // Stamped when the webhook was applied: between the clock reads around the delivery
    // (Postgres keeps microseconds, the clock here milliseconds).
    expect(Date.parse(kyc.updatedAt!)).toBeGreaterThanOrEqual(before - 1);
    expect(Date.parse(kyc.updatedAt!)).toBeLessThanOrEqual(after + 1);
    expect(await (await as(s, "/api/payout")).json()).toMatchObject({ payoutsLocked: false, kyc: "approved" });
    // Unlocked: the next gate is the payout method (Stripe has not enabled payouts on this
    // account: no account.updated says so), no longer KYC (docs/payouts.md).
    const payout = await as(s, "/api/payouts", { method: "POST", json: { amountMicros: 1000000 } });
    expect(payout.status).toBe(409);
    expect(((await payout.json()) as { error: { code: string } }).error.code).toBe("payout_method_not_ready");
    // Never above the balance (checked by the database whatever the method).
    await ownerDb((sql) => sql`update public.payout_preferences set stripe_payouts_enabled = true where seller_id = ${s.id}`);
    const tooMuch = await as(s, "/api/payouts", { method: "POST", json: { amountMicros: 5000001 } });
    expect(((await tooMuch.json()) as { error: { code: string } }).error.code).toBe("insufficient_balance");

    // A late "pending" does not undo the decision.
    await deliver(event(s.id, "pending"));
    expect((await kycOf(s)).status).toBe("approved");

    // PR7: the kyc table has status and timestamp only, and Persona's personal data is
    // stored nowhere in the database.
    const columns = await ownerDb((sql) => sql`select column_name from information_schema.columns where table_schema = 'public' and table_name = 'kyc' order by ordinal_position`);
    expect(columns.map((c) => c.column_name)).toEqual(["seller_id", "status", "updated_at"]);
    const dump = await ownerDb(async (sql) => {
      const tables = await sql`select table_schema, table_name from information_schema.tables where table_schema in ('public', 'auth', 'internal') and table_type = 'BASE TABLE'`;
      const rows: unknown[] = [];
      for (const t of tables) rows.push(...(await sql.unsafe(`select * from "${t.table_schema}"."${t.table_name}"`)));
      return JSON.stringify(rows);
    });
    expect(dump).toContain(s.id);
    for (const marker of ["Lovelace-Marker", "1815-12-10", "inq_abc123"]) expect(dump).not.toContain(marker);
    // Nor in the log, or any KV namespace or object (the handler's own lines are there).
    const sinks = { logs: logs.text(), ...(await dumpAllKv()), ...(await dumpAllObjects()) };
    expect(sinks.logs).toContain("kyc");
    expect(occurrences(sinks, ["Lovelace-Marker", "1815-12-10", "inq_abc123"])).toEqual([]);
  });

  it("refuses a bad signature, a replayed (old) timestamp, a future one, and no header; the status does not move", async () => {
    const s = await signIn("kyc");
    const body = event(s.id, "approved");
    const refused = async (res: Response) => {
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_signature");
    };
    await refused(await deliver(body, { secret: "wbhsec_wrong" }));
    await refused(await deliver(body, { t: now() - 600 })); // a captured delivery, replayed 10 minutes later
    await refused(await deliver(body, { t: now() + 600 }));
    await refused(await call("/webhooks/persona", { method: "POST", headers: { "content-type": "application/json" }, body }));
    // The signature covers the body: the same header on another body fails.
    const t = now();
    const header = `t=${t},v1=${await personaSignature(SECRET, t, body)}`;
    await refused(await deliver(event(s.id, "approved", { tampered: true }), { header }));
    // A header whose timestamp was changed to look fresh no longer matches its signature.
    const stale = now() - 600;
    await refused(await deliver(body, { header: `t=${now()},v1=${await personaSignature(SECRET, stale, body)}` }));
    expect((await kycOf(s)).status).toBe("not_started");
  });

  it("accepts any matching pair while Persona rotates the secret", async () => {
    const body = event(crypto.randomUUID(), "approved");
    const t = now();
    const header = `t=${t},v1=${await personaSignature("wbhsec_old", t, body)} t=${t},v1=${await personaSignature(SECRET, t, body)}`;
    await expect(verifyPersonaSignature(header, body, SECRET)).resolves.toBeUndefined();
    await expect(verifyPersonaSignature(header, body, "wbhsec_other")).rejects.toMatchObject({ code: "invalid_signature" });
  });

  it("ignores events about no seller of ours", async () => {
    const res = await deliver(event(crypto.randomUUID(), "approved"));
    expect(await res.json()).toEqual({ received: true, applied: false });
    const other = await deliver(JSON.stringify({ data: { type: "event", attributes: { name: "account.created", payload: { data: { type: "account", attributes: {} } } } } }));
    expect(await other.json()).toEqual({ received: true, applied: false });
  });
});
