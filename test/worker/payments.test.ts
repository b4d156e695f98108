// Payments building blocks inside workerd (B1, B2, B6, P6, P7): the 402 challenge, a
// paid request charged once with a receipt, replays, every refusal with its stable code
// and nothing debited, refunds exactly once, and the raw principal in no sink.
import { runDurableObjectAlarm } from "cloudflare:test";
import { createHmac } from "node:crypto";
import { Challenge, Credential, Receipt } from "mppx";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { creditClient, generateBuyerKey, type BuyerKey } from "../../buyer/keys.ts";
import { balanceHandler, budgetHandler } from "../../worker/payments/credit.ts";
import { issueChallenges } from "../../worker/payments/server.ts";
import { spendKey } from "../../objects/buyer-wallet/spend.ts";
import * as payments from "../../worker/payments/index.ts";
import {
  ROUTE, URL_, asFetch, balanceOf, payingFetch, chatInit, credentialFor, dumpKv, dumpObject, e, fund, newRequestId, paidEndpoint, problem, wallet, type Served,
} from "./payments-helpers.ts";

const claimsOf = async (buyerId: string) => JSON.parse(await dumpObject(wallet(buyerId))).rows.find((t: Record<string, unknown>) => "claims" in t).claims as { proof_id: string }[];

describe("402 challenge (B1)", () => {
  it("PR8: an unpaid request gets 402 with WWW-Authenticate: Payment and a problem+json body", async () => {
    const res = await paidEndpoint({ price: 1234 })(new Request(URL_, chatInit()));
    expect(res.status).toBe(402);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(res.headers.get("www-authenticate")).toMatch(/^Payment /);
    const [challenge, ...others] = Challenge.fromResponseList(res);
    expect(others).toHaveLength(0); // tempo is off unless configured
    expect(challenge!.method).toBe("credit");
    expect(challenge!.intent).toBe("charge");
    expect(challenge!.request).toEqual({ amount: "1234", currency: "usd" });
    const ttl = Date.parse(challenge!.expires!) - Date.now();
    expect(ttl).toBeGreaterThan(4 * 60_000);
    expect(ttl).toBeLessThanOrEqual(5 * 60_000);
    expect(Challenge.verify(challenge!, { secretKey: (e as { MPP_SECRET_KEY: string }).MPP_SECRET_KEY })).toBe(true);
    const body = await problem(res);
    expect(body).toMatchObject({ status: 402, code: "payment_required", type: "https://paymentauth.org/problems/payment-required" });
    expect(body.error.code).toBe("payment_required");
    expect(body.requestId).toBe(res.headers.get("cn2-request-id"));
  });

  it("every challenge is unique, even for equal quotes (proof ids never collide)", async () => {
    const [a] = await issueChallenges(e, { amountMicros: 10, route: ROUTE });
    const [b] = await issueChallenges(e, { amountMicros: 10, route: ROUTE });
    expect(a!.id).not.toBe(b!.id);
  });
});

