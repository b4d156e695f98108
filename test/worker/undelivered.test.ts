// B6, the gap the soak found (docs/soak.md): a paid answer whose key answered 200 but whose
// body broke off before its first byte (an upstream that failed right after its headers,
// the key object restarted while answering) never reached the buyer, yet was charged and
// earned. Through the Worker's real entry: such an answer is not charged (the buyer gets an
// error with a refunded receipt, or another key's answer), the key's earning is reversed and
// its metadata row says `undelivered`; an answer cut after its first bytes stays charged.
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { generateBuyerKey, type BuyerKey } from "../../buyer/keys.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import { addKey, api, demo, demoLog, inspect, ownerDb } from "./helpers.ts";
import { ask, balanceOf, chatJson, credentialFor, drain, e, fund, paid, receiptOf, wallet } from "./payments-helpers.ts";

const PRICE = 2000;
const streamed = { body: chatJson({ stream: true }) };

async function newBuyer(micros = 10_000): Promise<BuyerKey> {
  const key = await generateBuyerKey();
  await fund(key.buyerId, micros);
  return key;
}

/** One key of the file's seller, the only one serving (the previous test's keys are removed). */
async function onlyKey() {
  const { keys } = (await (await api("/api/keys")).json()) as { keys: { keyId: string }[] };
  for (const k of keys) expect((await api(`/api/keys/${k.keyId}`, { method: "DELETE" })).status).toBe(200);
  return addKey({ config: { priceMicros: PRICE } });
}

/** The key's metadata row for a request, as it will be flushed to the ledger's request log. */
async function rowOf(keyId: string, requestId: string) {
  return (await keyStub(e, keyId, "default").bufferedMeta()).find((m) => m.requestId === requestId);
}

const earningsOf = async (keyId: string) => (await inspect(keyId)).earnings;

/** Until the demo upstream has received `n` calls with this credential (it logs a call as it arrives). */
async function upstreamHas(credential: string, n = 1) {
  for (let i = 0; i < 400 && (await demoLog()).filter((r) => r.credential === credential).length < n; i++) await new Promise((r) => setTimeout(r, 5));
  expect((await demoLog()).filter((r) => r.credential === credential)).toHaveLength(n);
}

/** The key's money rows as stored now, read in the object (an inspection would force the batch first). */
const storedBooking = (keyId: string) => runInDurableObject(keyStub(e, keyId, "default"), (_i, state) => ({
  earnings: state.storage.sql.exec("SELECT unflushed_micros, fee_micros, served_count FROM earnings").toArray(),
  meta: state.storage.sql.exec("SELECT request_id, status, amount_micros, outcome FROM request_meta").toArray(),
  voidable: state.storage.sql.exec("SELECT seller_micros, fee_micros FROM voidable").toArray(),
}));

const flushNow = (keyId: string) => keyStub(e, keyId, "default").flushEarnings();

/** A paid call whose upstream holds its answer: resolves once the upstream has it (the `n`th call of this key), with the answer still to come. */
async function heldCall(k: { credential: string }, buyer: BuyerKey, n = 1): Promise<{ answer: Promise<Response> }> {
  await demo("/__demo/behaviour", { credential: k.credential, hold: true });
  const { credential } = await credentialFor(buyer);
  const answer = ask({}, credential);
  await upstreamHas(k.credential, n);
  return { answer };
}

/** The request log's row for a request, once flushed. */
const loggedRow = (requestId: string) =>
  ownerDb((sql) => sql`select status, amount_micros::int as amount, outcome from public.request_log where request_id = ${requestId}`);

