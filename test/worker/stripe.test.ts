// Card top-ups through Stripe: the real `stripe` client against a fake Stripe API on
// loopback (started by global-setup): the Checkout Session request, and the webhook,
// verified with Stripe's signature scheme by the library and crediting a paid session
// exactly once however often it is delivered.
import { env } from "cloudflare:workers";
import Stripe from "stripe";
import { describe, expect, it } from "vitest";
import type { Env } from "../../core/env.ts";
import { stripeTopUpHandler, stripeWebhookHandler } from "../../worker/payments/stripe.ts";

const e = env as unknown as Env;
const walletOf = (id: string) => e.BUYER_WALLET.get(e.BUYER_WALLET.idFromName(id));
const hexId = () => [...crypto.getRandomValues(new Uint8Array(32))].map((b) => b.toString(16).padStart(2, "0")).join("");
const SECRET = e.STRIPE_WEBHOOK_SECRET!;
const cryptoProvider = Stripe.createSubtleCryptoProvider();
/** The Stripe-Signature header Stripe would send, made by the library's own test helper. */
const stripeSignatureHeader = (payload: string, secret: string, timestamp = Math.floor(Date.now() / 1000)) =>
  Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret, timestamp, cryptoProvider });

const topUp = (body: unknown) =>
  stripeTopUpHandler(new Request("https://cn2.test/api/credit/topup", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }), e);

const webhook = (payload: string, signature: string | null) =>
  stripeWebhookHandler(new Request("https://cn2.test/webhooks/stripe", { method: "POST", headers: signature === null ? {} : { "stripe-signature": signature }, body: payload }), e);

async function fake<T>(path: string, method = "GET"): Promise<T> {
  const res = await fetch(`${e.STRIPE_API_BASE}${path}`, { method });
  if (!res.ok) throw new Error(`fake stripe ${path}: ${res.status}`);
  return res.json() as Promise<T>;
}

/** Open a Checkout Session for a new buyer, then complete it on the fake: the webhook Stripe would send. */
async function paidSession(amountMicros = 5_000_000) {
  const buyerId = hexId();
  const res = await topUp({ buyerId, amountMicros });
  expect(res.status).toBe(201);
  const session = (await res.json()) as { sessionId: string; url: string; amountMicros: number };
  const completed = await fake<{ event: { id: string }; payload: string; signature: string }>(`/__fake/sessions/${session.sessionId}/complete`, "POST");
  return { buyerId, session, ...completed };
}

const balance = async (buyerId: string) => (await walletOf(buyerId).summary()).balanceMicros;