describe("paying with credit (B1, B2, P6)", () => {
  let key: BuyerKey;
  beforeAll(async () => {
    key = await generateBuyerKey();
    await fund(key.buyerId, 100_000);
  });

  it("PR8: a buyer with no account pays anonymously: charged once, with a receipt", async () => {
    const served: Served[] = [];
    const pay = payingFetch(key, paidEndpoint({ price: 1000, served }));
    const before = await balanceOf(key.buyerId);
    const res = await pay(URL_, chatInit());
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
    expect(await balanceOf(key.buyerId)).toBe(before - 1000);
    expect(served).toHaveLength(1);
    expect(served[0]!.payment).toEqual({ buyerId: key.buyerId, amountMicros: 1000, method: "credit", proofId: expect.any(String) });
    const receipt = Receipt.fromResponse(res) as Record<string, unknown>;
    expect(receipt).toMatchObject({ method: "credit", status: "success", requestId: served[0]!.requestId, amountMicros: 1000, refunded: false, reference: served[0]!.payment!.proofId });
    expect(payments.parseReceipt(res.headers.get("payment-receipt")!)).toMatchObject({ requestId: served[0]!.requestId, amountMicros: 1000 });
  });

  it("a receipt's signature is HMAC-SHA256 of its fields under a key derived from the MPP secret (the format disputes rely on)", async () => {
    const served: Served[] = [];
    const res = await payingFetch(key, paidEndpoint({ price: 1000, served }))(URL_, chatInit());
    const value = res.headers.get("payment-receipt")!;
    const r = payments.parseReceipt(value)!;
    // Computed independently (node:crypto) from the documented construction.
    const secret = (e as { MPP_SECRET_KEY: string }).MPP_SECRET_KEY;
    const receiptKey = createHmac("sha256", secret).update("cn2-receipt-key/v1").digest();
    const fields = ["cn2-receipt/v1", r.method, r.reference, r.requestId, String(r.amountMicros), r.currency, String(r.refunded), r.timestamp];
    expect(r.signature).toBe(createHmac("sha256", receiptKey).update(fields.join("\n")).digest("base64url"));
    expect(await payments.verifyReceipt(e, value)).toMatchObject({ requestId: served[0]!.requestId });
    // One field changed: the signature no longer verifies.
    const forged = Receipt.serialize(Receipt.from({ ...r, amountMicros: 1 }));
    expect(await payments.verifyReceipt(e, forged)).toBeNull();
    expect(await payments.verifyReceipt(e, Receipt.serialize(Receipt.from({ ...r, signature: "!!" })))).toBeNull();
  });

  it("P-256 keys pay too", async () => {
    const p256 = await generateBuyerKey("P-256");
    expect(p256.did).toMatch(/^did:key:zDn/);
    await fund(p256.buyerId, 5000);
    const pay = payingFetch(p256, paidEndpoint({ price: 700 }));
    expect((await pay(URL_, chatInit())).status).toBe(200);
    expect(await balanceOf(p256.buyerId)).toBe(4300);
  });

  it("PR23: 12 concurrent replays of one credential: exactly one is served, the balance is debited once", async () => {
    const served: Served[] = [];
    const endpoint = paidEndpoint({ price: 500, served });
    const { credential } = await credentialFor(key, { price: 500 });
    const before = await balanceOf(key.buyerId);
    const results = await Promise.all(Array.from({ length: 12 }, () => endpoint(new Request(URL_, chatInit({ authorization: credential })))));
    const ok = results.filter((r) => r.status === 200);
    expect(ok).toHaveLength(1);
    const refused = results.filter((r) => r.status === 402);
    expect(refused).toHaveLength(11);
    for (const r of refused) expect((await problem(r)).code).toBe("replayed");
    expect(served).toHaveLength(1);
    expect(await balanceOf(key.buyerId)).toBe(before - 500);
    // And later, once more: still refused, with a fresh challenge to pay instead.
    const late = await endpoint(new Request(URL_, chatInit({ authorization: credential })));
    expect(late.status).toBe(402);
    expect((await problem(late)).code).toBe("replayed");
    expect(Challenge.fromResponseList(late)).toHaveLength(1);
  });

  it("PR23: a replay is refused after the wallet object restarts too (claims are stored, not in memory)", async () => {
    const endpoint = paidEndpoint({ price: 100 });
    const { credential } = await credentialFor(key, { price: 100 });
    expect((await endpoint(new Request(URL_, chatInit({ authorization: credential })))).status).toBe(200);
    const { evictDurableObject } = await import("cloudflare:test") as unknown as { evictDurableObject?: (s: DurableObjectStub) => Promise<void> };
    if (evictDurableObject) await evictDurableObject(wallet(key.buyerId));
    const again = await endpoint(new Request(URL_, chatInit({ authorization: credential })));
    expect((await problem(again)).code).toBe("replayed");
  });
});

