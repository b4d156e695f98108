// Payments through the Worker's real entry (B1, B2, B5, B6, P6, P7): the paid proxy with
// the real BuyerWallet and proof store behind it, one key listed by the file's seller
// through the seller API. The 402 challenge, a paid request charged once with a receipt,
// replays (also across a wallet restart), every refusal with its stable code and nothing
// debited, refunds exactly once, spend tracking, and the raw principal in no sink.
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { createHmac } from "node:crypto";
import { Challenge, Credential, Receipt } from "mppx";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { creditClient, generateBuyerKey, getBalance, setDailyBudget, type BuyerKey } from "../../buyer/keys.ts";
import { issueChallenges } from "../../worker/payments/server.ts";
import { spendKey } from "../../objects/buyer-wallet/spend.ts";
import * as payments from "../../worker/payments/index.ts";
import { addKey, demo, demoLog, worker } from "./helpers.ts";
import {
  CHAT, ROUTE, ask, balanceOf, chatJson, credentialFor, dumpKv, dumpObject, e, fund, paid, problem, receiptOf, wallet,
} from "./payments-helpers.ts";

/** The file's key: the cheapest one for non-EU buyers, so every quote here is its price. */
const PRICE = 1000;
/** EU buyers (cf-ipcountry DE) may use EU keys only: the file's failing keys are there. */
const EU_PRICE = 2500;
const EMBEDDINGS = { path: "/openai/v1/embeddings", body: JSON.stringify({ model: "text-embedding-3-small", input: "hi" }) };
const EU = { headers: { "cf-ipcountry": "DE" } };

let served: { credential: string };
beforeAll(async () => {
  served = await addKey({ config: { priceMicros: PRICE } });
});

/** A fresh EU key whose upstream answers 500: nothing can serve an EU buyer, so it is refunded. */
async function failingEuKey() {
  const k = await addKey({ config: { priceMicros: EU_PRICE, region: "eu" } });
  await demo("/__demo/behaviour", { credential: k.credential, status: 500 });
  return k;
}

const claimsOf = async (buyerId: string) =>
  runInDurableObject(wallet(buyerId), (_i, state) => state.storage.sql.exec<{ proof_id: string; refunded_at: number | null; refund_reason: string | null }>("SELECT proof_id, refunded_at, refund_reason FROM claims").toArray());
/** Buyer-signed account calls (balance, budget) through the Worker's entry. */
const account = (key: BuyerKey) => ({ baseUrl: "https://cn2.test", privateKey: key, fetch: ((input, init) => worker().fetch(input as RequestInfo, init)) as typeof fetch });