describe("Stripe top-ups", () => {
  it("creates a Checkout Session through the stripe client (form encoded, bearer key, API version, idempotency key)", async () => {
    await fake("/__fake/reset", "POST");
    const buyerId = hexId();
    const res = await topUp({ buyerId, amountMicros: 12_340_000 });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { sessionId: string; url: string };
    expect(body.sessionId).toMatch(/^cs_test_/);
    expect(body.url).toContain(body.sessionId);
    const { requests } = await fake<{ requests: { path: string; authorized: boolean; idempotencyKey: string | null; stripeVersion: string | null; form: Record<string, string> }[] }>("/__fake/log");
    const sent = requests.find((r) => r.path === "/v1/checkout/sessions")!;
    expect(sent.authorized).toBe(true);
    expect(sent.stripeVersion).toBe(Stripe.API_VERSION);
    expect(sent.idempotencyKey).toMatch(/^cn2-topup-/);
    expect(sent.form).toMatchObject({
      mode: "payment",
      "line_items[0][price_data][currency]": "usd",
      "line_items[0][price_data][unit_amount]": "1234",
      client_reference_id: buyerId,
      "metadata[cn2_buyer_id]": buyerId,
    });
  });

  it("refuses bad top-up input with clear errors", async () => {
    for (const body of [{ buyerId: "nope", amountMicros: 5_000_000 }, { buyerId: hexId(), amountMicros: 5 }, { buyerId: hexId(), amountMicros: 1_000_001 }, { buyerId: hexId() }]) {
      await expect(topUp(body)).rejects.toMatchObject({ code: "invalid_request" });
    }
  });

  it("a paid session's webhook credits the buyer", async () => {
    const { buyerId, payload, signature } = await paidSession(5_000_000);
    const res = await webhook(payload, signature);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ received: true, credited: true });
    expect(await balance(buyerId)).toBe(5_000_000);
  });

  it("a webhook with a bad signature is refused and credits nothing", async () => {
    const { buyerId, payload, signature } = await paidSession();
    const t = Math.floor(Date.now() / 1000);
    const cases: (string | null)[] = [
      null,
      "",
      `t=${t}`,
      `t=${t},v1=${"0".repeat(64)}`,
      await stripeSignatureHeader(payload, "whsec_someone_else", t),
      await stripeSignatureHeader(payload, SECRET, t - 3600), // outside the 5-minute tolerance
      await stripeSignatureHeader(payload.replace('"paid"', '"paid" '), SECRET, t).then((h) => h), // signed other bytes
    ];
    for (const sig of cases) {
      const res = await webhook(payload, sig);
      expect(res.status, String(sig)).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("bad_signature");
    }
    // The body changed after signing: refused too.
    const tampered = payload.replace(/"amount_subtotal":\d+/, '"amount_subtotal":99999999');
    expect((await webhook(tampered, signature)).status).toBe(400);
    expect(await balance(buyerId)).toBe(0);
  });

  it("a replayed event credits once; so does a second event for the same session", async () => {
    const { buyerId, payload, signature, event } = await paidSession(3_000_000);
    const results = await Promise.all(Array.from({ length: 5 }, () => webhook(payload, signature)));
    const bodies = (await Promise.all(results.map((r) => r.json()))) as { credited: boolean }[];
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(bodies.filter((b) => b.credited)).toHaveLength(1);
    // Stripe may also send async_payment_succeeded for the same session.
    const second = JSON.stringify({ ...JSON.parse(payload), id: `${event.id}_2`, type: "checkout.session.async_payment_succeeded" });
    const res = await webhook(second, await stripeSignatureHeader(second, SECRET));
    expect(await res.json()).toEqual({ received: true, credited: false });
    expect(await balance(buyerId)).toBe(3_000_000);
    expect((await walletOf(buyerId).summary()).history.filter((h) => h.kind === "topup")).toHaveLength(1);
  });

  it("unpaid sessions, other events and foreign sessions are acknowledged without credit", async () => {
    const buyerId = hexId();
    const unpaid = JSON.stringify({ id: "evt_unpaid", type: "checkout.session.completed", data: { object: { id: "cs_test_unpaid", object: "checkout.session", payment_status: "unpaid", currency: "usd", amount_total: 500, metadata: { cn2_buyer_id: buyerId } } } });
    expect(await (await webhook(unpaid, await stripeSignatureHeader(unpaid, SECRET))).json()).toEqual({ received: true, credited: false, reason: "not_paid" });
    const other = JSON.stringify({ id: "evt_other", type: "customer.created", data: { object: { id: "cus_1" } } });
    expect(await (await webhook(other, await stripeSignatureHeader(other, SECRET))).json()).toEqual({ received: true, ignored: true });
    const foreign = JSON.stringify({ id: "evt_foreign", type: "checkout.session.completed", data: { object: { id: "cs_test_foreign", object: "checkout.session", payment_status: "paid", currency: "usd", amount_total: 500, metadata: {} } } });
    expect(await (await webhook(foreign, await stripeSignatureHeader(foreign, SECRET))).json()).toEqual({ received: true, credited: false, reason: "no_buyer" });
    expect(await balance(buyerId)).toBe(0);
  });

  it("verifies Stripe's documented scheme through the library: several v1 signatures, any order, tolerance", async () => {
    const buyerId = hexId();
    const payload = JSON.stringify({ id: "evt_scheme", type: "checkout.session.completed", data: { object: { id: "cs_test_scheme", object: "checkout.session", payment_status: "paid", currency: "usd", amount_total: 200, metadata: { cn2_buyer_id: buyerId } } } });
    const t = Math.floor(Date.now() / 1000);
    const good = await stripeSignatureHeader(payload, SECRET, t);
    const v1 = good.split("v1=")[1];
    // A stale signature next to a good one (secret rotation), v1 before t: accepted.
    expect((await webhook(payload, `v1=${"a".repeat(64)},v1=${v1},t=${t}`)).status).toBe(200);
    // Older than the 5-minute tolerance: refused.
    const old = await stripeSignatureHeader(payload, SECRET, t - 301);
    expect((await webhook(payload, old)).status).toBe(400);
    expect(await balance(buyerId)).toBe(2_000_000);
  });
});
