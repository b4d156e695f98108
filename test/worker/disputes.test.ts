// Billing disputes (P7, PR19) through the Worker's entry: a buyer opens one from the
// Payment-Receipt of a paid request (signed with its key, like the balance call), reads
// its status; ops list open disputes and resolve them with a refund (credited exactly
// once) or a rejection. Bad input gets clear 4xx codes; the DID is stored nowhere.
import { env } from "cloudflare:workers";
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { Challenge, Receipt } from "mppx";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { creditClient, generateBuyerKey, type BuyerKey } from "../../buyer/keys.ts";
import { CLAIM_RETENTION_MS } from "../../objects/buyer-wallet/buyer-wallet.ts";
import { MAX_OPEN_DISPUTES, disputeIndexKey, type DisputeRecord } from "../../schema/wallet.ts";
import type { KeyConfigInput } from "../../schema/wire.ts";
import type { Env } from "../../core/env.ts";
import { sign } from "../../core/did.ts";
import { sha256Hex, toBase64Url } from "../../core/encoding.ts";
import { ACCOUNT_HEADERS, accountMessage } from "../../core/credit-method.ts";
import { OPS, addKey, api, call } from "./helpers.ts";

const e = env as unknown as Env;
const CHAT = "/openai/v1/chat/completions";
const chatJson = (model: string | null = "gpt-4o-mini") => JSON.stringify({ ...(model ? { model } : {}), messages: [{ role: "user", content: "Hello" }] });

// ---- a marketplace with one key, and a paying buyer ----------------------------------

// The file's seller lists one key per test through the seller API (sign-in, sealed envelope).
const made: string[] = [];

async function key(over: Partial<KeyConfigInput> = {}) {
  const { keyId, key: view } = await addKey({ config: { priceMicros: 2000, ...over } });
  made.push(keyId);
  return { keyId, home: view.home };
}

async function newBuyer(fundMicros = 100_000): Promise<BuyerKey> {
  const key = await generateBuyerKey();
  const res = await call("/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId: key.buyerId, amountMicros: fundMicros }) });
  expect(res.status).toBe(200);
  return key;
}

/** A paid request through the proxy; returns its Payment-Receipt value and the answer. */
async function paidRequest(buyer: BuyerKey, body = chatJson()) {
  const init = { method: "POST", headers: { "content-type": "application/json" }, body };
  const first = await call(CHAT, init);
  expect(first.status).toBe(402);
  const [challenge] = Challenge.fromResponseList(first);
  const authorization = await creditClient(buyer).createCredential({ challenge: challenge! as never });
  const res = await call(CHAT, { ...init, headers: { ...init.headers, authorization } });
  await res.text();
  const receipt = res.headers.get("payment-receipt");
  expect(receipt).not.toBeNull();
  return { res, receipt: receipt!, requestId: res.headers.get("cn2-request-id")!, proofId: challenge!.id };
}

const wallet = (buyerId: string) => e.BUYER_WALLET.get(e.BUYER_WALLET.idFromName(buyerId));
const balanceOf = async (buyerId: string) => (await wallet(buyerId).summary()).balanceMicros;

// ---- buyer-signed calls (ACCOUNT_HEADERS) and ops calls -------------------------------

async function signed(buyer: BuyerKey, method: string, path: string, body?: unknown, tweak: { did?: string; time?: number; signer?: BuyerKey } = {}) {
  const text = body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body);
  const time = String(tweak.time ?? Math.floor(Date.now() / 1000));
  const signer = tweak.signer ?? buyer;
  const message = accountMessage({ method, pathAndQuery: path, time, bodySha256: await sha256Hex(text) });
  return call(path, {
    method,
    headers: {
      "content-type": "application/json",
      [ACCOUNT_HEADERS.did]: tweak.did ?? buyer.did,
      [ACCOUNT_HEADERS.time]: time,
      [ACCOUNT_HEADERS.signature]: toBase64Url(await sign(signer.alg, signer.privateKey, message)),
    },
    ...(text ? { body: text } : {}),
  });
}

const ops = (path: string, init: { method?: string; json?: unknown; token?: string | null } = {}) =>
  call(path, {
    method: init.method ?? (init.json === undefined ? "GET" : "POST"),
    headers: { "content-type": "application/json", ...(init.token === null ? {} : { authorization: `Bearer ${init.token ?? OPS}` }) },
    ...(init.json === undefined ? {} : { body: typeof init.json === "string" ? init.json : JSON.stringify(init.json) }),
  });

