// The optional buyer account (B4, PR11) through the Worker's real entry: sign in with the
// dev sign-in (the same JWT and session as sellers), attach buyer ids by a signature of
// their key bound to the account and a fresh nonce, see the spend of real paid requests
// (made through the paid proxy with the buyer client's paying fetch, against keys listed
// through the seller API), top up by card on the fake Stripe, and delete the account with
// everything in it. Anonymous buying stays as it is: no request of the paid path needs or
// sees an account.
import { env } from "cloudflare:workers";
import { runDurableObjectAlarm } from "cloudflare:test";
import { beforeAll, describe, expect, it } from "vitest";
import { createPayingFetch } from "../../buyer/index.ts";
import { generateBuyerKey, type BuyerKey } from "../../buyer/keys.ts";
import {
  ACCOUNT_TOPUP_PATH, ATTACH_PATH, BUYER_ACCOUNT_PATH, HISTORY_PATH, newAttachProof,
  type AttachProof, type BuyerAccountHistory, type BuyerAccountView,
} from "../../schema/buyer-account.ts";
import { asSeller } from "../../schema/tables.ts";
import { ACCOUNT_HEADERS, accountMessage, accountRequestHeaders } from "../../core/credit-method.ts";
import { sign } from "../../core/did.ts";
import { sha256Hex, toBase64Url } from "../../core/encoding.ts";
import type { Env } from "../../core/env.ts";
import { parseReceipt } from "../../worker/payments/index.ts";
import { addKey, as, call, ownerDb, signIn, worker, type TestSeller } from "./helpers.ts";

const e = env as unknown as Env;
const CHAT = "/openai/v1/chat/completions";
const PRICE = 3000;

interface Account {
  id: string;
  email: string;
  token: string;
}