describe("refusals carry a stable code and debit nothing (P6)", () => {
  let key: BuyerKey;
  let other: BuyerKey;
  const endpoint = paidEndpoint({ price: 1000 });
  beforeAll(async () => {
    key = await generateBuyerKey();
    other = await generateBuyerKey();
    await fund(key.buyerId, 50_000);
  });

  async function expectRefused(authorization: string, code: string, opts: { url?: string; rechallenge?: boolean } = {}) {
    const before = await balanceOf(key.buyerId);
    const claimsBefore = (await claimsOf(key.buyerId)).length;
    const res = await endpoint(new Request(opts.url ?? URL_, chatInit({ authorization })));
    expect(res.status).toBe(402);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    const body = await problem(res);
    expect(body.code).toBe(code);
    expect(body.error.code).toBe(code);
    expect(body.detail.length).toBeGreaterThan(0);
    expect(await balanceOf(key.buyerId)).toBe(before);
    expect((await claimsOf(key.buyerId)).length).toBe(claimsBefore);
    if (opts.rechallenge !== undefined) expect(res.headers.has("www-authenticate")).toBe(opts.rechallenge);
    return body;
  }

  it("expired: the challenge's time ran out (a fresh one is attached)", async () => {
    const [challenge] = await issueChallenges(e, { amountMicros: 1000, route: ROUTE, expires: new Date(Date.now() - 1000) });
    const credential = await creditClient(key).createCredential({ challenge: challenge as never });
    await expectRefused(credential, "expired", { rechallenge: true });
  });

  it("tampered: an altered challenge (a lower amount) fails the HMAC", async () => {
    const { credential } = await credentialFor(key);
    const parsed = Credential.deserialize(credential);
    const forged = Credential.serialize({ ...parsed, challenge: { ...parsed.challenge, request: { ...parsed.challenge.request, amount: "1" } } });
    await expectRefused(forged, "tampered", { rechallenge: false });
  });

  it("tampered: a challenge minted with another secret", async () => {
    const { challenge } = await credentialFor(key);
    const foreign = Challenge.from({ secretKey: "another-secret-key-0123456789abcdef0123", realm: challenge.realm, method: "credit", intent: "charge", request: challenge.request, expires: challenge.expires, meta: challenge.meta });
    const credential = await creditClient(key).createCredential({ challenge: foreign as never });
    await expectRefused(credential, "tampered");
  });

  it("wrong_route: a credential for one route cannot pay another", async () => {
    const { credential } = await credentialFor(key, { path: "/openai/v1/embeddings" });
    await expectRefused(credential, "wrong_route");
  });

  it("bad_signature: signed by another key than the credential's source", async () => {
    const { challenge } = await credentialFor(key);
    const byOther = Credential.deserialize(await creditClient(other).createCredential({ challenge: challenge as never }));
    await expectRefused(Credential.serialize({ ...byOther, source: key.did }), "bad_signature", { rechallenge: false });
  });

  it("bad_signature: no source, or a source that is not a did:key", async () => {
    const { credential } = await credentialFor(key);
    const parsed = Credential.deserialize(credential);
    await expectRefused(Credential.serialize({ challenge: parsed.challenge, payload: parsed.payload }), "bad_signature");
    await expectRefused(Credential.serialize({ ...parsed, source: "did:pkh:eip155:1:0x0000000000000000000000000000000000000001" }), "bad_signature");
  });

  it("unknown_method: a method this server does not accept", async () => {
    const { credential } = await credentialFor(key);
    const parsed = Credential.deserialize(credential);
    await expectRefused(Credential.serialize({ ...parsed, challenge: { ...parsed.challenge, method: "bitcoin" } }), "unknown_method");
  });

  it("malformed_credential: a Payment value that does not decode, or a payload of the wrong shape", async () => {
    await expectRefused("Payment !!!not-base64!!!", "malformed_credential");
    const { credential } = await credentialFor(key);
    const parsed = Credential.deserialize(credential);
    await expectRefused(Credential.serialize({ ...parsed, payload: { signature: 42 } }), "malformed_credential");
  });

  it("insufficient_balance: the price is above the credit (no challenge: top up first)", async () => {
    const poor = await generateBuyerKey();
    await fund(poor.buyerId, 999);
    const { credential } = await credentialFor(poor);
    const res = await endpoint(new Request(URL_, chatInit({ authorization: credential })));
    const body = await problem(res);
    expect(res.status).toBe(402);
    expect(body.code).toBe("insufficient_balance");
    expect(res.headers.has("www-authenticate")).toBe(false);
    expect(await balanceOf(poor.buyerId)).toBe(999);
    expect(await claimsOf(poor.buyerId)).toHaveLength(0);
  });

  it("budget_exceeded: the buyer's own daily cap stops spend", async () => {
    const capped = await generateBuyerKey();
    await fund(capped.buyerId, 10_000);
    expect(await wallet(capped.buyerId).setDailyCap(capped.buyerId, 1500)).toMatchObject({ ok: true, value: { dailyCapMicros: 1500 } });
    const pay = payingFetch(capped, endpoint);
    expect((await pay(URL_, chatInit())).status).toBe(200);
    const refused = await pay(URL_, chatInit());
    expect(refused.status).toBe(402);
    expect((await problem(refused)).code).toBe("budget_exceeded");
    expect(await balanceOf(capped.buyerId)).toBe(9000);
  });

  it("payment_required: charge() without a credential says so", async () => {
    const result = await payments.charge(new Request(URL_, chatInit()), e, ROUTE, newRequestId());
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.code).toBe("payment_required");
  });
});

describe("refunds (B6, P7)", () => {
  it("a request nothing could serve is refunded at once, exactly once, and the receipt says so", async () => {
    const key = await generateBuyerKey();
    await fund(key.buyerId, 10_000);
    const served: Served[] = [];
    const pay = payingFetch(key, paidEndpoint({ price: 2500, served, fail: true }));
    const res = await pay(URL_, chatInit());
    expect(res.status).toBe(503);
    expect(Receipt.fromResponse(res)).toMatchObject({ refunded: true, amountMicros: 2500 });
    expect(await balanceOf(key.buyerId)).toBe(10_000);
    const payment = served[0]!.payment!;
    expect(await payments.refund(e, payment, "again")).toBe("already_refunded");
    expect(await payments.refund(e, { ...payment, proofId: "nope" }, "x")).toBe("unknown_proof");
    expect(await balanceOf(key.buyerId)).toBe(10_000);
    const { history } = await wallet(key.buyerId).summary();
    expect(history.map((h) => h.kind)).toEqual(["refund", "debit", "topup"]);
    // The refund was recorded with its reason (metadata only).
    const dump = await dumpObject(wallet(key.buyerId));
    expect(dump).toContain("no_key_could_serve");
  });
});