type BuyerDispute = Omit<DisputeRecord, "buyerId">;
const open = (buyer: BuyerKey, body: unknown) => signed(buyer, "POST", "/api/disputes", body);
const errorCode = async (res: Response) => ((await res.json()) as { error: { code: string } }).error.code;

async function openOk(buyer: BuyerKey, receipt: string, reason = "upstream_error", note?: string) {
  const res = await open(buyer, { receipt, reason, ...(note === undefined ? {} : { note }) });
  expect(res.status, await res.clone().text()).toBe(201);
  return ((await res.json()) as { dispute: BuyerDispute }).dispute;
}

beforeEach(async () => {
  for (const keyId of made.splice(0)) expect((await api(`/api/keys/${keyId}`, { method: "DELETE" })).status).toBe(200);
  await key();
});

describe("disputes (P7)", () => {
  it("PR19: a buyer opens a dispute from its receipt, reads its status; ops list it and refund it, exactly once", async () => {
    const buyer = await newBuyer(10_000);
    const paid = await paidRequest(buyer);
    expect(paid.res.status).toBe(200);
    expect(await balanceOf(buyer.buyerId)).toBe(8000);

    const dispute = await openOk(buyer, paid.receipt, "upstream_error", "  the answer stopped half way  ");
    expect(dispute).toMatchObject({
      id: expect.stringMatching(/^dsp_[0-9a-f]{32}$/), requestId: paid.requestId, proofId: paid.proofId, method: "credit",
      amountMicros: 2000, reason: "upstream_error", note: "the answer stopped half way", status: "open", resolution: null, refundedMicros: 0,
    });
    expect(dispute).not.toHaveProperty("buyerId");
    // Opening again (a retried request) returns the same dispute.
    const again = await open(buyer, { receipt: paid.receipt, reason: "other" });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { dispute: BuyerDispute }).dispute.id).toBe(dispute.id);

    // The buyer reads it, alone and in its list.
    const mine = await signed(buyer, "GET", `/api/disputes/${dispute.id}`);
    expect(mine.status).toBe(200);
    expect(((await mine.json()) as { dispute: BuyerDispute }).dispute).toEqual(dispute);
    const list = await signed(buyer, "GET", "/api/disputes");
    expect(((await list.json()) as { disputes: BuyerDispute[] }).disputes.map((d) => d.id)).toEqual([dispute.id]);

    // Ops see it in the open list, with the buyer id hash (never the DID).
    const listed = (await (await ops("/ops/disputes?status=open")).json()) as { disputes: { id: string; buyerId: string; requestId: string; amountMicros: number; status: string }[]; cursor: string | null };
    expect(listed.disputes).toContainEqual(expect.objectContaining({ id: dispute.id, buyerId: buyer.buyerId, requestId: paid.requestId, amountMicros: 2000, status: "open" }));
    const one = (await (await ops(`/ops/disputes/${dispute.id}`)).json()) as { dispute: DisputeRecord };
    expect(one.dispute).toMatchObject({ ...dispute, buyerId: buyer.buyerId });

    // Refund: credited once, however many times (and however concurrently) it is asked.
    const results = await Promise.all(Array.from({ length: 5 }, () => ops(`/ops/disputes/${dispute.id}/resolve`, { json: { decision: "refund", note: "upstream cut confirmed" } })));
    const bodies = await Promise.all(results.map(async (r) => ({ status: r.status, body: (await r.json()) as { dispute: DisputeRecord; changed: boolean } })));
    expect(bodies.map((b) => b.status)).toEqual([200, 200, 200, 200, 200]);
    expect(bodies.filter((b) => b.body.changed)).toHaveLength(1);
    for (const b of bodies) expect(b.body.dispute).toMatchObject({ status: "resolved", resolution: "refunded", refundedMicros: 2000, resolutionNote: "upstream cut confirmed" });
    expect(await balanceOf(buyer.buyerId)).toBe(10_000);
    const { history } = await wallet(buyer.buyerId).summary();
    expect(history.map((h) => [h.kind, h.amountMicros])).toEqual([["refund", 2000], ["debit", 2000], ["topup", 10_000]]);

    // The other decision cannot follow; the same one changes nothing.
    const reject = await ops(`/ops/disputes/${dispute.id}/resolve`, { json: { decision: "reject" } });
    expect(reject.status).toBe(409);
    expect(await errorCode(reject)).toBe("dispute_resolved");
    expect(await balanceOf(buyer.buyerId)).toBe(10_000);

    // Lists move it from open to resolved; the buyer sees the outcome.
    const openNow = (await (await ops("/ops/disputes")).json()) as { disputes: { id: string }[] };
    expect(openNow.disputes.map((d) => d.id)).not.toContain(dispute.id);
    const resolved = (await (await ops("/ops/disputes?status=resolved")).json()) as { disputes: { id: string; resolution: string }[] };
    expect(resolved.disputes).toContainEqual(expect.objectContaining({ id: dispute.id, resolution: "refunded" }));
    const seen = ((await (await signed(buyer, "GET", `/api/disputes/${dispute.id}`)).json()) as { dispute: BuyerDispute }).dispute;
    expect(seen).toMatchObject({ status: "resolved", resolution: "refunded", refundedMicros: 2000, resolvedAt: expect.any(Number) });
    // A refunded payment cannot be disputed again.
    expect((await open(buyer, { receipt: paid.receipt, reason: "other" })).status).toBe(200); // the same (resolved) dispute
  });

  it("PR19: a rejected dispute is closed and moves no money", async () => {
    const buyer = await newBuyer(10_000);
    const paid = await paidRequest(buyer);
    const dispute = await openOk(buyer, paid.receipt, "wrong_amount");
    const res = await ops(`/ops/disputes/${dispute.id}/resolve`, { json: { decision: "reject", note: "served in full (status 200, stream finished)" } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { dispute: DisputeRecord }).dispute).toMatchObject({ status: "resolved", resolution: "rejected", refundedMicros: 0 });
    expect(await balanceOf(buyer.buyerId)).toBe(8000);
    expect((await ops(`/ops/disputes/${dispute.id}/resolve`, { json: { decision: "refund" } })).status).toBe(409);
    expect(await balanceOf(buyer.buyerId)).toBe(8000);
  });

  it("PR19: opening needs the buyer's own signature, its own payment and an intact receipt (clear 4xx codes)", async () => {
    const buyer = await newBuyer(10_000);
    const stranger = await newBuyer(10_000);
    const paid = await paidRequest(buyer);
    const body = { receipt: paid.receipt, reason: "not_served" };
    const balance = await balanceOf(buyer.buyerId);

    // Unsigned, signed by another key, stale.
    const unsigned = await call("/api/disputes", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    expect([unsigned.status, await errorCode(unsigned)]).toEqual([401, "unauthorized"]);
    const forged = await signed(buyer, "POST", "/api/disputes", body, { signer: stranger });
    expect([forged.status, await errorCode(forged)]).toEqual([401, "unauthorized"]);
    const stale = await signed(buyer, "POST", "/api/disputes", body, { time: Math.floor(Date.now() / 1000) - 3600 });
    expect([stale.status, await errorCode(stale)]).toEqual([401, "unauthorized"]);

    // Someone else's receipt: holding it proves nothing.
    const theirs = await open(stranger, body);
    expect([theirs.status, await errorCode(theirs)]).toEqual([404, "payment_not_found"]);

    // Altered receipts: another request id, a bigger amount, no signature, not a receipt at all.
    const decoded = Receipt.deserialize(paid.receipt) as Record<string, unknown>;
    const reencode = (r: Record<string, unknown>) => Receipt.serialize(r as never);
    for (const receipt of [
      reencode({ ...decoded, requestId: "req_" + "0".repeat(32), externalId: "req_" + "0".repeat(32) }),
      reencode({ ...decoded, amountMicros: 1_000_000 }),
      reencode(Object.fromEntries(Object.entries(decoded).filter(([k]) => k !== "signature"))),
      "bm90LWEtcmVjZWlwdA",
    ]) {
      const res = await open(buyer, { receipt, reason: "other" });
      expect([res.status, await errorCode(res)], receipt.slice(0, 20)).toEqual([400, "invalid_receipt"]);
    }

    // Bad bodies.
    for (const [bad, code] of [
      [{ receipt: paid.receipt, reason: "because" }, "invalid_request"],
      [{ receipt: paid.receipt, reason: "other", note: "x".repeat(501) }, "invalid_request"],
      [{ receipt: paid.receipt, reason: "other", note: "line\u0000break" }, "invalid_request"],
      [{ receipt: paid.receipt, reason: "other", extra: 1 }, "invalid_request"],
      [{ reason: "other" }, "invalid_request"],
      ["{not json", "invalid_json"],
    ] as const) {
      const res = await open(buyer, bad);
      expect([res.status, await errorCode(res)], JSON.stringify(bad).slice(0, 40)).toEqual([400, code]);
    }
    const huge = await open(buyer, { receipt: paid.receipt, reason: "other", note: "y".repeat(9000) });
    expect([huge.status, await errorCode(huge)]).toEqual([413, "body_too_large"]);

    // A payment refunded at once (B6) has nothing left to dispute.
    const failed = await paidRequest(buyer, chatJson(null));
    expect(failed.res.status).toBe(400);
    const refunded = await open(buyer, { receipt: failed.receipt, reason: "not_served" });
    expect([refunded.status, await errorCode(refunded)]).toEqual([409, "already_refunded"]);

    // None of it opened anything or moved money.
    expect(((await (await signed(buyer, "GET", "/api/disputes")).json()) as { disputes: unknown[] }).disputes).toHaveLength(0);
    expect(await balanceOf(buyer.buyerId)).toBe(balance);
    // And another buyer cannot read this buyer's disputes.
    const dispute = await openOk(buyer, paid.receipt);
    const peek = await signed(stranger, "GET", `/api/disputes/${dispute.id}`);
    expect([peek.status, await errorCode(peek)]).toEqual([404, "dispute_not_found"]);
    const badId = await signed(buyer, "GET", "/api/disputes/nope");
    expect([badId.status, await errorCode(badId)]).toEqual([400, "invalid_request"]);
  });

  it("ops endpoints need the ops token and valid input", async () => {
    const buyer = await newBuyer(10_000);
    const dispute = await openOk(buyer, (await paidRequest(buyer)).receipt);
    for (const token of [null, "wrong-token"]) {
      for (const [path, json] of [["/ops/disputes", undefined], [`/ops/disputes/${dispute.id}`, undefined], [`/ops/disputes/${dispute.id}/resolve`, { decision: "refund" }]] as const) {
        const res = await ops(path, { token, json });
        expect([res.status, await errorCode(res)], `${path} ${token}`).toEqual([401, "unauthorized"]);
      }
    }
    const cases: [string, unknown, number, string][] = [
      [`/ops/disputes/${dispute.id}/resolve`, { decision: "refund-ish" }, 400, "invalid_request"],
      [`/ops/disputes/${dispute.id}/resolve`, { decision: "refund", note: "n".repeat(501) }, 400, "invalid_request"],
      [`/ops/disputes/${dispute.id}/resolve`, "{", 400, "invalid_json"],
      ["/ops/disputes/dsp_nothex/resolve", { decision: "refund" }, 400, "invalid_request"],
      [`/ops/disputes/dsp_${"0".repeat(32)}/resolve`, { decision: "refund" }, 404, "dispute_not_found"],
    ];
    for (const [path, json, status, code] of cases) {
      const res = await ops(path, { json });
      expect([res.status, await errorCode(res)], `${path} ${JSON.stringify(json)}`).toEqual([status, code]);
    }
    for (const [path, status, code] of [
      ["/ops/disputes?status=pending", 400, "invalid_request"],
      ["/ops/disputes?limit=0", 400, "invalid_request"],
      ["/ops/disputes?limit=5000", 400, "invalid_request"],
      [`/ops/disputes/dsp_${"f".repeat(32)}`, 404, "dispute_not_found"],
    ] as const) {
      const res = await ops(path);
      expect([res.status, await errorCode(res)], path).toEqual([status, code]);
    }
    // Nothing of that changed the dispute.
    expect(((await (await ops(`/ops/disputes/${dispute.id}`)).json()) as { dispute: DisputeRecord }).dispute.status).toBe("open");
  });

  it("the ops list pages oldest first; a buyer can have at most MAX_OPEN_DISPUTES open", async () => {
    const buyer = await newBuyer(1_000_000);
    const ids: string[] = [];
    for (let i = 0; i < MAX_OPEN_DISPUTES; i++) ids.push((await openOk(buyer, (await paidRequest(buyer)).receipt, "other")).id);
    const extra = await open(buyer, { receipt: (await paidRequest(buyer)).receipt, reason: "other" });
    expect([extra.status, await errorCode(extra)]).toEqual([429, "too_many_disputes"]);
    // Pages of 7, oldest first, covering every open dispute once.
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page = (await (await ops(`/ops/disputes?status=open&limit=7${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`)).json()) as { disputes: { id: string }[]; cursor: string | null };
      expect(page.disputes.length).toBeLessThanOrEqual(7);
      seen.push(...page.disputes.map((d) => d.id));
      cursor = page.cursor;
    } while (cursor);
    const mine = seen.filter((id) => ids.includes(id));
    expect(mine).toEqual(ids);
    // Resolving one makes room for another.
    expect((await ops(`/ops/disputes/${ids[0]}/resolve`, { json: { decision: "reject" } })).status).toBe(200);
    expect((await open(buyer, { receipt: (await paidRequest(buyer)).receipt, reason: "other" })).status).toBe(201);
  });
});

