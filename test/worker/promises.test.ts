// Privacy promises (reference/privacy-policy.txt, /work/shared/PROMISES.md) proven through
// the Worker's real entry: whole seller, buyer and operator sessions, the paid proxy with
// the buyer's real wallet, then a search of every sink (each response, every console line,
// every Durable Object's storage, every KV namespace, every Postgres table, every queued
// message) for what must not be there. Each search first finds something that must be
// there, so a search that looks in the wrong place fails instead of passing.
import { runDurableObjectAlarm, listDurableObjectIds, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import workerEntry from "../../worker/index.ts";
import { sha256Hex } from "../../core/encoding.ts";
import { parseVaultPrivateKeys } from "../../core/vault.ts";
import { SESSION_COOKIE } from "../../worker/seller/auth.ts";
import { keyStub } from "../../objects/seller-key/stub.ts";
import type { Env } from "../../core/env.ts";
import { DEMO, addKey, demo, demoLog, ownerDb, removeAllKeys, signIn } from "./helpers.ts";
import { receiverHook, received } from "./webhooks-helpers.ts";
import { analyticsRows, captureConsole, captureQueues, dumpAllKv, dumpAllObjects, occurrences, postgresHolding, postgresTables } from "./sinks.ts";
import {
  CHAT, ORIGIN, buyerAccountSession, buyerSession, chatBody, client, e, finishSellerSession, opsInit, operatorSession, paidCall, removeSessionKeys, sealedKey, sellerSession, signed, unique, type Client,
} from "./sessions.ts";
import { generateBuyerKey } from "../../buyer/keys.ts";

// Storage is per file, not per test: each test starts from an empty marketplace. The demo
// upstream is shared with other files: its behaviours are set per (fresh) credential and its
// log read by credential, never reset here.
beforeEach(async () => {
  await removeAllKeys();
  await removeSessionKeys();
});
let stops: (() => void)[] = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});
const capture = () => {
  const logs = captureConsole();
  const queues = captureQueues();
  stops.push(logs.stop, queues.stop);
  return { logs, queues };
};

/** Poll (bounded by count) until `check` holds. */
async function until(what: string, check: () => Promise<boolean>, tries = 200) {
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  expect.fail(`never happened: ${what}`);
}

/** Run every key object's and wallet's alarm: earnings and metadata to Postgres, spend to KV. */
async function runAllAlarms() {
  for (const ns of [e.SELLER_KEY, e.BUYER_WALLET] as unknown as DurableObjectNamespace[]) {
    for (const id of await listDurableObjectIds(ns)) await runDurableObjectAlarm(ns.get(id));
  }
}

/** Every sink but Postgres, as text by name. */
async function allSinks(opts: { logs: { text(): string }; queues: { messages: string[] }; clients?: Client[]; extra?: Record<string, string> }): Promise<Record<string, string>> {
  return {
    ...(await dumpAllObjects()),
    ...Object.fromEntries(Object.entries(await dumpAllKv()).map(([k, v]) => [`KV ${k}`, v])),
    logs: opts.logs.text(),
    queued: opts.queues.messages.join("\n"),
    ...(opts.clients ? { responses: opts.clients.flatMap((c) => c.answers.map((a) => `${a.method} ${a.path}\n${a.text}`)).join("\n\n") } : {}),
    ...opts.extra,
  };
}

/** A secret and 24-character pieces of it (start, middle, end): a partial leak is a leak too. */
const pieces = (secret: string): string[] => {
  if (secret.length < 32) return [secret];
  const mid = Math.floor(secret.length / 2) - 12;
  return [secret, secret.slice(0, 24), secret.slice(mid, mid + 24), secret.slice(-24)];
};