let counter = 0;
/** A buyer sign-in: the dev sign-in with `account: "buyer"` (a fresh email). */
async function signInBuyer(label: string): Promise<Account> {
  const email = `${label}-${Date.now().toString(36)}${(counter++).toString(36)}${Math.random().toString(36).slice(2, 6)}@example.test`;
  const res = await call("/auth/dev/sign-in", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1" }, body: JSON.stringify({ email, account: "buyer" }) });
  expect(res.status, await res.clone().text()).toBe(200);
  const body = (await res.json()) as { token: string; buyer: { id: string; email: string } };
  return { id: body.buyer.id, email: body.buyer.email, token: body.token };
}

/** A call with the account's session as a bearer token (as the CLI makes it). */
function asAccount(a: { token: string }, path: string, init: RequestInit & { json?: unknown } = {}) {
  return as(a as TestSeller, path, init);
}

/** The attach request: `proof` (default: fresh, for `account`) signed with `key`, sent with `account`'s session. */
async function attach(account: { token: string; id: string }, key: BuyerKey, opts: { proof?: AttachProof; headers?: Record<string, string>; body?: string } = {}) {
  const body = opts.body ?? JSON.stringify(opts.proof ?? newAttachProof(account.id));
  const signed = opts.headers ?? (await accountRequestHeaders(key, { method: "POST", pathAndQuery: ATTACH_PATH, body }));
  return call(ATTACH_PATH, { method: "POST", headers: { authorization: `Bearer ${account.token}`, "content-type": "application/json", ...signed }, body });
}

/** The error code of an answer, or (for a success that should have been an error) its body. */
const errorCode = async (res: Response) => {
  const body = (await res.json().catch(() => null)) as { error?: { code?: string } } | null;
  return body?.error?.code ?? `no error: ${JSON.stringify(body)}`;
};
const statusAndCode = async (res: Response) => [res.status, await errorCode(res)] as const;

async function fundedBuyer(micros = 1_000_000): Promise<BuyerKey> {
  const key = await generateBuyerKey();
  const res = await call("/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId: key.buyerId, amountMicros: micros }) });
  expect(res.status, await res.clone().text()).toBe(200);
  return key;
}

/** `n` paid chat completions with `key` through the real paid proxy; the receipts' proof ids. */
async function buy(key: BuyerKey, n: number): Promise<string[]> {
  const pay = createPayingFetch({ baseUrl: "https://cn2.test", privateKey: key, fetch: ((input: RequestInfo | URL, init?: RequestInit) => worker().fetch(input as string, init)) as typeof fetch });
  const proofs: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await pay(`https://cn2.test${CHAT}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] }) });
    expect(res.status, await res.clone().text()).toBe(200);
    await res.text();
    const receipt = parseReceipt(res.headers.get("payment-receipt")!);
    expect(receipt).toMatchObject({ amountMicros: PRICE, refunded: false });
    proofs.push(receipt!.reference);
  }
  return proofs;
}

const history = async (a: Account, query = "") => {
  const res = await asAccount(a, `${HISTORY_PATH}${query}`);
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as BuyerAccountHistory;
};
const accountOf = async (a: Account) => ((await (await asAccount(a, BUYER_ACCOUNT_PATH)).json()) as { account: BuyerAccountView }).account;
const wallet = (buyerId: string) => e.BUYER_WALLET.get(e.BUYER_WALLET.idFromName(buyerId));
const spendKeys = async (buyerId: string) => (await e.SPEND.list({ prefix: `spend:${buyerId}:` })).keys.map((k) => k.name);
const attachedIn = (accountId: string) => ownerDb((sql) => sql<{ buyer_id_hash: string }[]>`select buyer_id_hash from public.buyer_account_ids where account_id = ${accountId} order by attached_at`)
  .then((rows) => rows.map((r) => r.buyer_id_hash));

beforeAll(async () => {
  // One key, listed through the seller API, serves every paid request of this file.
  await addKey({ config: { priceMicros: PRICE } });
});

describe("signing in as a buyer (B4)", () => {
  it("opens a buyer account and no seller account; without a session every route answers 401", async () => {
    const a = await signInBuyer("opens");
    const account = await accountOf(a);
    expect(account).toMatchObject({ id: a.id, email: a.email, buyerIds: [] });
    await ownerDb(async (sql) => {
      expect(await sql`select email from public.buyer_accounts where id = ${a.id}`).toEqual([{ email: a.email }]);
      expect(await sql`select 1 from public.sellers where id = ${a.id}`).toHaveLength(0);
    });
    for (const [method, path] of [["GET", BUYER_ACCOUNT_PATH], ["POST", ATTACH_PATH], ["GET", HISTORY_PATH], ["POST", ACCOUNT_TOPUP_PATH], ["DELETE", BUYER_ACCOUNT_PATH], ["DELETE", `${ATTACH_PATH}/${"a".repeat(64)}`]] as const) {
      expect(await statusAndCode(await call(path, { method })), `${method} ${path}`).toEqual([401, "unauthorized"]);
    }
  });

  it("a seller's sign-in opens its buyer account on first use (one identity, both accounts)", async () => {
    const seller = await signIn("both");
    expect(await statusAndCode(await as(seller, BUYER_ACCOUNT_PATH))).toEqual([404, "buyer_account_not_found"]);
    const opened = await as(seller, BUYER_ACCOUNT_PATH, { method: "POST" });
    expect(opened.status).toBe(200);
    expect(((await opened.json()) as { account: BuyerAccountView }).account).toMatchObject({ id: seller.id, email: seller.email, buyerIds: [] });
    expect((await as(seller, "/api/me")).status).toBe(200);
  });
});

describe("attaching buyer ids by proving the key (B4, B2)", () => {
  it("attaches with a valid proof, once per id, and the account shows it", async () => {
    const a = await signInBuyer("attach");
    const key = await generateBuyerKey();
    const first = await attach(a, key);
    expect(first.status, await first.clone().text()).toBe(201);
    expect(await first.json()).toMatchObject({ buyerId: key.buyerId });
    // Again with a fresh proof: already there, nothing new.
    expect((await attach(a, key)).status).toBe(200);
    const p256 = await generateBuyerKey("P-256");
    expect((await attach(a, p256)).status).toBe(201);
    expect((await accountOf(a)).buyerIds.map((b) => b.buyerId)).toEqual([key.buyerId, p256.buyerId]);
    expect(await attachedIn(a.id)).toEqual([key.buyerId, p256.buyerId]);
  });

  it("refuses a missing, forged, altered, stale, replayed or foreign proof with its own code, and attaches nothing", async () => {
    const a = await signInBuyer("refuse");
    const mallory = await signInBuyer("mallory");
    const key = await generateBuyerKey();
    const other = await generateBuyerKey();
    const proof = newAttachProof(a.id);
    const body = JSON.stringify(proof);

    // No signature at all.
    expect(await statusAndCode(await attach(a, key, { headers: {} }))).toEqual([403, "proof_invalid"]);
    // Signed by another key than the DID it names.
    const forged = await accountRequestHeaders(other, { method: "POST", pathAndQuery: ATTACH_PATH, body });
    expect(await statusAndCode(await attach(a, key, { headers: { ...forged, [ACCOUNT_HEADERS.did]: key.did } }))).toEqual([403, "proof_invalid"]);
    // Signed for one body, sent with another (the signature covers the body's SHA-256).
    const signed = await accountRequestHeaders(key, { method: "POST", pathAndQuery: ATTACH_PATH, body });
    expect(await statusAndCode(await attach(a, key, { headers: signed, body: JSON.stringify(newAttachProof(a.id)) }))).toEqual([403, "proof_invalid"]);
    // Signed for another route (the balance call's signature proves nothing here).
    const elsewhere = await accountRequestHeaders(key, { method: "POST", pathAndQuery: "/api/credit/budget", body });
    expect(await statusAndCode(await attach(a, key, { headers: elsewhere, body }))).toEqual([403, "proof_invalid"]);
    // Stale: signed an hour ago.
    const time = String(Math.floor(Date.now() / 1000) - 3600);
    const message = accountMessage({ method: "POST", pathAndQuery: ATTACH_PATH, time, bodySha256: await sha256Hex(body) });
    const stale = { [ACCOUNT_HEADERS.did]: key.did, [ACCOUNT_HEADERS.time]: time, [ACCOUNT_HEADERS.signature]: toBase64Url(await sign(key.alg, key.privateKey, message)) };
    expect(await statusAndCode(await attach(a, key, { headers: stale, body }))).toEqual([403, "proof_expired"]);
    // Foreign: A's valid proof, replayed by Mallory with her own session.
    expect(await statusAndCode(await attach(mallory, key, { headers: signed, body }))).toEqual([403, "proof_wrong_account"]);
    // Malformed proof body, correctly signed.
    const junk = JSON.stringify({ accountId: a.id });
    expect(await statusAndCode(await attach(a, key, { body: junk }))).toEqual([400, "invalid_request"]);
    expect(await attachedIn(a.id)).toEqual([]);
    expect(await attachedIn(mallory.id)).toEqual([]);

    // The valid proof works once; detached, the same request cannot attach again.
    expect((await attach(a, key, { headers: signed, body })).status).toBe(201);
    expect((await asAccount(a, `${ATTACH_PATH}/${key.buyerId}`, { method: "DELETE" })).status).toBe(200);
    expect(await statusAndCode(await attach(a, key, { headers: signed, body }))).toEqual([409, "proof_replayed"]);
    expect(await attachedIn(a.id)).toEqual([]);

    // Attached to A, the id cannot be attached by Mallory, even with a valid proof of her own.
    expect((await attach(a, key)).status).toBe(201);
    expect(await statusAndCode(await attach(mallory, key))).toEqual([409, "buyer_id_attached_elsewhere"]);
    expect(await attachedIn(a.id)).toEqual([key.buyerId]);
    expect(await attachedIn(mallory.id)).toEqual([]);
  });

  it("detaches an id (the account's own choice); an id not attached here is a 404", async () => {
    const a = await signInBuyer("detach");
    const key = await generateBuyerKey();
    expect((await attach(a, key)).status).toBe(201);
    expect(await statusAndCode(await asAccount(a, `${ATTACH_PATH}/${"b".repeat(64)}`, { method: "DELETE" }))).toEqual([404, "buyer_id_not_attached"]);
    expect(await statusAndCode(await asAccount(a, `${ATTACH_PATH}/nope`, { method: "DELETE" }))).toEqual([400, "invalid_request"]);
    const res = await asAccount(a, `${ATTACH_PATH}/${key.buyerId}`, { method: "DELETE" });
    expect(await res.json()).toEqual({ buyerId: key.buyerId, detached: true });
    expect(await attachedIn(a.id)).toEqual([]);
  });
});

describe("spend history of attached ids (B4, B5)", () => {
  it("shows the real paid requests of attached ids only, for 90 days", async () => {
    const a = await signInBuyer("history");
    const mine = await fundedBuyer();
    const notMine = await fundedBuyer();
    const proofs = await buy(mine, 3);
    await buy(notMine, 2);
    expect((await attach(a, mine)).status).toBe(201);

    const h = await history(a);
    expect(h.days).toBe(90);
    expect(h.buyerIds.map((b) => b.buyerId)).toEqual([mine.buyerId]);
    const [entry] = h.buyerIds;
    const today = new Date().toISOString().slice(0, 10);
    expect(entry!.days).toEqual([{ day: today, spentMicros: 3 * PRICE, refundedMicros: 0, requests: 3 }]);
    // Every paid request, by the proof id its receipt carries, and nothing else debited.
    const debits = entry!.entries.filter((x) => x.kind === "debit");
    expect(debits.map((x) => x.ref).sort()).toEqual([...proofs].sort());
    expect(debits.every((x) => x.amountMicros === PRICE)).toBe(true);
    expect(entry!.entries.filter((x) => x.kind === "topup").map((x) => x.amountMicros)).toEqual([1_000_000]);
    expect(entry!.balanceMicros).toBe(1_000_000 - 3 * PRICE);
    expect(entry!.totals).toEqual({ spentMicros: 3 * PRICE, refundedMicros: 0, requests: 3 });
    expect(h.totals).toEqual(entry!.totals);
    expect(JSON.stringify(h)).not.toContain(notMine.buyerId);

    // Spend made after attaching shows too; a detached id stops showing at once.
    const more = await buy(mine, 1);
    const after = await history(a, "?days=1");
    expect(after.buyerIds[0]!.totals.requests).toBe(4);
    expect(after.buyerIds[0]!.entries.map((x) => x.ref)).toContain(more[0]);
    expect(await statusAndCode(await asAccount(a, `${HISTORY_PATH}?days=91`))).toEqual([400, "invalid_request"]);
    expect((await asAccount(a, `${ATTACH_PATH}/${mine.buyerId}`, { method: "DELETE" })).status).toBe(200);
    expect((await history(a)).buyerIds).toEqual([]);
  });

  it("another account sees nothing of it (row-level security), and cannot detach or top up its ids", async () => {
    const a = await signInBuyer("owner");
    const b = await signInBuyer("other");
    const key = await fundedBuyer();
    await buy(key, 1);
    expect((await attach(a, key)).status).toBe(201);

    expect((await accountOf(b)).buyerIds).toEqual([]);
    const seen = await history(b);
    expect(seen.buyerIds).toEqual([]);
    expect(JSON.stringify(seen)).not.toContain(key.buyerId);
    expect(await statusAndCode(await asAccount(b, `${ATTACH_PATH}/${key.buyerId}`, { method: "DELETE" }))).toEqual([404, "buyer_id_not_attached"]);
    expect(await statusAndCode(await asAccount(b, ACCOUNT_TOPUP_PATH, { method: "POST", json: { buyerId: key.buyerId, amountMicros: 5_000_000 } }))).toEqual([404, "buyer_id_not_attached"]);
    expect(await attachedIn(a.id)).toEqual([key.buyerId]);
    // Behind the API: as B, the database itself shows none of A's rows.
    await ownerDb(async (sql) => {
      const rows = await asSeller(sql, b.id, async (tx) => ({
        accounts: await tx`select id from public.buyer_accounts`,
        ids: await tx`select buyer_id_hash from public.buyer_account_ids`,
      }), { email: b.email });
      expect(rows.accounts.map((r) => r.id)).toEqual([b.id]);
      expect(rows.ids).toHaveLength(0);
    });
  });
});

describe("top-up by card from the account", () => {
  it("starts a Stripe Checkout for an attached id on the fake Stripe; paid, the credit reaches that id", async () => {
    const a = await signInBuyer("topup");
    const key = await generateBuyerKey();
    expect((await attach(a, key)).status).toBe(201);
    await fetch(`${e.STRIPE_API_BASE}/__fake/reset`, { method: "POST" });

    const res = await asAccount(a, ACCOUNT_TOPUP_PATH, { method: "POST", json: { buyerId: key.buyerId, amountMicros: 5_000_000 } });
    expect(res.status, await res.clone().text()).toBe(201);
    const session = (await res.json()) as { sessionId: string; url: string; amountMicros: number };
    expect(session).toMatchObject({ sessionId: expect.stringMatching(/^cs_test_/), amountMicros: 5_000_000 });
    const { requests } = (await (await fetch(`${e.STRIPE_API_BASE}/__fake/log`)).json()) as { requests: { path: string; authorized: boolean; form: Record<string, string> }[] };
    const sent = requests.filter((r) => r.path === "/v1/checkout/sessions");
    expect(sent).toHaveLength(1);
    expect(sent[0]!.authorized).toBe(true);
    expect(sent[0]!.form).toMatchObject({ "metadata[cn2_buyer_id]": key.buyerId, client_reference_id: key.buyerId, "line_items[0][price_data][unit_amount]": "500" });
    // Stripe learns the buyer id and the amount, not the account.
    expect(JSON.stringify(sent[0]!.form)).not.toContain(a.id);
    expect(JSON.stringify(sent[0]!.form)).not.toContain(a.email);

    // Stripe completes the session and sends its signed event to the Worker's webhook.
    const done = (await (await fetch(`${e.STRIPE_API_BASE}/__fake/sessions/${session.sessionId}/complete`, { method: "POST" })).json()) as { payload: string; signature: string };
    const hook = await call("/webhooks/stripe", { method: "POST", headers: { "stripe-signature": done.signature }, body: done.payload });
    expect(await hook.json()).toMatchObject({ credited: true });
    expect((await history(a)).buyerIds[0]!.balanceMicros).toBe(5_000_000);

    // Only attached ids, only valid amounts.
    expect(await statusAndCode(await asAccount(a, ACCOUNT_TOPUP_PATH, { method: "POST", json: { buyerId: "c".repeat(64), amountMicros: 5_000_000 } }))).toEqual([404, "buyer_id_not_attached"]);
    expect(await statusAndCode(await asAccount(a, ACCOUNT_TOPUP_PATH, { method: "POST", json: { buyerId: key.buyerId, amountMicros: 5 } }))).toEqual([400, "invalid_request"]);
  });
});

describe("deleting the buyer account (PR11)", () => {
  /** Every text column of every public table that holds `needle` (the owner sees through RLS). */
  async function publicRowsHolding(needle: string): Promise<string[]> {
    return ownerDb(async (sql) => {
      const columns = await sql<{ table_name: string; column_name: string }[]>`
        select c.table_name, c.column_name from information_schema.columns c
          join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name and t.table_type = 'BASE TABLE'
         where c.table_schema = 'public' and c.data_type in ('text', 'character varying', 'uuid', 'jsonb')`;
      expect(columns.length).toBeGreaterThan(20);
      const found: string[] = [];
      for (const { table_name, column_name } of columns) {
        const [hit] = await sql`select 1 from ${sql(table_name)} where ${sql(column_name)}::text ilike ${`%${needle}%`} limit 1`;
        if (hit) found.push(`${table_name}.${column_name}`);
      }
      return found;
    });
  }

  it("PR11: deleting the account removes the account, its email, its attachments and its ids' spend history; a second delete is a clean 404", async () => {
    const a = await signInBuyer("deleting");
    const key = await fundedBuyer();
    const proofs = await buy(key, 2);
    expect((await attach(a, key)).status).toBe(201);
    // The wallet's alarm copies spend to KV (B5); run it so the copy exists to be erased.
    await runDurableObjectAlarm(wallet(key.buyerId));
    expect(await spendKeys(key.buyerId)).toHaveLength(1);
    expect((await history(a)).buyerIds[0]!.totals.requests).toBe(2);
    expect(await publicRowsHolding(a.email)).toEqual(["buyer_accounts.email"]);
    expect(await publicRowsHolding(key.buyerId)).toEqual(["buyer_account_ids.buyer_id_hash"]);
    const balanceBefore = (await wallet(key.buyerId).summary()).balanceMicros;

    const res = await asAccount(a, BUYER_ACCOUNT_PATH, { method: "DELETE" });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(await res.json()).toEqual({ deleted: true, detachedBuyerIds: 1, erasedSpendDays: 1, signInDeleted: true });
    expect(res.headers.get("set-cookie")).toMatch(/^__Host-cn2_session=;.*Max-Age=0/);

    // Postgres: no row anywhere holds the email, the account id or the buyer id.
    for (const needle of [a.email, a.id, key.buyerId]) expect(await publicRowsHolding(needle), needle).toEqual([]);
    // The sign-in itself: Supabase's auth user is deleted (Admin API; the fake Supabase records it).
    const deleted = (await (await fetch(`${e.SUPABASE_URL}/__fake/deleted`)).json()) as { deleted: string[] };
    expect(deleted.deleted).toContain(a.id);
    // The spend history: per-day spend and the history list in the wallet, and the KV copy.
    expect(await wallet(key.buyerId).spendDays()).toEqual([]);
    const summary = await wallet(key.buyerId).summary(500);
    expect(summary.history).toEqual([]);
    expect(await spendKeys(key.buyerId)).toEqual([]);
    // A later alarm does not bring the copy back.
    await runDurableObjectAlarm(wallet(key.buyerId));
    expect(await spendKeys(key.buyerId)).toEqual([]);
    // What stays is the money: the balance is the key's, spendable anonymously as before.
    expect(summary.balanceMicros).toBe(balanceBefore);

    // The same session finds nothing: a second delete, the history, the account.
    expect(await statusAndCode(await asAccount(a, BUYER_ACCOUNT_PATH, { method: "DELETE" }))).toEqual([404, "buyer_account_not_found"]);
    expect(await statusAndCode(await asAccount(a, HISTORY_PATH))).toEqual([404, "buyer_account_not_found"]);
    expect(await statusAndCode(await asAccount(a, BUYER_ACCOUNT_PATH))).toEqual([404, "buyer_account_not_found"]);

    // Anonymous buying with the same key is unchanged; its tracking starts afresh.
    const later = await buy(key, 1);
    expect(later[0]).not.toBe(proofs[0]);
    expect(await wallet(key.buyerId).spendDays()).toEqual([{ day: new Date().toISOString().slice(0, 10), spentMicros: PRICE, refundedMicros: 0, requests: 1 }]);
  });

  it("PR11: a sign-in that is also a seller keeps its seller account; the buyer account, email row and attachments go", async () => {
    const seller = await signIn("both-delete");
    const key = await fundedBuyer();
    await buy(key, 1);
    expect((await attach(seller, key)).status).toBe(201);
    // Cookie-authenticated deletion is a write: it needs our origin and the CSRF header.
    const cookie = `__Host-cn2_session=${seller.token}`;
    expect(await statusAndCode(await call(BUYER_ACCOUNT_PATH, { method: "DELETE", headers: { cookie } }))).toEqual([403, "csrf_failed"]);
    expect(await attachedIn(seller.id)).toEqual([key.buyerId]);

    const res = await call(BUYER_ACCOUNT_PATH, { method: "DELETE", headers: { cookie, "cn2-csrf": "1", origin: "https://cn2.test" } });
    expect(await res.json()).toEqual({ deleted: true, detachedBuyerIds: 1, erasedSpendDays: 1, signInDeleted: false });
    // The session stays: it is the seller's too.
    expect(res.headers.get("set-cookie")).toBeNull();
    await ownerDb(async (sql) => {
      expect(await sql`select 1 from public.buyer_accounts where id = ${seller.id}`).toHaveLength(0);
      expect(await sql`select 1 from public.buyer_account_ids where buyer_id_hash = ${key.buyerId}`).toHaveLength(0);
      expect(await sql`select email from public.sellers where id = ${seller.id}`).toEqual([{ email: seller.email }]);
    });
    const deleted = (await (await fetch(`${e.SUPABASE_URL}/__fake/deleted`)).json()) as { deleted: string[] };
    expect(deleted.deleted).not.toContain(seller.id);
    expect(await wallet(key.buyerId).spendDays()).toEqual([]);
    expect((await as(seller, "/api/me")).status).toBe(200);
    expect(await statusAndCode(await as(seller, BUYER_ACCOUNT_PATH, { method: "DELETE" }))).toEqual([404, "buyer_account_not_found"]);
  });
});

describe("anonymous buying stays as it is", () => {
  it("a key pays, reads its balance and sets its budget with no account, attached or not", async () => {
    const a = await signInBuyer("anon");
    const attached = await fundedBuyer();
    const loose = await fundedBuyer();
    expect((await attach(a, attached)).status).toBe(201);
    for (const key of [attached, loose]) {
      expect(await buy(key, 1)).toHaveLength(1);
      const path = "/api/credit/balance";
      const balance = await call(path, { headers: await accountRequestHeaders(key, { method: "GET", pathAndQuery: path, body: "" }) });
      expect(balance.status).toBe(200);
      expect(await balance.json()).toMatchObject({ buyerId: key.buyerId, balanceMicros: 1_000_000 - PRICE });
    }
    // The paid path never consults an account: the answers carry no session, cookie or account id.
    const res = await call(CHAT, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "gpt-4o-mini", messages: [] }) });
    expect(res.status).toBe(402);
    expect(res.headers.get("set-cookie")).toBeNull();
    expect(await res.text()).not.toContain(a.id);
  });
});