describe("B6: an answer that never started reaching the buyer is not charged", () => {
  it("B6: an upstream that answers 200 and breaks off before its first body byte: an error with a refunded receipt, the wallet whole, the key's earning reversed", async () => {
    const k = await onlyKey();
    await demo("/__demo/behaviour", { credential: k.credential, cutAfterChunks: 0 });
    const buyer = await newBuyer();
    const { res } = await paid(buyer, streamed);
    const body = await drain(res);
    // Before the fix: 200, a receipt not refunded, and a body that broke off with 0 bytes.
    expect({ status: res.status, cut: body.cut }).toEqual({ status: 502, cut: false });
    expect(receiptOf(res)).toMatchObject({ amountMicros: PRICE, refunded: true });
    expect(await balanceOf(buyer.buyerId)).toBe(10_000);
    expect((await wallet(buyer.buyerId).summary()).history.map((h) => h.kind)).toEqual(["refund", "debit", "topup"]);
    // The upstream was called and answered 200: the key served, but earned nothing for it.
    expect((await demoLog()).filter((r) => r.credential === k.credential).map((r) => r.status)).toEqual([200]);
    expect(await earningsOf(k.keyId)).toEqual({ unflushedMicros: 0, feeMicros: 0, servedCount: 0 });
    const requestId = res.headers.get("cn2-request-id")!;
    expect(await rowOf(k.keyId, requestId)).toMatchObject({ status: 200, amountMicros: 0, outcome: "undelivered" });
    expect((await inspect(k.keyId)).events).toContainEqual(expect.objectContaining({ kind: "request.undelivered", detail: requestId }));
    // Flushed: the request log says so (migration 0016), and the ledger has nothing for it.
    expect(await keyStub(e, k.keyId, "default").flushEarnings()).toMatchObject({ ok: true, value: { flushed: true, amountMicros: 0, metadataRows: 1 } });
    expect(await loggedRow(requestId)).toEqual([{ status: 200, amount: 0, outcome: "undelivered" }]);
    expect(await ownerDb((sql) => sql`select 1 from public.earnings_ledger where key_id = ${k.keyId}`)).toHaveLength(0);
  });

  it("B6: with another key able to serve, the buyer gets its answer, charged once; the broken key earns nothing", async () => {
    const broken = await onlyKey();
    const other = await addKey({ config: { priceMicros: PRICE } });
    await demo("/__demo/behaviour", { credential: broken.credential, cutAfterChunks: 0 });
    const buyer = await newBuyer();
    const { credential } = await credentialFor(buyer, streamed);
    // Paid at the quote (2000); the broken key then gets cheaper, so the router tries it first.
    expect((await api(`/api/keys/${broken.keyId}`, { method: "PATCH", json: { priceMicros: PRICE - 1 } })).status).toBe(200);
    const res = await ask(streamed, credential);
    expect(res.status).toBe(200);
    expect(await drain(res)).toMatchObject({ cut: false });
    expect(receiptOf(res)).toMatchObject({ amountMicros: PRICE, refunded: false });
    expect(await balanceOf(buyer.buyerId)).toBe(10_000 - PRICE);
    expect((await demoLog()).filter((r) => r.credential === broken.credential)).toHaveLength(1);
    expect(await earningsOf(broken.keyId)).toEqual({ unflushedMicros: 0, feeMicros: 0, servedCount: 0 });
    expect(await earningsOf(other.keyId)).toEqual({ unflushedMicros: 1800, feeMicros: 200, servedCount: 1 });
    expect(await rowOf(broken.keyId, res.headers.get("cn2-request-id")!)).toMatchObject({ amountMicros: 0, outcome: "undelivered" });
  });

  it("B6: a key restarted after its answer's headers but before any body byte: not charged", async () => {
    const k = await onlyKey();
    await demo("/__demo/behaviour", { credential: k.credential, holdBeforeBody: true });
    const buyer = await newBuyer();
    const { credential } = await credentialFor(buyer, streamed);
    const pending = ask(streamed, credential);
    // The upstream has sent its headers and holds the body: restart the key object now.
    for (let i = 0; i < 200 && !(await demoLog()).some((r) => r.credential === k.credential && r.held); i++) await new Promise((r) => setTimeout(r, 25));
    expect((await demoLog()).some((r) => r.credential === k.credential && r.held)).toBe(true);
    expect((await api(`/ops/keys/${k.keyId}/restart`, { method: "POST" })).status).toBe(200);
    const res = await pending;
    const body = await drain(res);
    expect({ status: res.status, cut: body.cut }).toEqual({ status: 502, cut: false });
    expect(receiptOf(res)).toMatchObject({ amountMicros: PRICE, refunded: true });
    expect(await balanceOf(buyer.buyerId)).toBe(10_000);
    // Reversed from storage by the restarted object.
    expect(await earningsOf(k.keyId)).toEqual({ unflushedMicros: 0, feeMicros: 0, servedCount: 0 });
    expect(await rowOf(k.keyId, res.headers.get("cn2-request-id")!)).toMatchObject({ amountMicros: 0, outcome: "undelivered" });
  });

  it("the remaining window: an earning the flush already took to the ledger is not reversed; the charge stands (502, not refunded) and the books stay exact", async () => {
    const k = await onlyKey();
    await demo("/__demo/behaviour", { credential: k.credential, holdBeforeBody: true });
    const buyer = await newBuyer();
    const { credential } = await credentialFor(buyer, streamed);
    const pending = ask(streamed, credential);
    for (let i = 0; i < 200 && !(await demoLog()).some((r) => r.credential === k.credential && r.held); i++) await new Promise((r) => setTimeout(r, 25));
    // The key has answered (headers) and earned; its earnings flush runs now, before the restart.
    const flushed = await keyStub(e, k.keyId, "default").flushEarnings();
    expect(flushed).toMatchObject({ ok: true, value: { flushed: true, amountMicros: PRICE } });
    expect((await api(`/ops/keys/${k.keyId}/restart`, { method: "POST" })).status).toBe(200);
    const res = await pending;
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { code: string; message: string } }).error).toMatchObject({ code: "upstream_error", message: expect.stringMatching(/could not be reversed/) });
    expect(receiptOf(res)).toMatchObject({ amountMicros: PRICE, refunded: false });
    // Buyer debited exactly what the ledger holds for the key.
    expect(await balanceOf(buyer.buyerId)).toBe(10_000 - PRICE);
    const [ledger] = await ownerDb((sql) => sql`select coalesce(sum(amount_micros), 0)::int as total from public.earnings_ledger where key_id = ${k.keyId}`);
    expect(ledger!.total).toBe(PRICE);
    expect(await earningsOf(k.keyId)).toEqual({ unflushedMicros: 0, feeMicros: 0, servedCount: 0 });
  });

  it("a key restarted after its answer's first bytes reached the buyer: the cut stays charged, and the key keeps the earning", async () => {
    const k = await onlyKey();
    // The first event goes out, then the upstream holds the rest.
    await demo("/__demo/behaviour", { credential: k.credential, hold: true });
    const buyer = await newBuyer();
    const { res } = await paid(buyer, streamed);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    // The whole first event, then the key object restarts.
    let text = "";
    while (!text.includes("\n\n")) {
      const chunk = await reader.read();
      expect(chunk.done).toBe(false);
      text += new TextDecoder().decode(chunk.value);
    }
    expect(text).toMatch(/^data: /);
    expect((await api(`/ops/keys/${k.keyId}/restart`, { method: "POST" })).status).toBe(200);
    let cut = false;
    try {
      while (!(await reader.read()).done);
    } catch {
      cut = true;
    }
    expect(cut).toBe(true);
    expect(receiptOf(res)).toMatchObject({ amountMicros: PRICE, refunded: false });
    expect(await balanceOf(buyer.buyerId)).toBe(10_000 - PRICE);
    expect(await earningsOf(k.keyId)).toEqual({ unflushedMicros: 1800, feeMicros: 200, servedCount: 1 });
  });
});

