// Seller payouts through Stripe Connect (issue 12), through the Worker's entry: the real
// `stripe` client against the fake Stripe on loopback (test/fake-stripe.ts), Postgres
// behind Hyperdrive, seller webhooks delivered to the loopback receiver. Onboarding with
// controller properties and account.updated; withdrawals on request and on the Cron
// Trigger; exactly once under concurrency, replays and a cron fired twice; failures that
// give the money back; ops listing and retry.
import { env } from "cloudflare:workers";
import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../worker/index.ts";
import type { Env } from "../../core/env.ts";
import { periodKey } from "../../worker/payouts/schedule.ts";
import type { PayoutView } from "../../worker/payouts/store.ts";
import { OPS, as, call, ownerDb, signIn, type TestSeller } from "./helpers.ts";
import { createHook, receiverHook, received, waitFor } from "./webhooks-helpers.ts";

const e = env as unknown as Env;

interface FakeTransfer { id: string; amount: number; destination: string; metadata: Record<string, string> }
interface Signed { event: { id: string; type: string }; payload: string; signature: string }

async function fake<T>(path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${e.STRIPE_API_BASE}${path}`, body === undefined ? {} : { method: "POST", body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`fake stripe ${path}: ${res.status} ${await res.text()}`);
  return res.json() as Promise<T>;
}
const transfersTo = async (account: string) => (await fake<{ transfers: FakeTransfer[] }>("/__fake/transfers")).transfers.filter((t) => t.destination === account);
/** Deliver a Stripe event to the Worker's webhook endpoint, signed as the fake signed it. */
const deliver = (s: Signed) => call("/webhooks/stripe", { method: "POST", headers: { "stripe-signature": s.signature, "content-type": "application/json" }, body: s.payload });

let flushCounter = 0;
/** Earnings for a seller, as a key object's flush records them (net = gross - fee). */
async function earn(seller: TestSeller, netMicros: number) {
  const keyId = `k_payouttest${(flushCounter++).toString().padStart(6, "0")}`;
  await ownerDb((sql) => sql`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
    values (${`${keyId}:${seller.id.slice(0, 8)}:${flushCounter}`}, ${keyId}, ${seller.id}, now(), now(), ${netMicros}, 0, 1)`);
}
const approveKyc = (seller: TestSeller) => ownerDb((sql) => sql`insert into public.kyc (seller_id, status) values (${seller.id}, 'approved')
  on conflict (seller_id) do update set status = 'approved'`);

async function balanceOf(seller: TestSeller) {
  const res = await as(seller, "/api/earnings");
  return ((await res.json()) as { balance: { earnedMicros: number; withdrawnMicros: number; availableMicros: number } }).balance;
}

/** Stripe onboarding through the API, finished on the fake; its account.updated delivered. */
async function onboard(seller: TestSeller, schedule: "manual" | "weekly" = "manual") {
  const res = await as(seller, "/api/payout/stripe/onboard", { method: "POST", json: {} });
  expect(res.status).toBe(201);
  const started = (await res.json()) as { accountId: string; url: string; ready: boolean };
  expect(started.ready).toBe(false);
  const updated = await fake<Signed>(`/__fake/accounts/${started.accountId}/onboard`, {});
  expect((await deliver(updated)).status).toBe(200);
  expect((await as(seller, "/api/payout/schedule", { method: "PUT", json: { schedule } })).status).toBe(200);
  return { accountId: started.accountId, url: started.url, updated };
}

/** A seller with approved KYC, a ready Stripe account and a balance. */
async function readySeller(label: string, netMicros: number, schedule: "manual" | "weekly" = "manual") {
  const seller = await signIn(label);
  await approveKyc(seller);
  const { accountId } = await onboard(seller, schedule);
  if (netMicros > 0) await earn(seller, netMicros);
  return { seller, accountId };
}

const withdraw = (seller: TestSeller, body: unknown = {}) => as(seller, "/api/payouts", { method: "POST", json: body });
const errorCode = async (res: Response) => ((await res.json()) as { error: { code: string } }).error.code;
const payoutEvents = (id: string) => ownerDb(async (sql) => (await sql`select status from public.payout_events where payout_id = ${id} order by id`).map((r) => r.status as string));

describe("payout onboarding (Stripe Connect)", () => {
  it("creates a connected account with controller properties, returns its onboarding link, and follows account.updated until payouts are enabled", async () => {
    const seller = await signIn("onboard");
    await fake("/__fake/reset", {});
    const res = await as(seller, "/api/payout/stripe/onboard", { method: "POST", json: { returnUrl: "https://cn2.test/done" } });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { accountId: string; url: string; expiresAt: string; ready: boolean };
    expect(body.accountId).toMatch(/^acct_/);
    expect(body.url).toContain(`/connect/onboarding/${body.accountId}/`);
    expect(body.ready).toBe(false);
    const { requests } = await fake<{ requests: { path: string; idempotencyKey: string | null; form: Record<string, string> }[] }>("/__fake/log");
    const created = requests.find((r) => r.path === "/v1/accounts")!;
    // The current form of an Express-style account: controller properties, no legacy `type`.
    expect(created.form).toMatchObject({
      "controller[fees][payer]": "application",
      "controller[losses][payments]": "application",
      "controller[requirement_collection]": "stripe",
      "controller[stripe_dashboard][type]": "express",
      "capabilities[transfers][requested]": "true",
      "metadata[cn2_seller_id]": seller.id,
    });
    expect(created.form.type).toBeUndefined();
    expect(created.idempotencyKey).toBe(`cn2-connect-account-${seller.id}`);
    expect(requests.find((r) => r.path === "/v1/account_links")!.form).toMatchObject({ account: body.accountId, type: "account_onboarding", return_url: "https://cn2.test/done" });

    // Asking again gives a new link for the same account.
    const again = (await (await as(seller, "/api/payout/stripe/onboard", { method: "POST" })).json()) as { accountId: string };
    expect(again.accountId).toBe(body.accountId);

    // Not ready until Stripe says payouts are enabled.
    const notYet = await fake<Signed>(`/__fake/accounts/${body.accountId}/onboard`, { payoutsEnabled: false });
    expect(await (await deliver(notYet)).json()).toMatchObject({ received: true, payoutsEnabled: false });
    expect(((await (await as(seller, "/api/payout")).json()) as { preference: { ready: boolean } }).preference.ready).toBe(false);
    const enabled = await fake<Signed>(`/__fake/accounts/${body.accountId}/onboard`, {});
    expect(await (await deliver(enabled)).json()).toMatchObject({ received: true, applied: true, payoutsEnabled: true });
    const state = (await (await as(seller, "/api/payout")).json()) as { preference: { method: string; stripeAccountId: string; ready: boolean; schedule: string } };
    expect(state.preference).toMatchObject({ method: "stripe_connect", stripeAccountId: body.accountId, ready: true, schedule: "weekly" });
    // A replayed account.updated changes nothing.
    expect(await (await deliver(enabled)).json()).toMatchObject({ applied: false });
  });

  it("confirms a USDC address only when the seller sends the stored one", async () => {
    const seller = await signIn("usdc-confirm");
    const address = "0x52908400098527886E0F7030069857D2E4169EE7";
    expect((await as(seller, "/api/payout/confirm", { method: "POST", json: { evmAddress: address } })).status).toBe(409);
    expect((await as(seller, "/api/payout", { method: "PUT", json: { method: "usdc_tempo", evmAddress: address } })).status).toBe(200);
    const wrong = await as(seller, "/api/payout/confirm", { method: "POST", json: { evmAddress: "0x8617E340B3D01FA5F11F306F4090FD50E238070D" } });
    expect(wrong.status).toBe(400);
    const ok = await as(seller, "/api/payout/confirm", { method: "POST", json: { evmAddress: address.toLowerCase() } });
    expect(await ok.json()).toMatchObject({ ready: true });
    // Changing the address needs a new confirmation.
    await as(seller, "/api/payout", { method: "PUT", json: { method: "usdc_tempo", evmAddress: "0x8617E340B3D01FA5F11F306F4090FD50E238070D" } });
    expect(((await (await as(seller, "/api/payout")).json()) as { preference: { ready: boolean } }).preference.ready).toBe(false);
  });
});

describe("withdrawals through Stripe", () => {
  it("a verified seller is paid exactly its balance in whole cents; the remainder stays; transfer.created marks it paid", async () => {
    const { seller, accountId } = await readySeller("paid", 12_345_678);
    const hook = await receiverHook();
    await createHook(seller, hook.url, ["payout.created", "payout.sent", "payout.paid"]);
    const res = await withdraw(seller);
    expect(res.status).toBe(201);
    const { payout } = (await res.json()) as { payout: PayoutView };
    expect(payout).toMatchObject({ method: "stripe_connect", destination: accountId, amountMicros: 12_340_000, amountUnits: 1234, status: "sent" });
    const transfers = await transfersTo(accountId);
    expect(transfers).toHaveLength(1);
    expect(transfers[0]).toMatchObject({ id: payout.externalRef, amount: 1234, metadata: { cn2_payout_id: payout.id } });
    const { requests } = await fake<{ requests: { path: string; idempotencyKey: string | null }[] }>("/__fake/log");
    expect(requests.filter((r) => r.path === "/v1/transfers" && r.idempotencyKey === `cn2-payout-${payout.id}`).length).toBeGreaterThanOrEqual(1);
    expect(await balanceOf(seller)).toEqual({ earnedMicros: 12_345_678, withdrawnMicros: 12_340_000, availableMicros: 5_678 });

    const created = await fake<Signed>(`/__fake/transfers/${transfers[0]!.id}/event`, { type: "transfer.created" });
    expect(await (await deliver(created)).json()).toMatchObject({ received: true, applied: true, status: "paid" });
    expect(await payoutEvents(payout.id)).toEqual(["requested", "sent", "paid"]);
    const types = await waitFor("payout webhooks", async () => {
      const got = (await received(hook.name)).map((d) => d.eventType);
      return got.includes("payout.paid") && got.includes("payout.sent") && got.includes("payout.created") ? got : undefined;
    });
    expect(types.filter((t) => t === "payout.paid")).toHaveLength(1);
  });

  it("an unverified seller gets kyc_required; a seller without a method gets payout_method_required; an unready one payout_method_not_ready", async () => {
    const unverified = await signIn("unverified");
    await onboard(unverified);
    await earn(unverified, 5_000_000);
    const locked = await withdraw(unverified);
    expect(locked.status).toBe(403);
    expect(await errorCode(locked)).toBe("kyc_required");

    const noMethod = await signIn("nomethod");
    await approveKyc(noMethod);
    await earn(noMethod, 5_000_000);
    const none = await withdraw(noMethod);
    expect(none.status).toBe(409);
    expect(await errorCode(none)).toBe("payout_method_required");

    const unready = await signIn("unready");
    await approveKyc(unready);
    await earn(unready, 5_000_000);
    await as(unready, "/api/payout/stripe/onboard", { method: "POST" });
    expect(await errorCode(await withdraw(unready))).toBe("payout_method_not_ready");
    // Below the minimum (one cent here): nothing is asked of Stripe.
    const { seller: poor } = await readySeller("poor", 9_999);
    expect(await errorCode(await withdraw(poor))).toBe("below_minimum");
    for (const s of [unverified, noMethod, unready, poor]) expect((await balanceOf(s)).withdrawnMicros).toBe(0);
  });

  it("10 concurrent withdrawal requests make one transfer", async () => {
    const { seller, accountId } = await readySeller("concurrent", 7_000_000);
    const results = await Promise.all(Array.from({ length: 10 }, () => withdraw(seller)));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    const refused = await Promise.all(results.filter((r) => r.status !== 201).map(errorCode));
    expect(refused.every((c) => ["payout_in_progress", "below_minimum", "insufficient_balance"].includes(c))).toBe(true);
    expect(await transfersTo(accountId)).toHaveLength(1);
    expect((await transfersTo(accountId))[0]!.amount).toBe(700);
    expect(await balanceOf(seller)).toMatchObject({ withdrawnMicros: 7_000_000, availableMicros: 0 });
  });

  it("a failed transfer restores the balance and sends payout.failed; ops list it and retry it once", async () => {
    const { seller, accountId } = await readySeller("failing", 3_000_000);
    const hook = await receiverHook();
    await createHook(seller, hook.url, ["payout.failed", "payout.sent"]);
    await fake(`/__fake/accounts/${accountId}/fail-transfers`, { code: "insufficient_funds" });
    const res = await withdraw(seller);
    expect(res.status).toBe(201);
    const { payout } = (await res.json()) as { payout: PayoutView };
    expect(payout).toMatchObject({ status: "failed", failureCode: "stripe.insufficient_funds", externalRef: null });
    expect(await transfersTo(accountId)).toHaveLength(0);
    expect(await balanceOf(seller)).toEqual({ earnedMicros: 3_000_000, withdrawnMicros: 0, availableMicros: 3_000_000 });
    expect(await payoutEvents(payout.id)).toEqual(["requested", "sent", "failed"]);
    const failed = await waitFor("payout.failed", async () => (await received(hook.name)).find((d) => d.eventType === "payout.failed"));
    expect(JSON.parse(failed.body)).toMatchObject({ type: "payout.failed", data: { payoutId: payout.id, amountMicros: 3_000_000, failureCode: "stripe.insufficient_funds" } });

    // Ops: listed as failed; a retry (after the cause is fixed) pays once, however often asked.
    const ops = (path: string, method = "GET") => call(path, { method, headers: { authorization: `Bearer ${OPS}` } });
    const listed = (await (await ops("/ops/payouts?status=failed")).json()) as { payouts: (PayoutView & { sellerId: string })[] };
    expect(listed.payouts).toContainEqual(expect.objectContaining({ id: payout.id, sellerId: seller.id, status: "failed" }));
    expect((await ops(`/ops/payouts/${payout.id}/retry`, "POST")).status).toBe(201); // still failing at Stripe: a failed retry
    await fake(`/__fake/accounts/${accountId}/fail-transfers`, {});
    const firstRetry = (await (await ops(`/ops/payouts/${payout.id}/retry`, "POST")).json()) as { payout: PayoutView };
    expect(firstRetry.payout).toMatchObject({ status: "failed", retryOf: payout.id });
    // The retry of the first failure exists (and failed): retry that one.
    const second = await ops(`/ops/payouts/${firstRetry.payout.id}/retry`, "POST");
    const again = await ops(`/ops/payouts/${firstRetry.payout.id}/retry`, "POST");
    const [a, b] = (await Promise.all([second.json(), again.json()])) as { payout: PayoutView }[];
    expect(a!.payout.id).toBe(b!.payout.id);
    expect(a!.payout).toMatchObject({ status: "sent", amountMicros: 3_000_000, retryOf: firstRetry.payout.id });
    expect(await transfersTo(accountId)).toHaveLength(1);
    expect(await balanceOf(seller)).toMatchObject({ withdrawnMicros: 3_000_000, availableMicros: 0 });
    expect((await ops("/ops/payouts/not-a-uuid/retry", "POST")).status).toBe(400);
    expect((await call("/ops/payouts")).status).toBe(401);
  });

  it("a replayed Stripe webhook changes nothing", async () => {
    const { seller, accountId } = await readySeller("replayed", 2_000_000);
    const { payout } = (await (await withdraw(seller)).json()) as { payout: PayoutView };
    const [transfer] = await transfersTo(accountId);
    const created = await fake<Signed>(`/__fake/transfers/${transfer!.id}/event`, { type: "transfer.created" });
    const first = await deliver(created);
    expect(await first.json()).toMatchObject({ applied: true, status: "paid" });
    const replays = await Promise.all(Array.from({ length: 5 }, () => deliver(created)));
    for (const r of replays) expect(await r.json()).toMatchObject({ received: true, applied: false, status: "paid" });
    // A reversal arriving after it was paid does not un-pay it or give the money back twice.
    const reversed = await fake<Signed>(`/__fake/transfers/${transfer!.id}/event`, { type: "transfer.reversed" });
    expect(await (await deliver(reversed)).json()).toMatchObject({ applied: false, status: "paid" });
    expect(await payoutEvents(payout.id)).toEqual(["requested", "sent", "paid"]);
    expect(await balanceOf(seller)).toMatchObject({ withdrawnMicros: 2_000_000, availableMicros: 0 });
  });

  it("a transfer reversed before it was confirmed fails the payout and gives the money back", async () => {
    const { seller, accountId } = await readySeller("reversed", 1_500_000);
    const { payout } = (await (await withdraw(seller)).json()) as { payout: PayoutView };
    const [transfer] = await transfersTo(accountId);
    const reversed = await fake<Signed>(`/__fake/transfers/${transfer!.id}/event`, { type: "transfer.reversed" });
    expect(await (await deliver(reversed)).json()).toMatchObject({ applied: true, status: "failed" });
    expect(await payoutEvents(payout.id)).toEqual(["requested", "sent", "failed"]);
    expect(await balanceOf(seller)).toMatchObject({ withdrawnMicros: 0, availableMicros: 1_500_000 });
  });
});

describe("scheduled payouts (Cron Trigger)", () => {
  /** The Worker's own scheduled handler, as the Cron Trigger calls it. */
  async function cron() {
    const ctx = createExecutionContext();
    await worker.scheduled!(createScheduledController({ scheduledTime: Date.now(), cron: "0 * * * *" }), e, ctx);
    await waitOnExecutionContext(ctx);
  }

  it("a cron fired twice (and at once) pays each due seller once", async () => {
    const a = await readySeller("cron-a", 4_200_000, "weekly");
    const b = await readySeller("cron-b", 1_230_000, "weekly");
    const manual = await readySeller("cron-manual", 5_000_000, "manual");
    await Promise.all([cron(), cron()]);
    await cron();
    expect(await transfersTo(a.accountId)).toHaveLength(1);
    expect(await transfersTo(b.accountId)).toHaveLength(1);
    expect((await transfersTo(a.accountId))[0]!.amount).toBe(420);
    expect((await transfersTo(b.accountId))[0]!.amount).toBe(123);
    expect(await transfersTo(manual.accountId)).toHaveLength(0);
    const key = periodKey("weekly", new Date());
    const rows = await ownerDb((sql) => sql`select seller_id, schedule_key, status from public.payouts where seller_id in ${sql([a.seller.id, b.seller.id, manual.seller.id])}`);
    expect(rows.map((r) => ({ ...r })).sort((x, y) => String(x.seller_id).localeCompare(String(y.seller_id)))).toEqual(
      [a, b].map((s) => ({ seller_id: s.seller.id, schedule_key: key, status: "sent" })).sort((x, y) => x.seller_id.localeCompare(y.seller_id)),
    );
    // New earnings in the same week wait for the next period: still one transfer each.
    await earn(a.seller, 1_000_000);
    await cron();
    expect(await transfersTo(a.accountId)).toHaveLength(1);
  });

  it("names each period: ISO weeks, days, months", () => {
    expect(periodKey("weekly", new Date("2026-12-31T12:00:00Z"))).toBe("weekly:2026-W53");
    expect(periodKey("weekly", new Date("2027-01-04T00:00:00Z"))).toBe("weekly:2027-W01");
    expect(periodKey("weekly", new Date("2026-12-02T03:00:00Z"))).toBe("weekly:2026-W49");
    expect(periodKey("daily", new Date("2026-12-02T03:00:00Z"))).toBe("daily:2026-12-02");
    expect(periodKey("monthly", new Date("2026-12-02T03:00:00Z"))).toBe("monthly:2026-12");
    expect(periodKey("manual", new Date())).toBeNull();
  });
});