describe("402 challenge (B1)", () => {
  it("PR8: an unpaid request gets 402 with WWW-Authenticate: Payment and a problem+json body", async () => {
    const res = await ask();
    expect(res.status).toBe(402);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(res.headers.get("www-authenticate")).toMatch(/^Payment /);
    const [challenge, ...others] = Challenge.fromResponseList(res);
    expect(others).toHaveLength(0); // tempo is off unless configured
    expect(challenge!.method).toBe("credit");
    expect(challenge!.intent).toBe("charge");
    expect(challenge!.request).toEqual({ amount: String(PRICE), currency: "usd" });
    const ttl = Date.parse(challenge!.expires!) - Date.now();
    expect(ttl).toBeGreaterThan(4 * 60_000);
    expect(ttl).toBeLessThanOrEqual(5 * 60_000);
    expect(Challenge.verify(challenge!, { secretKey: e.MPP_SECRET_KEY! })).toBe(true);
    const body = await problem(res);
    expect(body).toMatchObject({ status: 402, code: "payment_required", type: "https://paymentauth.org/problems/payment-required" });
    expect(body.error.code).toBe("payment_required");
    expect(body.requestId).toBe(res.headers.get("cn2-request-id"));
  });

  it("every challenge is unique, even for equal quotes (proof ids never collide)", async () => {
    const [a] = Challenge.fromResponseList(await ask());
    const [b] = Challenge.fromResponseList(await ask());
    expect(a!.request).toEqual(b!.request);
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
    const before = await balanceOf(key.buyerId);
    const { challenge, res } = await paid(key);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content).toContain("cn2 demo upstream");
    expect(await balanceOf(key.buyerId)).toBe(before - PRICE);
    // One debit for this proof, of exactly the quote.
    const { history } = await wallet(key.buyerId).summary();
    expect(history[0]).toMatchObject({ kind: "debit", amountMicros: PRICE, ref: challenge.id });
    const requestId = res.headers.get("cn2-request-id")!;
    const receipt = Receipt.fromResponse(res) as Record<string, unknown>;
    expect(receipt).toMatchObject({ method: "credit", status: "success", requestId, amountMicros: PRICE, refunded: false, reference: challenge.id });
    expect(payments.parseReceipt(res.headers.get("payment-receipt")!)).toMatchObject({ requestId, amountMicros: PRICE });
  });

  it("a receipt's signature is HMAC-SHA256 of its fields under a key derived from the MPP secret (the format disputes rely on)", async () => {
    const { res } = await paid(key);
    await res.text();
    const value = res.headers.get("payment-receipt")!;
    const r = payments.parseReceipt(value)!;
    // Computed independently (node:crypto) from the documented construction.
    const receiptKey = createHmac("sha256", e.MPP_SECRET_KEY!).update("cn2-receipt-key/v1").digest();
    const fields = ["cn2-receipt/v1", r.method, r.reference, r.requestId, String(r.amountMicros), r.currency, String(r.refunded), r.timestamp];
    expect(r.signature).toBe(createHmac("sha256", receiptKey).update(fields.join("\n")).digest("base64url"));
    expect(await payments.verifyReceipt(e, value)).toMatchObject({ requestId: res.headers.get("cn2-request-id") });
    // One field changed: the signature no longer verifies.
    const forged = Receipt.serialize(Receipt.from({ ...r, amountMicros: 1 }));
    expect(await payments.verifyReceipt(e, forged)).toBeNull();
    expect(await payments.verifyReceipt(e, Receipt.serialize(Receipt.from({ ...r, signature: "!!" })))).toBeNull();
  });

  it("P-256 keys pay too", async () => {
    const p256 = await generateBuyerKey("P-256");
    expect(p256.did).toMatch(/^did:key:zDn/);
    await fund(p256.buyerId, 5000);
    const { res } = await paid(p256);
    expect(res.status).toBe(200);
    await res.text();
    expect(await balanceOf(p256.buyerId)).toBe(5000 - PRICE);
  });

  it("PR23: 12 concurrent replays of one credential: exactly one is served, the balance is debited once", async () => {
    const { credential } = await credentialFor(key);
    const before = await balanceOf(key.buyerId);
    const results = await Promise.all(Array.from({ length: 12 }, () => ask({}, credential)));
    const ok = results.filter((r) => r.status === 200);
    expect(ok).toHaveLength(1);
    await ok[0]!.text();
    const refused = results.filter((r) => r.status === 402);
    expect(refused).toHaveLength(11);
    for (const r of refused) expect((await problem(r)).code).toBe("replayed");
    expect(await balanceOf(key.buyerId)).toBe(before - PRICE);
    // And later, once more: still refused, with a fresh challenge to pay instead.
    const late = await ask({}, credential);
    expect(late.status).toBe(402);
    expect(Challenge.fromResponseList(late)).toHaveLength(1);
    expect((await problem(late)).code).toBe("replayed");
  });

  it("PR23: a replay is refused after the wallet object restarts too (claims are stored, not in memory)", async () => {
    const { credential, res } = await paid(key);
    expect(res.status).toBe(200);
    await res.text();
    // Mark this instance, restart the object, and see the mark gone: a new instance answers.
    const stub = wallet(key.buyerId);
    await runInDurableObject(stub, (instance) => void ((instance as unknown as Record<string, unknown>).restartMark = true));
    await evictDurableObject(stub);
    expect(await runInDurableObject(stub, (instance) => (instance as unknown as Record<string, unknown>).restartMark)).toBeUndefined();
    const before = await balanceOf(key.buyerId);
    const again = await ask({}, credential);
    expect((await problem(again)).code).toBe("replayed");
    expect(await balanceOf(key.buyerId)).toBe(before);
  });
});

describe("refusals carry a stable code and debit nothing (P6)", () => {
  let key: BuyerKey;
  let other: BuyerKey;
  beforeAll(async () => {
    key = await generateBuyerKey();
    other = await generateBuyerKey();
    await fund(key.buyerId, 50_000);
  });

  async function expectRefused(authorization: string, code: string, opts: { rechallenge?: boolean } = {}) {
    const before = await balanceOf(key.buyerId);
    const claimsBefore = (await claimsOf(key.buyerId)).length;
    const hitsBefore = (await demoLog()).filter((r) => r.credential === served.credential).length;
    const res = await ask({}, authorization);
    expect(res.status).toBe(402);
    const body = await problem(res);
    expect(body.code).toBe(code);
    expect(body.error.code).toBe(code);
    expect(body.detail.length).toBeGreaterThan(0);
    expect(res.headers.has("payment-receipt")).toBe(false);
    expect(await balanceOf(key.buyerId)).toBe(before);
    expect((await claimsOf(key.buyerId)).length).toBe(claimsBefore);
    // Refused before any key: the upstream saw nothing.
    expect((await demoLog()).filter((r) => r.credential === served.credential)).toHaveLength(hitsBefore);
    if (opts.rechallenge !== undefined) expect(res.headers.has("www-authenticate")).toBe(opts.rechallenge);
    return body;
  }

  it("expired: the challenge's time ran out (a fresh one is attached)", async () => {
    const [challenge] = await issueChallenges(e, { amountMicros: PRICE, route: ROUTE, expires: new Date(Date.now() - 1000) });
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
    const { credential } = await credentialFor(key, EMBEDDINGS);
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
    await fund(poor.buyerId, PRICE - 1);
    const { credential } = await credentialFor(poor);
    const res = await ask({}, credential);
    const body = await problem(res);
    expect(res.status).toBe(402);
    expect(body.code).toBe("insufficient_balance");
    expect(res.headers.has("www-authenticate")).toBe(false);
    expect(await balanceOf(poor.buyerId)).toBe(PRICE - 1);
    expect(await claimsOf(poor.buyerId)).toHaveLength(0);
  });

  it("budget_exceeded: the buyer's own daily cap stops spend", async () => {
    const capped = await generateBuyerKey();
    await fund(capped.buyerId, 10_000);
    expect(await setDailyBudget(account(capped), 1500)).toMatchObject({ dailyCapMicros: 1500 });
    const first = await paid(capped);
    expect(first.res.status).toBe(200);
    await first.res.text();
    const refused = await paid(capped);
    expect(refused.res.status).toBe(402);
    expect((await problem(refused.res)).code).toBe("budget_exceeded");
    expect(await balanceOf(capped.buyerId)).toBe(10_000 - PRICE);
  });

  it("payment_required: charge() without a credential says so", async () => {
    const result = await payments.charge(new Request(`https://cn2.test${CHAT}`, { method: "POST", body: chatJson() }), e, ROUTE, "req_test0000000000000000");
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.code).toBe("payment_required");
  });
});