const variants = (b64url: string) => {
  const bytes = Uint8Array.from(atob(b64url.replaceAll("-", "+").replaceAll("_", "/")), (ch) => ch.charCodeAt(0));
  return [b64url, btoa(String.fromCharCode(...bytes)), [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")];
};

// ---- PR4 --------------------------------------------------------------------------------

describe("PR4: vault private keys exist only as Worker secrets", () => {
  it("PR4: no vault private key, plaintext credential or other Worker secret is in any response, log line, object, KV namespace, Postgres table or queued message, over success and failure paths", async () => {
    const { logs, queues } = capture();
    const hook = await receiverHook();
    const c = client();
    const plaintext = `sk-demo-${unique("PR4PLAIN")}`;
    const run = await sellerSession(c, { email: `${unique("pr4")}@example.test`, webhookUrl: hook.url, key: { region: "eu", priceMicros: 1500 }, credential: plaintext });

    // Failure paths of the vault: an unknown vault key id, a ciphertext altered, an
    // envelope sealed to another key id, a body that is not JSON.
    const unknownKid = await sealedKey(run.sellerId);
    const altered = await sealedKey(run.sellerId);
    const elsewhere = await sealedKey(run.sellerId);
    const refusals: [string, unknown][] = [
      ["unknown kid", { ...unknownKid.body, envelope: { ...unknownKid.body.envelope, kid: "no-such-kid" } }],
      ["altered", { ...altered.body, envelope: { ...altered.body.envelope, ct: (altered.body.envelope.ct[0] === "A" ? "B" : "A") + altered.body.envelope.ct.slice(1) } }],
      ["sealed for another key", { ...elsewhere.body, keyId: unknownKid.keyId }],
    ];
    for (const [what, body] of refusals) {
      const res = await c.send("/api/keys", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      expect(res.status, what).toBeGreaterThanOrEqual(400);
      expect(res.status, what).toBeLessThan(500);
    }
    expect((await c.send("/api/keys", { method: "POST", headers: { "content-type": "application/json" }, body: "{not json" })).status).toBe(400);
    // A second key stays listed to the end (the session's own is removed when it ends).
    const kept = await sealedKey(run.sellerId, { region: "eu", priceMicros: 9000 }, `sk-demo-${unique("PR4KEPT")}`);
    expect((await c.send("/api/keys", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(kept.body) })).status).toBe(201);

    // Serving: paid and unpaid, streamed; a restart and an eviction make the object decrypt again.
    const buyer = await buyerSession(c, { headers: { "cf-ipcountry": "DE" }, failOnce: () => demo("/__demo/behaviour", { credential: plaintext, status: 500, times: 1 }) });
    await operatorSession(c, { keyId: run.keyId, region: "eu", disputeId: buyer.disputeId });
    expect((await c.send(`/ops/keys/${run.keyId}/restart`, opsInit({ method: "POST" }))).status).toBe(200);
    expect((await c.send(CHAT, { method: "POST", headers: { "content-type": "application/json", "cn2-proxy-token": e.PROXY_TOKEN! }, body: chatBody({ stream: true }) })).status).toBe(200);
    // The upstream refuses the credential: the key is disabled and the seller told (a queued
    // event); the kept key serves the call instead.
    await demo("/__demo/behaviour", { credential: plaintext, status: 401 });
    expect((await c.send(CHAT, { method: "POST", headers: { "content-type": "application/json", "cn2-proxy-token": e.PROXY_TOKEN! }, body: chatBody() })).status).toBe(200);
    await until("the key.disabled webhook", async () => (await received(hook.name)).some((d) => d.eventType === "key.disabled"));

    // A misconfigured vault secret, through the Worker's own fetch: its errors name the
    // entry and the rule, never the content (which holds the real private scalar).
    const [vaultKey] = parseVaultPrivateKeys(e.VAULT_PRIVATE_KEYS);
    const broken = [
      JSON.stringify([vaultKey, { kid: "bad", jwk: { ...vaultKey!.jwk, crv: "P-384" } }]),
      JSON.stringify([{ kid: "bad", jwk: { ...vaultKey!.jwk, d: `${vaultKey!.jwk.d}!` } }]),
      `${JSON.stringify([vaultKey])} trailing`,
    ];
    for (const secret of broken) {
      const ctx = createExecutionContext();
      const res = await workerEntry.fetch!(new Request(`${ORIGIN}/api/vault/public-key`) as Request<unknown, IncomingRequestCfProperties>, { ...(e as Env), VAULT_PRIVATE_KEYS: secret }, ctx);
      await waitOnExecutionContext(ctx);
      const text = `${res.status} ${[...res.headers].join("\n")} ${await res.text()}`;
      expect(res.status, text).toBe(500);
      c.answers.push({ method: "GET", path: "/api/vault/public-key (misconfigured vault)", status: res.status, setCookies: [], text });
    }
    await finishSellerSession(c, run);
    await runAllAlarms();

    const secrets = e as unknown as Record<string, string | undefined>;
    const privateScalars = parseVaultPrivateKeys(e.VAULT_PRIVATE_KEYS).flatMap((k) => variants(k.jwk.d!));
    const devKeyD = (JSON.parse(secrets.AUTH_DEV_SIGNING_KEY!) as { d: string }).d;
    const webhookKeys = (JSON.parse(secrets.WEBHOOK_SECRET_KEYS!) as { key: string }[]).map((k) => k.key);
    const otherSecrets = [
      "OPS_TOKEN", "PROXY_TOKEN", "MPP_SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "SUPABASE_SERVICE_ROLE_KEY",
      "PERSONA_API_KEY", "PERSONA_WEBHOOK_SECRET", "TEMPO_TREASURY_KEY", "TINYBIRD_TOKEN",
    ].map((name) => {
      expect(secrets[name], name).toMatch(/.{8,}/);
      return secrets[name]!;
    });
    // Optional secrets (wrangler.toml's list), searched when this configuration sets them.
    for (const name of ["STRIPE_CONNECT_WEBHOOK_SECRET"]) if (secrets[name]) otherSecrets.push(secrets[name]!);
    const needles = [...privateScalars, plaintext, btoa(plaintext), kept.credential, btoa(kept.credential), ...variants(devKeyD), ...webhookKeys, ...otherSecrets].flatMap(pieces);

    const sinks = await allSinks({ logs, queues, clients: [c] });
    // Each sink holds what it should, so the searches below look at real data.
    expect(sinks.responses).toContain(vaultKey!.jwk.x); // the public key is served
    expect(sinks["KV VAULT"]).toContain(kept.keyId); // the envelope is stored
    expect(sinks.logs).toContain("key.disabled");
    expect(sinks.queued).toContain("key.disabled");
    expect(Object.keys(sinks).filter((k) => k.startsWith("SELLER_KEY/")).length).toBeGreaterThanOrEqual(2);
    expect(occurrences(sinks, needles)).toEqual([]);
    expect(await postgresHolding([run.keyId])).toContainEqual({ table: "public.request_log", needle: run.keyId });
    expect(await postgresHolding(needles)).toEqual([]);
  });
});

// ---- PR10 -------------------------------------------------------------------------------

describe("PR10: no IP address is stored anywhere", () => {
  const IPV4 = "198.51.100.77";
  const IPV6 = "2001:db8:7e57::77";
  const CITY = "Promisestadt7e57";
  const POSTAL = "7E57PC";
  const ASORG = "PromiseNet 7e57";
  const IP_HEADERS = {
    "cf-connecting-ip": IPV4,
    "cf-connecting-ipv6": IPV6,
    "x-forwarded-for": `${IPV4}, 10.0.0.1`,
    "x-real-ip": IPV4,
    "true-client-ip": IPV4,
    forwarded: `for=${IPV4};proto=https, for="[${IPV6}]"`,
    "cf-ipcountry": "DE",
  };
  /** The edge's data about the client (request.cf): location, network. */
  const EDGE = { country: "DE", city: CITY, postalCode: POSTAL, asOrganization: ASORG, asn: 64_577, region: "Promise Region 7e57" };

  it("PR10: requests carrying a distinctive IP (CF-Connecting-IP, X-Forwarded-For, X-Real-IP, True-Client-IP, Forwarded) and edge location through every route family leave it in no object, KV namespace, Postgres table, log line or queued message, nor send it upstream", async () => {
    const { logs, queues } = capture();
    const hook = await receiverHook();
    // Every request of the sessions carries the IP headers and the edge's data (request.cf).
    const c = client({ headers: IP_HEADERS, cf: EDGE });
    const run = await sellerSession(c, { email: `${unique("pr10")}@example.test`, webhookUrl: hook.url, key: { region: "eu", priceMicros: 1200 } });
    const buyer = await buyerSession(c, { failOnce: () => demo("/__demo/behaviour", { credential: run.credential, status: 500, times: 1 }) });
    // Flushed before the dispute is resolved, so the clawback finds the request.
    await runAllAlarms();
    await operatorSession(c, { keyId: run.keyId, region: "eu", disputeId: buyer.disputeId });
    // The public statistics and an optional buyer account holding this buyer's id.
    expect((await c.send("/api/stats")).status).toBe(200);
    await buyerAccountSession(client({ headers: IP_HEADERS, cf: EDGE }), buyer.buyer, { email: `${unique("pr10buyer")}@example.test` });
    // Buyer-facing refusals and errors, and a disablement that queues a seller event.
    expect((await c.send(CHAT, { method: "POST", headers: { "content-type": "application/json", "cn2-proxy-token": "wrong" }, body: chatBody() })).status).toBe(401);
    expect((await c.send("/openai/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json", "cn2-tier": "gold" }, body: chatBody() })).status).toBe(400);
    expect((await c.send("/api/nope")).status).toBe(404);
    await demo("/__demo/behaviour", { credential: run.credential, status: 401 });
    expect((await c.send(CHAT, { method: "POST", headers: { "content-type": "application/json", "cn2-proxy-token": e.PROXY_TOKEN! }, body: chatBody() })).status).toBeGreaterThanOrEqual(400);
    await until("the key.disabled webhook", async () => (await received(hook.name)).some((d) => d.eventType === "key.disabled"));
    await finishSellerSession(c, run);
    await runAllAlarms();

    const ipHashes = await Promise.all([IPV4, IPV6].map((ip) => sha256Hex(ip)));
    const needles = [IPV4, IPV6, "2001:0db8:7e57", CITY, POSTAL, ASORG, "Promise Region", ...ipHashes];
    const deliveries = (await received(hook.name)).map((d) => JSON.stringify(d)).join("\n");
    const sinks = await allSinks({ logs, queues, extra: { webhookDeliveries: deliveries, analytics: await analyticsRows(buyer.servedRequestIds) } });
    // The sinks hold this session's data.
    expect(sinks["KV SPEND"]).toContain(buyer.buyer.buyerId);
    expect(sinks["KV DISPUTES"]).toContain(buyer.disputeId);
    expect(Object.entries(sinks).some(([k, v]) => k.startsWith("BUYER_WALLET/") && v.includes(buyer.buyer.buyerId))).toBe(true);
    expect(sinks.queued).toContain(run.sellerId);
    expect(sinks.logs).toContain("key.disabled");
    expect(deliveries).toContain("key.disabled");
    const pg = await postgresHolding([...needles, run.sellerId, buyer.servedRequestIds[0]!, buyer.disputeId]);
    expect(pg).toEqual(expect.arrayContaining([
      { table: "public.sellers", needle: run.sellerId },
      { table: "public.webhook_deliveries", needle: run.sellerId },
      { table: "public.request_log", needle: buyer.servedRequestIds[0] },
      { table: "public.clawbacks", needle: buyer.disputeId },
    ]));
    // ...and nowhere the IP or the location.
    expect(occurrences(sinks, needles)).toEqual([]);
    expect(pg.filter((hit) => needles.includes(hit.needle))).toEqual([]);
    // Nor does a provider get it: no forwarding header reaches the upstream.
    const upstream = (await demoLog()).filter((entry) => entry.credential === run.credential);
    expect(upstream.length).toBeGreaterThanOrEqual(3);
    for (const entry of upstream) expect(entry.headerNames.filter((h) => Object.keys(IP_HEADERS).includes(h) || h === "x-forwarded-proto")).toEqual([]);
  });
});

