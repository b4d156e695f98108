// Passes through the Worker's real entry (docs/payments.md, "Passes"): a buyer's signed
// payment that asks for one is answered with a pass for its route, and the buyer client then pays each call
// with an HMAC proof under it instead of a signed credential. The books read as with
// signed payments (one claim per request once the tab closes), each proof is taken once,
// and any refusal falls back to the signed way with a fresh challenge, moving no money.
import { runInDurableObject } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { generateBuyerKey, type BuyerKey } from "../../buyer/keys.ts";
import { createPayingFetch } from "../../buyer/index.ts";
import { H } from "../../schema/wire.ts";
import { formatPassProof, parsePassGrant, passProofInput } from "../../core/pass.ts";
import { forgetPasses, grantPass, PASS_TTL_MS } from "../../worker/payments/passes.ts";
import { retireTabs, TAB_BUSY_DRAWS } from "../../worker/payments/tabs.ts";
import { addKey, api, call, demo, resetDemo } from "./helpers.ts";
import { ask, balanceOf, CHAT, chatJson, e, fund, problem, receiptOf, ROUTE, wallet } from "./payments-helpers.ts";

const made: string[] = [];

async function key(priceMicros: number) {
  const k = await addKey({ config: { priceMicros, region: "us" } });
  made.push(k.keyId);
  return k;
}

beforeEach(async () => {
  await resetDemo();
  await retireTabs(e);
  forgetPasses();
  for (const keyId of made.splice(0)) expect((await api(`/api/keys/${keyId}`, { method: "DELETE" })).status).toBe(200);
});

async function buyer(micros: number): Promise<BuyerKey> {
  const b = await generateBuyerKey();
  await fund(b.buyerId, micros);
  return b;
}

/** What crossed the wire from the buyer client: per request, how it paid. */
type Paid = "signed" | "pass" | "none";

/** createPayingFetch over the Worker's entry, recording how each request it sent paid. */
function payingClient(b: BuyerKey) {
  const sent: Paid[] = [];
  const answers: Response[] = [];
  const pay = createPayingFetch({
    baseUrl: "https://cn2.test", privateKey: b,
    fetch: async (input, init) => {
      const headers = new Headers(init?.headers);
      const pass = headers.get(H.pass);
      sent.push(headers.has("authorization") ? "signed" : pass !== null && pass !== "want" ? "pass" : "none");
      const res = await call(new URL(input instanceof Request ? input.url : String(input)).pathname, init);
      answers.push(res.clone());
      return res;
    },
  });
  const once = async () => {
    const res = await pay(`https://cn2.test${CHAT}`, { method: "POST", headers: { "content-type": "application/json" }, body: chatJson() });
    await res.arrayBuffer();
    return res;
  };
  return { once, sent, answers };
}

/** Calls until the client holds a pass: how many it took. */
async function untilPass(c: ReturnType<typeof payingClient>, limit = 4) {
  for (let i = 1; i <= limit; i++) {
    expect((await c.once()).status).toBe(200);
    if (c.answers.at(-1)!.headers.get(H.pass) !== null) return i;
  }
  throw new Error("no pass granted");
}

/** A pass proof made by hand: `grant` is the cn2-pass answer header. */
async function proofFor(grant: string, seq: number): Promise<string> {
  const { id, secret } = parsePassGrant(grant)!;
  const key = await crypto.subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return formatPassProof(id, seq, new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(passProofInput(id, seq)))));
}

const withPass = (proof: string, path = CHAT) => ask({ path, headers: { [H.pass]: proof } });

const claimsOf = (buyerId: string) => runInDurableObject(wallet(buyerId), (_i, state) =>
  state.storage.sql.exec<{ proof_id: string; amount: number; tab_id: string | null }>("SELECT proof_id, amount, tab_id FROM claims").toArray());