describe("refunds (B6, P7)", () => {
  it("a request nothing could serve is refunded at once, exactly once, and the receipt says so", async () => {
    await failingEuKey();
    const key = await generateBuyerKey();
    await fund(key.buyerId, 10_000);
    const { challenge, res } = await paid(key, EU);
    expect(res.status).toBe(502);
    await res.text();
    expect(receiptOf(res)).toMatchObject({ refunded: true, amountMicros: EU_PRICE, reference: challenge.id });
    expect(await balanceOf(key.buyerId)).toBe(10_000);
    // The payment as the proxy holds it: a second refund changes nothing.
    const payment: payments.Payment = { buyerId: key.buyerId, amountMicros: EU_PRICE, method: "credit", proofId: challenge.id };
    expect(await payments.refund(e, payment, "again")).toBe("already_refunded");
    expect(await payments.refund(e, { ...payment, proofId: "nope" }, "x")).toBe("unknown_proof");
    expect(await balanceOf(key.buyerId)).toBe(10_000);
    const { history } = await wallet(key.buyerId).summary();
    expect(history.map((h) => h.kind)).toEqual(["refund", "debit", "topup"]);
    // The refund was recorded with its reason (metadata only): the upstream's 502 passed on.
    expect(await claimsOf(key.buyerId)).toEqual([{ proof_id: challenge.id, refunded_at: expect.any(Number), refund_reason: "status_502" }]);
  });
});

describe("spend tracking (B5) and the principal (B2)", () => {
  const CONSOLE = ["log", "info", "warn", "error", "debug"] as const;
  afterEach(() => vi.restoreAllMocks());

  it("B5: spend per buyer per day reaches KV SPEND with a 90-day expiry", async () => {
    const key = await generateBuyerKey();
    await fund(key.buyerId, 10_000);
    for (let i = 0; i < 3; i++) {
      const { res } = await paid(key);
      expect(res.status).toBe(200);
      await res.text();
    }
    expect(await runDurableObjectAlarm(wallet(key.buyerId))).toBe(true);
    const day = new Date().toISOString().slice(0, 10);
    const listed = (await e.SPEND.list({ prefix: `spend:${key.buyerId}:` })).keys;
    expect(listed.map((k) => k.name)).toEqual([spendKey(key.buyerId, day)]);
    const ninetyDays = Date.now() / 1000 + 90 * 86_400;
    expect(listed[0]!.expiration).toBeGreaterThan(ninetyDays - 120);
    expect(listed[0]!.expiration).toBeLessThan(ninetyDays + 120);
    expect(await payments.readSpend(e, key.buyerId)).toEqual([{ day, spentMicros: 3 * PRICE, refundedMicros: 0, requests: 3 }]);
  });

  it("PR9: the buyer id is the SHA-256 of the principal, and the raw principal is in no storage, KV or log line", async () => {
    const logged: string[] = [];
    for (const level of CONSOLE) vi.spyOn(console, level).mockImplementation((...args: unknown[]) => void logged.push(args.map(String).join(" ")));
    await failingEuKey();
    const key = await generateBuyerKey();
    const expectedId = [...new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key.did)))].map((b) => b.toString(16).padStart(2, "0")).join("");
    expect(key.buyerId).toBe(expectedId);
    await fund(key.buyerId, 20_000);
    const ok = await paid(key);
    expect(ok.res.status).toBe(200);
    await ok.res.text();
    const failed = await paid(key, EU);
    expect(receiptOf(failed.res).refunded).toBe(true);
    await failed.res.text();
    // Refusals, replays and account calls all see the DID too.
    const { credential } = await credentialFor(key);
    for (const attempt of [{}, {}, EMBEDDINGS]) await (await ask(attempt, credential)).text();
    await setDailyBudget(account(key), 50_000);
    const view = await getBalance(account(key));
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