// The upstream holds its answer (`hold`) until released, or until the key's first-byte
// timeout (UPSTREAM_TIMEOUT_MS, 2 s in the tests) ends the call.
describe("PR16 B6: a paid request is booked as its upstream call leaves, and reversed if the call fails", () => {
  it("PR16: its earning and metadata row are in the key's storage while the provider works; a flush meanwhile leaves them, and the answer's row replaces the booking's", async () => {
    const k = await onlyKey();
    const buyer = await newBuyer();
    const { answer } = await heldCall(k, buyer);
    const during = await storedBooking(k.keyId);
    expect(during).toEqual({
      earnings: [{ unflushed_micros: 1800, fee_micros: 200, served_count: 1 }],
      // Status 0: not known yet.
      meta: [{ request_id: expect.stringMatching(/^req_/), status: 0, amount_micros: PRICE, outcome: "served" }],
      voidable: [{ seller_micros: 1800, fee_micros: 200 }],
    });
    // A flush now has nothing it may take: the call could still fail.
    expect(await flushNow(k.keyId)).toMatchObject({ ok: true, value: { flushed: false } });
    expect(await storedBooking(k.keyId)).toEqual(during);
    await demo("/__demo/release", { credential: k.credential });
    const res = await answer;
    expect(res.status).toBe(200);
    await res.text();
    const requestId = res.headers.get("cn2-request-id")!;
    expect(during.meta[0]!.request_id).toBe(requestId);
    expect(receiptOf(res)).toMatchObject({ amountMicros: PRICE, refunded: false });
    // Served: the next flush takes it, with the answer's own row.
    expect(await flushNow(k.keyId)).toMatchObject({ ok: true, value: { flushed: true, amountMicros: PRICE, metadataRows: 1 } });
    expect(await loggedRow(requestId)).toEqual([{ status: 200, amount: PRICE, outcome: "served" }]);
    expect(await balanceOf(buyer.buyerId)).toBe(10_000 - PRICE);
  });

  it("B6: a call that fails after a flush ran meanwhile is still reversed in full: the buyer refunded, the ledger holds only what was served", async () => {
    const k = await onlyKey();
    const buyer = await newBuyer();
    const first = await paid(buyer);
    expect(first.res.status).toBe(200);
    await first.res.text();
    const { answer } = await heldCall(k, buyer, 2);
    // The flush takes the first request only.
    expect(await flushNow(k.keyId)).toMatchObject({ ok: true, value: { flushed: true, amountMicros: PRICE, metadataRows: 1 } });
    // Never released: the key's first-byte timeout ends the call.
    const res = await answer;
    expect(res.status).toBe(504);
    expect(receiptOf(res)).toMatchObject({ amountMicros: PRICE, refunded: true });
    const requestId = res.headers.get("cn2-request-id")!;
    expect(await balanceOf(buyer.buyerId)).toBe(10_000 - PRICE);
    expect(await earningsOf(k.keyId)).toEqual({ unflushedMicros: 0, feeMicros: 0, servedCount: 0 });
    expect(await flushNow(k.keyId)).toMatchObject({ ok: true, value: { flushed: true, amountMicros: 0, metadataRows: 1 } });
    expect(await loggedRow(requestId)).toEqual([{ status: 504, amount: 0, outcome: "upstream_error" }]);
    const [ledger] = await ownerDb((sql) => sql`select coalesce(sum(amount_micros), 0)::int as total from public.earnings_ledger where key_id = ${k.keyId}`);
    expect(ledger!.total).toBe(PRICE);
  });

  it("B6: a key restarted while its upstream call is in flight: the booking is reversed from storage, the buyer refunded", async () => {
    const k = await onlyKey();
    const buyer = await newBuyer();
    const { answer } = await heldCall(k, buyer);
    expect((await api(`/ops/keys/${k.keyId}/restart`, { method: "POST" })).status).toBe(200);
    const res = await answer;
    expect(res.status).toBe(502);
    expect(receiptOf(res)).toMatchObject({ amountMicros: PRICE, refunded: true });
    expect(await balanceOf(buyer.buyerId)).toBe(10_000);
    expect(await earningsOf(k.keyId)).toEqual({ unflushedMicros: 0, feeMicros: 0, servedCount: 0 });
    expect(await rowOf(k.keyId, res.headers.get("cn2-request-id")!)).toMatchObject({ status: 0, amountMicros: 0, outcome: "undelivered" });
  });
});