describe("passes (docs/payments.md)", () => {
  it("PR16: a buyer's first signed payment brings a pass, which holds nothing until drawn; the buyer pays with it, no signature and no 402 per call; once the tab closes there is one claim per paid request and the books add up", async () => {
    await key(1000);
    const b = await buyer(1_000_000);
    const c = payingClient(b);
    const before = await untilPass(c);
    // The first call: a 402, then the signed payment that asked for a pass, and got it.
    expect(before).toBe(1);
    expect(c.sent).toEqual(["none", "signed"]);
    // Granted, not yet drawn on: no tab, nothing held, one per-request claim so far.
    const granted = await wallet(b.buyerId).summary(500);
    expect(granted.heldMicros).toBe(0);
    expect(granted.balanceMicros).toBe(1_000_000 - 1000);
    const signedBefore = c.sent.filter((s) => s === "signed").length;
    for (let i = 0; i < 20; i++) expect((await c.once()).status).toBe(200);
    // After the grant, every call paid with the pass: one request each, none signed.
    expect(c.sent.slice(-20)).toEqual(Array(20).fill("pass"));
    expect(c.sent.filter((s) => s === "signed")).toHaveLength(signedBefore);
    // A pass-paid answer carries a receipt and no next challenge (the buyer holds a pass).
    const last = c.answers.at(-1)!;
    expect(last.headers.get(H.nextChallenge)).toBeNull();
    const receipt = receiptOf(last);
    expect(receipt.amountMicros).toBe(1000);
    expect(receipt.refunded).toBe(false);

    await retireTabs(e);
    const served = before + 20;
    const claims = await claimsOf(b.buyerId);
    expect(claims).toHaveLength(served);
    expect(new Set(claims.map((x) => x.proof_id)).size).toBe(served);
    // Until the buyer was busy here its pass paid with a claim in the wallet, then from a tab.
    expect(claims.filter((x) => x.tab_id === null && x.proof_id.includes(".")).length).toBeGreaterThanOrEqual(1);
    expect(claims.filter((x) => x.tab_id !== null).length).toBeGreaterThanOrEqual(20 - TAB_BUSY_DRAWS);
    const summary = await wallet(b.buyerId).summary(500);
    expect(summary.heldMicros).toBe(0);
    expect(summary.balanceMicros).toBe(1_000_000 - served * 1000);
    expect(summary.history.filter((h) => h.kind === "debit")).toHaveLength(served);
  });

  it("PR23: a pass proof is single use: 12 concurrent copies find one winner, a replay is refused with a fresh challenge, and a number far below the newest is refused", async () => {
    await key(1000);
    const b = await buyer(1_000_000);
    const c = payingClient(b);
    await untilPass(c);
    const grant = c.answers.at(-1)!.headers.get(H.pass)!;
    const proof = await proofFor(grant, 1_000);
    const results = await Promise.all(Array.from({ length: 12 }, () => withPass(proof)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    for (const r of results.filter((r) => r.status === 200)) await r.arrayBuffer();
    const refused = results.filter((r) => r.status === 402);
    expect(refused).toHaveLength(11);
    for (const r of refused) {
      expect(r.headers.get("www-authenticate")).toContain("Payment");
      expect((await problem(r)).code).toBe("replayed");
    }
    const paidSoFar = (await wallet(b.buyerId).summary(500)).history.length;
    // Far past the window, then the old one again.
    const ahead = await withPass(await proofFor(grant, 1_000 + 5_000));
    expect(ahead.status).toBe(200);
    await ahead.arrayBuffer();
    const old = await withPass(await proofFor(grant, 1_001));
    expect(old.status).toBe(402);
    expect((await problem(old)).code).toBe("replayed");
    await retireTabs(e);
    const claims = await claimsOf(b.buyerId);
    expect(claims.filter((x) => x.proof_id.endsWith(".1000"))).toHaveLength(1);
    expect(claims.filter((x) => x.proof_id.endsWith(".1001"))).toHaveLength(0);
    expect(paidSoFar).toBeGreaterThan(0);
  });

  it("P6: a pass pays only for its route, at most its amount, only with a mac made under its secret; each refusal moves no money", async () => {
    await key(1000);
    const b = await buyer(100_000);
    const grant = grantPass(b.buyerId, ROUTE, 1000);
    const other = grantPass(b.buyerId, "POST /openai/v1/embeddings", 1000);
    const cheap = grantPass(b.buyerId, "POST /openai/v1/completions", 500);

    const forged = (await proofFor(grant, 1)).replace(/\.[^.]+$/, `.${"A".repeat(43)}`);
    const tampered = await withPass(forged);
    expect(tampered.status).toBe(402);
    expect((await problem(tampered)).code).toBe("tampered");

    const elsewhere = await withPass(await proofFor(other, 1));
    expect(elsewhere.status).toBe(402);
    expect((await problem(elsewhere)).code).toBe("wrong_route");

    const dearer = await withPass(await proofFor(cheap, 1), "/openai/v1/completions");
    expect(dearer.status).toBe(402);
    const body = await problem(dearer);
    expect(body.code).toBe("price_above_pass");

    const malformed = await withPass("not-a-pass");
    expect(malformed.status).toBe(402);
    expect((await problem(malformed)).code).toBe("malformed_credential");

    await retireTabs(e);
    expect(await balanceOf(b.buyerId)).toBe(100_000);
    expect(await claimsOf(b.buyerId)).toHaveLength(0);
    // The genuine one pays, once.
    const ok = await withPass(await proofFor(grant, 1));
    expect(ok.status).toBe(200);
    await ok.arrayBuffer();
    await retireTabs(e);
    expect(await balanceOf(b.buyerId)).toBe(99_000);
  });

  it("a pass this instance does not hold (another isolate's, or expired) is refused with pass_unknown and a fresh challenge; the buyer client pays the signed way and is granted a new one", async () => {
    await key(1000);
    const b = await buyer(1_000_000);
    const c = payingClient(b);
    const before = await untilPass(c);
    expect((await c.once()).status).toBe(200);
    expect(c.sent.at(-1)).toBe("pass");

    // As if the next call reached another isolate: its pass is unknown there.
    forgetPasses();
    const fellBack = await c.once();
    expect(fellBack.status).toBe(200);
    const refusedAt = c.sent.lastIndexOf("pass");
    const refusal = c.answers[refusedAt]!;
    expect(refusal.status).toBe(402);
    expect(refusal.headers.get("www-authenticate")).toContain("Payment");
    expect((await problem(refusal)).code).toBe("pass_unknown");
    expect(c.sent.slice(refusedAt + 1)).toContain("signed");
    expect(c.answers.at(-1)!.headers.get(H.pass)).not.toBeNull();
    expect((await c.once()).status).toBe(200);
    expect(c.sent.at(-1)).toBe("pass");

    // Expired (granted PASS_TTL_MS ago): refused the same way.
    const expired = await withPass(await proofFor(grantPass(b.buyerId, ROUTE, 1000, Date.now() - PASS_TTL_MS - 1), 1));
    expect(expired.status).toBe(402);
    expect((await problem(expired)).code).toBe("pass_unknown");

    await retireTabs(e);
    const served = before + 3;
    expect(await balanceOf(b.buyerId)).toBe(1_000_000 - served * 1000);
    expect(await claimsOf(b.buyerId)).toHaveLength(served);
  });

  it("PR16 B6 P6: a pass of a buyer not busy here pays with a claim in its wallet: nothing held, the balance exact after each call, a failed call refunded once, each proof taken once", async () => {
    const k = await key(1000);
    const b = await buyer(100_000);
    const grant = grantPass(b.buyerId, ROUTE, 1000);
    // Fewer paid requests than make a buyer busy (the failed one included).
    const served = TAB_BUSY_DRAWS - 2;
    for (let seq = 1; seq <= served; seq++) {
      const res = await withPass(await proofFor(grant, seq));
      expect(res.status).toBe(200);
      expect(receiptOf(res)).toMatchObject({ reference: `${parsePassGrant(grant)!.id}.${seq}`, amountMicros: 1000, refunded: false });
      await res.arrayBuffer();
      const summary = await wallet(b.buyerId).summary(500);
      expect(summary.heldMicros).toBe(0);
      expect(summary.balanceMicros).toBe(100_000 - seq * 1000);
    }
    // Its claims are the wallet's, one per proof, with no tab.
    expect((await claimsOf(b.buyerId)).map((x) => x.tab_id)).toEqual(Array(served).fill(null));
    const replay = await withPass(await proofFor(grant, 2));
    expect(replay.status).toBe(402);
    expect((await problem(replay)).code).toBe("replayed");

    // The upstream fails: the claim is refunded at once, and the receipt says so.
    await demo("/__demo/behaviour", { credential: k.credential, status: 500 });
    const failed = await withPass(await proofFor(grant, served + 1));
    expect(failed.status).toBe(502);
    expect(receiptOf(failed)).toMatchObject({ amountMicros: 1000, refunded: true });
    await failed.arrayBuffer();
    const summary = await wallet(b.buyerId).summary(500);
    expect(summary.heldMicros).toBe(0);
    expect(summary.balanceMicros).toBe(100_000 - served * 1000);
    expect(summary.history.map((h) => h.kind)).toEqual(["refund", ...Array(served + 1).fill("debit"), "topup"]);
  });

  it("a pass does not outspend the wallet: past the balance it is refused (insufficient_balance), and every request served was paid once", async () => {
    await key(1000);
    const b = await buyer(20_000);
    const c = payingClient(b);
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push((await c.once()).status);
    expect(statuses.slice(0, 20)).toEqual(Array(20).fill(200));
    expect(statuses.slice(20).every((s) => s === 402)).toBe(true);
    expect(c.sent).toContain("pass");
    const lastPassTry = c.sent.lastIndexOf("pass");
    expect(lastPassTry).toBeGreaterThan(20);
    await retireTabs(e);
    const summary = await wallet(b.buyerId).summary(500);
    expect(summary.balanceMicros).toBe(0);
    expect(summary.heldMicros).toBe(0);
    expect(await claimsOf(b.buyerId)).toHaveLength(20);
  });
});