describe("disputes in the wallet object", () => {
  it("a payment under an open dispute outlives the claim retention; it goes once the dispute is resolved", async () => {
    const buyerId = [...crypto.getRandomValues(new Uint8Array(32))].map((b) => b.toString(16).padStart(2, "0")).join("");
    const w = wallet(buyerId);
    await w.topUp({ buyerId, eventId: "seed", amountMicros: 10_000, source: "ops" });
    const longAgo = Date.now() - CLAIM_RETENTION_MS - 86_400_000;
    for (const proofId of ["disputed", "plain"]) expect((await w.claimAndDebit({ buyerId, proofId, amountMicros: 1000, expiresAt: longAgo, method: "credit" })).ok).toBe(true);
    const opened = await w.openDispute({ buyerId, disputeId: `dsp_${"a".repeat(32)}`, proofId: "disputed", requestId: `req_${"b".repeat(32)}`, reason: "other", note: null });
    expect(opened).toMatchObject({ ok: true, value: { created: true } });
    const claims = () => runInDurableObject(w, (_i, state) => state.storage.sql.exec<{ proof_id: string }>("SELECT proof_id FROM claims ORDER BY proof_id").toArray().map((r) => r.proof_id));
    await runDurableObjectAlarm(w);
    expect(await claims()).toEqual(["disputed"]);
    expect(await w.resolveDispute(`dsp_${"a".repeat(32)}`, "refund", null)).toMatchObject({ ok: true, value: { changed: true, dispute: { refundedMicros: 1000 } } });
    expect((await w.summary()).balanceMicros).toBe(9000);
    await runDurableObjectAlarm(w);
    expect(await claims()).toEqual([]);
    // The dispute itself stays (for its buyer and the ops index).
    expect(await w.dispute(`dsp_${"a".repeat(32)}`)).toMatchObject({ status: "resolved", resolution: "refunded" });
  });

  it("a lost write to the ops index is made good by the wallet's alarm", async () => {
    const buyer = await newBuyer(10_000);
    const dispute = await openOk(buyer, (await paidRequest(buyer)).receipt);
    const w = wallet(buyer.buyerId);
    // Simulate a KV write that failed: the entry is missing and the row is still dirty.
    await e.DISPUTES.delete(disputeIndexKey(dispute.id));
    await runInDurableObject(w, (_i, state) => void state.storage.sql.exec("UPDATE disputes SET indexed = 0"));
    expect((await ops(`/ops/disputes/${dispute.id}`)).status).toBe(404);
    await runDurableObjectAlarm(w);
    const back = await ops(`/ops/disputes/${dispute.id}`);
    expect(back.status).toBe(200);
    expect(((await back.json()) as { dispute: DisputeRecord }).dispute).toMatchObject({ id: dispute.id, buyerId: buyer.buyerId, status: "open" });
  });
});