// ---- PR13 -------------------------------------------------------------------------------

describe("PR13: no request or response body is logged, stored or inspected", () => {
  it("PR13: paid calls (served, streamed, failed over, refunded, refused upstream) leave no request or response body in the wallet, any object, KV namespace, Postgres table, log line or queued message", async () => {
    const { logs, queues } = capture();
    const seller = await signIn("pr13");
    const a = await addKey({ seller, config: { priceMicros: 1300 } });
    const b = await addKey({ seller, config: { priceMicros: 1300 } });
    const c = client();
    const buyer = await generateBuyerKey();
    expect((await c.send("/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId: buyer.buyerId, amountMicros: 100_000 }) })).status).toBe(200);

    const requestMarker = unique("REQBODY");
    const userMarker = unique("REQUSER");
    const results: { paid: Awaited<ReturnType<typeof paidCall>>; body: string }[] = [];
    for (const stream of [false, true, false, true]) {
      const paid = await paidCall(c, buyer, { body: chatBody({ content: `${requestMarker} stream=${stream}`, stream, user: userMarker }) });
      expect(paid.res.status).toBe(200);
      results.push({ paid, body: await paid.res.text() });
    }
    // Failed over and refunded: the first key's upstream fails, the body goes to the second, which fails too.
    for (const k of [a, b]) await demo("/__demo/behaviour", { credential: k.credential, status: 503, times: 1 });
    const failedOver = await paidCall(c, buyer, { body: chatBody({ content: `${requestMarker} failed over`, user: userMarker }) });
    expect(failedOver.res.status).toBeGreaterThanOrEqual(500);
    // Refunded with the upstream's own error body, passed back to the buyer (and nowhere else).
    for (const k of [a, b]) await demo("/__demo/behaviour", { credential: k.credential, status: 400, times: 1 });
    const refused = await paidCall(c, buyer, { body: chatBody({ content: `${requestMarker} refused`, user: userMarker }) });
    expect(refused.res.status).toBe(400);
    expect(await refused.res.text()).toContain("injected status 400");
    for (const r of [failedOver, refused]) expect(r.receipt).toMatch(/.+/);

    // The answers carried the bodies: the markers the search looks for are real.
    const completionIds = results.flatMap((r) => [...r.body.matchAll(/chatcmpl-[0-9a-z]{8}/g)].map((m) => m[0]));
    expect(new Set(completionIds).size).toBe(4);
    expect(results.filter((r) => r.body.includes("data: ")).length).toBe(2);
    expect(results.every((r) => r.body.includes("deterministic"))).toBe(true);
    const upstream = ((await demo("/__demo/log")).requests as { credential: string; status: number; bodyBytes: number }[]).filter((entry) => entry.credential === a.credential || entry.credential === b.credential);
    // 4 served, 2 for the failover, 1 refused; each request's body reached the upstream (forwarding is all that happens to it).
    expect(upstream.map((entry) => entry.status).sort()).toEqual([200, 200, 200, 200, 400, 503, 503]);
    expect(upstream.every((entry) => entry.bodyBytes > 0)).toBe(true);

    await runAllAlarms();
    const needles = [requestMarker, userMarker, ...new Set(completionIds), "deterministic", "injected status", "\"messages\"", "\"choices\"", "data: {"];
    const sinks = await allSinks({ logs, queues, extra: { analytics: await analyticsRows(results.map((r) => r.paid.requestId)) } });
    const wallet = Object.entries(sinks).find(([k, v]) => k.startsWith("BUYER_WALLET/") && v.includes(buyer.buyerId));
    expect(wallet, "the buyer's wallet").toBeDefined();
    for (const r of results) expect(wallet![1]).toContain(r.paid.challenge.id);
    expect(occurrences(sinks, needles)).toEqual([]);
    const ids = results.map((r) => r.paid.requestId);
    const pg = await postgresHolding([...needles, ...ids]);
    expect(pg.filter((hit) => ids.includes(hit.needle)).map((hit) => hit.table)).toEqual(ids.map(() => "public.request_log"));
    expect(pg.filter((hit) => !ids.includes(hit.needle))).toEqual([]);
    // What is kept of each request is its metadata, field for field (PR12).
    const rows = await ownerDb((sql) => sql`select * from public.request_log where request_id in ${sql(ids)}`);
    expect(rows).toHaveLength(4);
    for (const row of rows) expect(Object.keys(row).sort()).toEqual(["amount_micros", "at", "duration_ms", "key_id", "latency_ms", "method", "outcome", "provider", "request_id", "route", "status"]);
  });
});

// ---- PR21 -------------------------------------------------------------------------------

describe("PR21: EU buyers are served by EU keys only, by the edge's own country", () => {
  /** A US key cheaper than an EU key: a router that forgets the buyer's country picks the US one. */
  async function market() {
    const seller = await signIn("pr21");
    const us = await addKey({ seller, config: { region: "us", priceMicros: 500 } });
    const eu = await addKey({ seller, config: { region: "eu", priceMicros: 4000 } });
    return { us, eu };
  }
  const servedBy = async (credentials: string[]) => (await demoLog()).filter((entry) => credentials.includes(entry.credential ?? "")).map((entry) => entry.credential);

  it("PR21: request.cf.country alone (no CF-IPCountry header) quotes, charges and serves an EU buyer from EU keys only", async () => {
    const { us, eu } = await market();
    const before = (await servedBy([us.credential, eu.credential])).length;
    const german = client({ cf: { country: "DE" } });
    const buyer = await generateBuyerKey();
    expect((await german.send("/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId: buyer.buyerId, amountMicros: 100_000 }) })).status).toBe(200);
    for (const stream of [false, true, false]) {
      const paid = await paidCall(german, buyer, { body: chatBody({ stream }) });
      expect(paid.quote).toBe(4000);
      expect(paid.res.status).toBe(200);
      expect(paid.res.headers.get("cn2-price-micros")).toBe("4000");
    }
    for (let i = 0; i < 3; i++) expect((await german.send(CHAT, { method: "POST", headers: { "content-type": "application/json", "cn2-proxy-token": e.PROXY_TOKEN! }, body: chatBody() })).status).toBe(200);
    expect((await servedBy([us.credential, eu.credential])).slice(before)).toEqual(Array(6).fill(eu.credential));
    // The same calls from the US go to the cheaper US key: the country made the difference.
    const american = client({ cf: { country: "US" } });
    const paid = await paidCall(american, buyer, { body: chatBody() });
    expect([paid.quote, paid.res.status]).toEqual([500, 200]);
    expect((await servedBy([us.credential, eu.credential])).at(-1)).toBe(us.credential);
  });

  it("PR21: request.cf.country is read before CF-IPCountry, both ways", async () => {
    const { us, eu } = await market();
    const unpaid = (cf: Record<string, unknown>, header: string) =>
      client({ cf }).send(CHAT, { method: "POST", headers: { "content-type": "application/json", "cn2-proxy-token": e.PROXY_TOKEN!, "cf-ipcountry": header }, body: chatBody() });
    for (let i = 0; i < 3; i++) {
      expect((await unpaid({ country: "FR" }, "US")).status).toBe(200);
      expect((await servedBy([us.credential, eu.credential])).at(-1)).toBe(eu.credential);
      expect((await unpaid({ country: "US" }, "FR")).status).toBe(200);
      expect((await servedBy([us.credential, eu.credential])).at(-1)).toBe(us.credential);
    }
  });

  it("PR21: an EU buyer by request.cf.country with no EU key gets no_eu_key_available, is charged nothing and reaches no upstream", async () => {
    const seller = await signIn("pr21none");
    const us = await addKey({ seller, config: { region: "us", priceMicros: 500 } });
    const italian = client({ cf: { country: "IT" } });
    for (const headers of [{}, { "cn2-proxy-token": e.PROXY_TOKEN! }] as Record<string, string>[]) {
      const res = await italian.send(CHAT, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: chatBody() });
      expect(res.status).toBe(503);
      expect(res.headers.has("www-authenticate")).toBe(false);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("no_eu_key_available");
    }
    expect(await servedBy([us.credential])).toEqual([]);
  });
});

// ---- PR26 -------------------------------------------------------------------------------

describe("PR26: only the essential session cookie", () => {
  /** A Set-Cookie line's name and attributes (lowercased names; values kept). */
  const parse = (line: string) => {
    const [pair = "", ...attrs] = line.split(";").map((s) => s.trim());
    const name = pair.slice(0, pair.indexOf("="));
    return { name, attrs: attrs.filter(Boolean).map((a) => { const i = a.indexOf("="); return i < 0 ? [a.toLowerCase(), ""] : [a.slice(0, i).toLowerCase(), a.slice(i + 1)]; }) };
  };

  /** Every cookie set is the session cookie, with exactly the essential attributes. */
  const expectOnlySessionCookie = (c: Client) => {
    const cookies = c.answers.flatMap((a) => a.setCookies.map((line) => ({ at: `${a.method} ${a.path}`, ...parse(line) })));
    for (const cookie of cookies) {
      expect(cookie.name, cookie.at).toBe(SESSION_COOKIE);
      const attrs = Object.fromEntries(cookie.attrs);
      expect(Object.keys(attrs).sort(), cookie.at).toEqual(["httponly", "max-age", "path", "samesite", "secure"]);
      expect(attrs, cookie.at).toMatchObject({ path: "/", samesite: "Lax", httponly: "", secure: "" });
      expect(attrs["max-age"], cookie.at).toMatch(/^\d+$/);
    }
    for (const a of c.answers) expect(a.setCookies.length, `${a.method} ${a.path}`).toBeLessThanOrEqual(1);
    return cookies.map((k) => k.at.replace(/\?.*$/, ""));
  };

  it("PR26: a whole seller session (sign-in three ways, keys, earnings, payouts, KYC, webhooks, export, sign-out, account closure) sets no cookie but __Host-cn2_session, each time HttpOnly, Secure, SameSite=Lax, Path=/ and host-only", async () => {
    const hook = await receiverHook();
    const c = client();
    const run = await sellerSession(c, { email: `${unique("pr26")}@example.test`, webhookUrl: hook.url });
    await finishSellerSession(c, run);
    // Signed in again (the session ended) and the account closed: those answers are scanned too.
    const again = await c.send("/auth/dev/sign-in", { method: "POST", headers: { "content-type": "application/json", "cn2-csrf": "1", origin: ORIGIN }, body: JSON.stringify({ email: `${unique("pr26b")}@example.test` }) });
    expect(again.status).toBe(200);
    expect((await c.send("/api/account", { method: "DELETE" })).status).toBe(200);

    expect(c.answers.length).toBeGreaterThan(25);
    // Sign-in (POST, link, session), sign-out, sign-in again, closure: those answers set it.
    expect(expectOnlySessionCookie(c)).toEqual(["POST /auth/dev/sign-in", "GET /auth/dev/sign-in", "POST /auth/session", "POST /auth/sign-out", "POST /auth/dev/sign-in", "DELETE /api/account"]);
  });

  it("PR26: an optional buyer account's sessions (sign-in, account, attach, history, top-up, then sign-out or deletion) set no cookie but __Host-cn2_session, with the same attributes", async () => {
    const c = client();
    await buyerAccountSession(c, await generateBuyerKey(), { email: `${unique("pr26acct")}@example.test` });
    await buyerAccountSession(c, await generateBuyerKey(), { email: `${unique("pr26acct2")}@example.test`, deleteAccount: true });
    expect(c.answers.length).toBeGreaterThanOrEqual(12);
    expect(expectOnlySessionCookie(c)).toEqual(["POST /auth/dev/sign-in", "POST /auth/sign-out", "POST /auth/dev/sign-in", "DELETE /api/buyer/account"]);
  });

  it("PR26: a whole buyer session and the operator's calls set no cookie at all, though the upstream sends one", async () => {
    // The upstream (like OpenAI's Cloudflare front) sets a cookie of its own.
    const direct = await fetch(`${DEMO}/openai/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer sk-demo-direct" }, body: chatBody() });
    await direct.text();
    expect(direct.headers.getSetCookie().length).toBeGreaterThan(0);

    const seller = await signIn("pr26buyer");
    const key = await addKey({ seller, config: { priceMicros: 900 } });
    const c = client();
    const run = await buyerSession(c, { failOnce: () => demo("/__demo/behaviour", { credential: key.credential, status: 500, times: 1 }) });
    await operatorSession(c, { keyId: key.keyId, region: "us", disputeId: run.disputeId });
    expect((await c.send("/healthz")).status).toBe(200);
    expect((await c.send("/anthropic/v1/messages", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })).status).toBe(503);
    expect((await signed(c, run.buyer, "GET", "/api/credit/balance")).status).toBe(200);

    const proxied = c.answers.filter((a) => a.path === CHAT && a.status === 200);
    expect(proxied.length).toBeGreaterThanOrEqual(3);
    expect(c.answers.length).toBeGreaterThan(15);
    expect(c.answers.filter((a) => a.setCookies.length > 0).map((a) => `${a.method} ${a.path}: ${a.setCookies.join(" | ")}`)).toEqual([]);
  });
});

// ---- PR9 --------------------------------------------------------------------------------

describe("PR9: the raw payment principal is stored nowhere", () => {
  it("PR9: after a whole buyer session (credit, card top-up, balance, budget, paid calls, a refund, a dispute and its resolution, an optional account) the buyer's DID, in any spelling, is in no object, KV namespace, Postgres table, log line or queued message", async () => {
    const { logs, queues } = capture();
    const seller = await signIn("pr9");
    const key = await addKey({ seller, config: { priceMicros: 1100 } });
    const c = client();
    const run = await buyerSession(c, { failOnce: () => demo("/__demo/behaviour", { credential: key.credential, status: 500, times: 1 }) });
    await runAllAlarms();
    await operatorSession(c, { keyId: key.keyId, region: "us", disputeId: run.disputeId });
    // Attached to an optional account: the signed attach carries the DID too.
    const { accountId } = await buyerAccountSession(c, run.buyer, { email: `${unique("pr9")}@example.test` });
    await runAllAlarms();

    const { buyer } = run;
    const multibase = buyer.did.slice("did:key:".length);
    const x = buyer.file.privateJwk.x!;
    // "did:key:z6Mk" starts every Ed25519 DID: the pieces are taken after it.
    const needles = [buyer.did, ...pieces(multibase.slice(4)), ...variants(x).flatMap(pieces)];
    const sinks = await allSinks({ logs, queues, extra: { analytics: await analyticsRows(run.servedRequestIds) } });
    // The hash is where it belongs, so the search looks at the buyer's data.
    expect(Object.entries(sinks).some(([k, v]) => k.startsWith("BUYER_WALLET/") && v.includes(buyer.buyerId))).toBe(true);
    expect(sinks["KV SPEND"]).toContain(buyer.buyerId);
    expect(sinks["KV DISPUTES"]).toContain(buyer.buyerId);
    expect(occurrences(sinks, needles)).toEqual([]);
    const pg = await postgresHolding([...needles, run.servedRequestIds[0]!]);
    expect(pg).toContainEqual({ table: "public.request_log", needle: run.servedRequestIds[0] });
    expect(await postgresHolding([buyer.buyerId, accountId])).toEqual(expect.arrayContaining([{ table: "public.buyer_account_ids", needle: buyer.buyerId }]));
    expect(pg.filter((hit) => needles.includes(hit.needle))).toEqual([]);
  });
});

// ---- PR19 (and PR9): disputes in Postgres -------------------------------------------------

describe("PR19: a dispute's outcome reaches the books", () => {
  it("PR19 PR9: a refunded dispute reaches Postgres only as the serving seller's clawback, once; a rejected one not at all; the buyer id is in no table", async () => {
    const seller = await signIn("pr19");
    const key = await addKey({ seller, config: { priceMicros: 2000 } });
    const c = client();
    const buyer = await generateBuyerKey();
    expect((await c.send("/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId: buyer.buyerId, amountMicros: 100_000 }) })).status).toBe(200);
    const calls: Awaited<ReturnType<typeof paidCall>>[] = [];
    for (let i = 0; i < 2; i++) {
      const paid = await paidCall(c, buyer, { body: chatBody() });
      expect(paid.res.status).toBe(200);
      calls.push(paid);
    }
    await runDurableObjectAlarm(keyStub(e, key.keyId, "default"));
    const disputes: string[] = [];
    for (const call of calls) {
      const opened = await signed(c, buyer, "POST", "/api/disputes", { receipt: call.receipt, reason: "other" });
      expect(opened.status).toBe(201);
      disputes.push(((await opened.json()) as { dispute: { id: string } }).dispute.id);
    }
    const [refunded, rejected] = disputes as [string, string];
    for (const [id, decision] of [[refunded, "refund"], [rejected, "reject"], [refunded, "refund"]] as const) {
      const res = await c.send(`/ops/disputes/${id}/resolve`, opsInit({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ decision }) }));
      expect(res.status).toBe(200);
    }
    expect(await postgresTables()).not.toContain("public.disputes");
    const hits = await postgresHolding([refunded, rejected, buyer.buyerId, calls[0]!.requestId]);
    expect(hits).toEqual(expect.arrayContaining([{ table: "public.clawbacks", needle: refunded }, { table: "public.request_log", needle: calls[0]!.requestId }]));
    expect(hits.filter((h) => h.needle !== calls[0]!.requestId)).toEqual([{ table: "public.clawbacks", needle: refunded }]);
    const rows = await ownerDb((sql) => sql`select key_id, seller_id, request_id, amount_micros::int as amount from public.clawbacks where dispute_id = ${refunded}`);
    expect(rows).toEqual([{ key_id: key.keyId, seller_id: seller.id, request_id: calls[0]!.requestId, amount: 1800 }]);
  });
});