describe("spend tracking (B5) and the principal (B2)", () => {
  const CONSOLE = ["log", "info", "warn", "error", "debug"] as const;
  afterEach(() => vi.restoreAllMocks());

  it("B5: spend per buyer per day reaches KV SPEND with a 90-day expiry", async () => {
    const key = await generateBuyerKey();
    await fund(key.buyerId, 10_000);
    const pay = payingFetch(key, paidEndpoint({ price: 300 }));
    for (let i = 0; i < 3; i++) expect((await pay(URL_, chatInit())).status).toBe(200);
    expect(await runDurableObjectAlarm(wallet(key.buyerId))).toBe(true);
    const day = new Date().toISOString().slice(0, 10);
    const listed = (await e.SPEND.list({ prefix: `spend:${key.buyerId}:` })).keys;
    expect(listed.map((k) => k.name)).toEqual([spendKey(key.buyerId, day)]);
    const ninetyDays = Date.now() / 1000 + 90 * 86_400;
    expect(listed[0]!.expiration).toBeGreaterThan(ninetyDays - 120);
    expect(listed[0]!.expiration).toBeLessThan(ninetyDays + 120);
    expect(await payments.readSpend(e, key.buyerId)).toEqual([{ day, spentMicros: 900, refundedMicros: 0, requests: 3 }]);
  });

  it("PR9: the buyer id is the SHA-256 of the principal, and the raw principal is in no storage, KV or log line", async () => {
    const logged: string[] = [];
    for (const level of CONSOLE) vi.spyOn(console, level).mockImplementation((...args: unknown[]) => void logged.push(args.map(String).join(" ")));
    const key = await generateBuyerKey();
    const expectedId = [...new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key.did)))].map((b) => b.toString(16).padStart(2, "0")).join("");
    expect(key.buyerId).toBe(expectedId);
    await fund(key.buyerId, 20_000);
    const served: Served[] = [];
    const pay = payingFetch(key, paidEndpoint({ price: 1000, served }));
    expect((await pay(URL_, chatInit())).status).toBe(200);
    expect((await payingFetch(key, paidEndpoint({ price: 1000, fail: true }))(URL_, chatInit())).status).toBe(503);
    // Refusals, replays and account calls all see the DID too.
    const { credential } = await credentialFor(key);
    const endpoint = paidEndpoint();
    await endpoint(new Request(URL_, chatInit({ authorization: credential })));
    await endpoint(new Request(URL_, chatInit({ authorization: credential })));
    await endpoint(new Request("https://cn2.test/other", chatInit({ authorization: credential })));
    const { getBalance, setDailyBudget } = await import("../../buyer/keys.ts");
    const accountFetch = asFetch(async (r) => (new URL(r.url).pathname === "/api/credit/budget" ? budgetHandler(r, e) : balanceHandler(r, e)));
    await setDailyBudget({ baseUrl: "https://cn2.test", fetch: accountFetch, privateKey: key }, 50_000);
    const view = await getBalance({ baseUrl: "https://cn2.test", fetch: accountFetch, privateKey: key });
    expect(view.buyerId).toBe(key.buyerId);
    expect(view.dailyCapMicros).toBe(50_000);
    await runDurableObjectAlarm(wallet(key.buyerId));

    const sinks = { wallet: await dumpObject(wallet(key.buyerId)), spendKv: await dumpKv(e.SPEND), logs: logged.join("\n") };
    // The hash is there (we looked in the right places)...
    expect(sinks.wallet).toContain(key.buyerId);
    expect(sinks.spendKv).toContain(key.buyerId);
    // ...the principal in none of its spellings is.
    const multibase = key.did.slice("did:key:".length);
    const jwkX = key.file.privateJwk.x!;
    const needles = [key.did, multibase, multibase.slice(1), jwkX, Buffer.from(jwkX, "base64url").toString("hex"), Buffer.from(jwkX, "base64url").toString("base64")];
    for (const [sink, text] of Object.entries(sinks)) {
      for (const needle of needles) expect(text.includes(needle), `${sink} contains the principal (${needle.slice(0, 12)}…)`).toBe(false);
    }
  });
});