describe("disputes and the principal (B2)", () => {
  afterEach(() => vi.restoreAllMocks());

  it("PR9 PR19: opening, reading and resolving a dispute stores and logs only the buyer id hash, never the DID", async () => {
    const logged: string[] = [];
    for (const level of ["log", "info", "warn", "error", "debug"] as const) {
      vi.spyOn(console, level).mockImplementation((...args: unknown[]) => void logged.push(args.map(String).join(" ")));
    }
    const buyer = await newBuyer(10_000);
    const dispute = await openOk(buyer, (await paidRequest(buyer)).receipt, "not_served", "please check");
    await signed(buyer, "GET", `/api/disputes/${dispute.id}`);
    await signed(buyer, "GET", "/api/disputes");
    await ops(`/ops/disputes/${dispute.id}/resolve`, { json: { decision: "refund" } });
    await runDurableObjectAlarm(wallet(buyer.buyerId));
    const walletDump = await runInDurableObject(wallet(buyer.buyerId), (_i, state) =>
      JSON.stringify(state.storage.sql.exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'sqlite_%'").toArray()
        .map((t) => state.storage.sql.exec(`SELECT * FROM "${t.name}"`).toArray())));
    const kv: unknown[] = [];
    for (const ns of [e.DISPUTES, e.SPEND]) for (const k of (await ns.list()).keys) kv.push(k, await ns.get(k.name));
    const sinks = { wallet: walletDump, kv: JSON.stringify(kv), logs: logged.join("\n") };
    expect(sinks.wallet).toContain(dispute.id);
    expect(sinks.kv).toContain(buyer.buyerId);
    const multibase = buyer.did.slice("did:key:".length);
    for (const [sink, text] of Object.entries(sinks)) {
      for (const needle of [buyer.did, multibase, buyer.file.privateJwk.x!]) expect(text.includes(needle), `${sink} contains the DID`).toBe(false);
    }
  });
});
