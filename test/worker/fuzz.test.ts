// Fuzz every public route (issue 10, build 3), through the Worker's real entry: fast-check
// generates requests over every route worker/router.ts mounts (provider proxy paths,
// /api/*, /auth/*, /ops/*, /webhooks/*) with odd methods, path tricks, bad JSON and wrong
// types, huge and repeated headers, bad payment credentials (garbage, tampered, unfunded,
// for another route) and bad or foreign session cookies and tokens. None of them carries a
// valid credential, so none may change anything. Properties, for every request:
//   - no 5xx, except the documented "no key can serve" answers (503 no_key_available /
//     no_eu_key_available: a provider or tier without keys), never internal_error;
//   - every error has a machine-readable code: {"error":{"code","message"},"requestId"},
//     or the 402 problem+json (type, code, error.code);
//   - the answer's headers stay small (build 5), whatever the request carried;
// and afterwards: the funded buyer's balance and history, the seller's keys (as the seller
// API and the key objects show them) and the ledger are exactly as before.
// Fixed seed; the case count is printed.
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { Challenge, Credential } from "mppx";
import { SignJWT, generateKeyPair } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { generateBuyerKey, creditClient, type BuyerKey } from "../../buyer/keys.ts";
import type { Env } from "../../core/env.ts";
import { walletStub } from "../../objects/buyer-wallet/stub.ts";
import { addKey, as, call, inspect, ownerDb, removeAllKeys, signIn, type TestSeller } from "./helpers.ts";

const SEED = 20261202;
const RUNS = 1000;
const HEADER_LIMIT = 4096;
const e = env as unknown as Env;

/** Every route worker/router.ts mounts, with its parameters as `:name` (filled by the fuzzer). */
const ROUTES = [
  "/healthz", "/api/vault/public-key",
  "/api/credit/topup", "/api/credit/faucet", "/api/credit/balance", "/api/credit/budget", "/webhooks/stripe",
  "/api/disputes", "/api/disputes/:id",
  "/api/buyer/account", "/api/buyer/account/ids", "/api/buyer/account/ids/:id", "/api/buyer/account/history", "/api/buyer/account/topup",
  "/api/webhooks", "/api/webhooks/:id", "/api/webhooks/:id/rotate", "/api/webhooks/:id/deliveries",
  "/auth/dev/sign-in", "/auth/session", "/auth/sign-out",
  "/api/me", "/api/stats-opt-out", "/api/stats",
  "/api/keys", "/api/keys/:id", "/api/keys/:id/pause", "/api/keys/:id/resume",
  "/api/payout", "/api/payouts", "/api/kyc/start", "/webhooks/persona", "/api/earnings", "/api/export", "/api/account",
  "/api/:rest",
  "/ops/keys/:id", "/ops/keys/:id/disable", "/ops/keys/:id/drain", "/ops/keys/:id/restart", "/ops/pools/:provider/:region/:tier",
  "/ops/disputes", "/ops/disputes/:id", "/ops/disputes/:id/resolve",
  "/openai/v1/chat/completions", "/openai/v1/models/:id", "/openai/:rest", "/anthropic/v1/messages", "/google/v1beta/models/:id",
  "/groq/openai/v1/chat/completions", "/:provider/:rest", "/", "/:rest",
];

/** Tried methods; those the runtime itself refuses to send (workerd knows a fixed list) are dropped in beforeAll. */
const METHOD_CANDIDATES = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "post", "patch", "PROPFIND", "REPORT", "MKCOL", "PURGE", "TRACE", "X-CUSTOM"];
let METHODS: string[] = [];

interface Fixtures {
  seller: TestSeller;
  keyId: string;
  buyer: BuyerKey;
  /** Authorization values that must all be refused. */
  badAuthorizations: string[];
  /** Cookie values: garbage, a foreign JWT, another seller's token without the CSRF header... */
  badCookies: string[];
}

let fx: Fixtures;

/** A path segment a fuzzer would try: ids of other things, traversal, encodings, long ones. */
const segment = (known: string[]) =>
  fc.oneof(
    fc.constantFrom(...known, "..", ".", "%2e%2e", "..%2f..%2fetc", "%00", "%ff", "%", "a%2Fb", "\\", "k_", "k_aaaaaaaaaaaa", "00000000-0000-0000-0000-000000000000", "dsp_x", "openai", "eu", "premium", "ü", "%F0%9F%92%A5", ""),
    fc.string({ maxLength: 40 }).map(encodeURIComponent),
    fc.nat({ max: 12_000 }).map((n) => "a".repeat(n)),
  );

function pathArb(known: string[]) {
  return fc.tuple(fc.constantFrom(...ROUTES), fc.array(segment(known), { minLength: 8, maxLength: 8 }), fc.oneof({ weight: 5, arbitrary: fc.constant("") }, fc.constantFrom("/", "//", "/..", "/%2e%2e/ops/keys")), fc.option(fc.string({ maxLength: 200 }), { nil: undefined }))
    .map(([route, segs, tail, query]) => {
      let i = 0;
      const path = route.replace(/:[a-z]+/g, () => segs[i++ % segs.length]!) + tail;
      return `${path.startsWith("/") ? path : `/${path}`}${query === undefined ? "" : `?${encodeURI(query)}`}`;
    });
}

const bodyArb = fc.oneof(
  fc.constant(undefined),
  fc.constantFrom("", "{", "{not json", "null", "[]", "0", "\"x\"", "{\"keyId\":1}", "{\"amountMicros\":\"1e9\"}", "{\"buyerId\":[]}", "{\"__proto__\":{\"x\":1}}", "{\"config\":{\"priceMicros\":-1}}"),
  fc.json({ maxDepth: 3 }),
  fc.anything({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? "undefined"),
  fc.nat({ max: 200_000 }).map((n) => "{\"x\":\"" + "y".repeat(n) + "\"}"),
  fc.string({ maxLength: 300 }),
);

function headersArb(f: Fixtures) {
  return fc.record(
    {
      contentType: fc.constantFrom("application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=utf-16", "garbage"),
      authorization: fc.oneof(fc.constantFrom(...f.badAuthorizations), fc.string({ maxLength: 100 }).map((s) => `Payment ${s}`), fc.string({ maxLength: 60 }).map((s) => `Bearer ${s}`)),
      cookie: fc.constantFrom(...f.badCookies),
      csrf: fc.constantFrom("1", "0", "yes"),
      // Every one wrong (a trailing space would be trimmed by Headers into the real token).
      proxyToken: fc.constantFrom("wrong", "", "test-proxy-token-", " test-proxy-tokens", "TEST-PROXY-TOKEN", "test-ops-token"),
      tier: fc.constantFrom("premium", "economy", "gold", "", "standard,premium"),
      maxPrice: fc.constantFrom("1", "-1", "1e3", "99999999999999999999", "abc"),
      country: fc.constantFrom("DE", "US", "XX", "", "de"),
      huge: fc.nat({ max: 40_000 }),
      repeated: fc.nat({ max: 200 }),
      buyerSig: fc.constantFrom("did:key:z6Mkfake", "", "x".repeat(500)),
    },
    { requiredKeys: [] },
  ).chain((h) =>
    // Mostly a few of them at once, so each route's own checks are reached, not only the first refusal.
    fc.shuffledSubarray(Object.keys(h), { maxLength: 3 }).map((keep) => Object.fromEntries(Object.entries(h).filter(([k]) => keep.includes(k))) as typeof h),
  ).map((h) => {
    const headers = new Headers();
    const ascii = (s: string) => s.replace(/[^\x20-\x7e]/g, "?");
    if (h.contentType) headers.set("content-type", h.contentType);
    if (h.authorization !== undefined) headers.set("authorization", ascii(h.authorization));
    if (h.cookie !== undefined) headers.set("cookie", h.cookie);
    if (h.csrf !== undefined) headers.set("cn2-csrf", h.csrf);
    if (h.proxyToken !== undefined) headers.set("cn2-proxy-token", h.proxyToken);
    if (h.tier !== undefined) headers.set("cn2-tier", h.tier);
    if (h.maxPrice !== undefined) headers.set("cn2-max-price", h.maxPrice);
    if (h.country !== undefined) headers.set("cf-ipcountry", h.country);
    if (h.huge !== undefined) headers.set("x-padding", "p".repeat(h.huge));
    if (h.repeated !== undefined) for (let i = 0; i < h.repeated; i++) headers.append(i % 2 ? "authorization" : "cn2-tier", `r${i}`);
    if (h.buyerSig !== undefined) {
      headers.set("cn2-buyer", h.buyerSig);
      headers.set("cn2-buyer-time", "0");
      headers.set("cn2-buyer-signature", "AAAA");
    }
    return headers;
  });
}

function headerBytes(res: Response): number {
  let n = 0;
  for (const [name, value] of res.headers) n += name.length + value.length + 4;
  return n;
}

/** What must not move: the buyer's wallet, the seller's keys, the key object, the ledger. */
async function snapshot(f: Fixtures) {
  const wallet = await walletStub(e, f.buyer.buyerId).summary();
  const keysRes = await as(f.seller, "/api/keys");
  const keys = ((await keysRes.json()) as { keys: { keyId: string; config: unknown; health: { state: string } }[] }).keys.map((k) => ({ keyId: k.keyId, config: k.config, state: k.health.state }));
  const key = await inspect(f.keyId);
  const ledger = await ownerDb(async (sql) => {
    const [row] = await sql<{ n: string; total: string }[]>`select count(*)::text as n, coalesce(sum(amount_micros), 0)::text as total from public.earnings_ledger
                                                            where seller_id = ${f.seller.id} or key_id = ${f.keyId}`;
    return row;
  });
  const keyRows = await ownerDb((sql) => sql<{ key_id: string; status: string; price_micros: string }[]>`select key_id, status, price_micros::text from public.keys where seller_id = ${f.seller.id} order by key_id`);
  return {
    wallet: { balance: wallet.balanceMicros, history: wallet.history.length, cap: wallet.dailyCapMicros },
    keys,
    keyRows: [...keyRows],
    key: { config: key.config, earnings: key.earnings, limiter: key.limiter.windowCount, health: key.health.state, status: key.config.status },
    ledger,
  };
}

beforeAll(async () => {
  await removeAllKeys();
  for (const method of METHOD_CANDIDATES) {
    try {
      await (await call("/healthz", { method })).arrayBuffer();
      METHODS.push(method);
    } catch {
      // refused by the runtime before it reaches the Worker: not a request anyone can send us
    }
  }
  const seller = await signIn("fuzz");
  const other = await signIn("fuzz-other");
  const { keyId } = await addKey({ seller });
  const buyer = await generateBuyerKey();
  const fund = await call("/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId: buyer.buyerId, amountMicros: 50_000 }) });
  expect(fund.status).toBe(200);

  // Payment credentials that must all be refused: garbage, tampered, unfunded, for another route, replay of a refused one.
  const first = await call("/openai/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  await first.text();
  const [challenge] = Challenge.deserializeList(first.headers.get("www-authenticate")!);
  const unfunded = await generateBuyerKey();
  const unfundedCredential = await creditClient(unfunded).createCredential({ challenge } as never);
  const tampered = Credential.serialize({ ...Credential.deserialize(unfundedCredential), challenge: { ...challenge!, request: { ...challenge!.request, amount: "1" } } });
  const otherRoute = await call("/openai/v1/embeddings", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  await otherRoute.text();
  // The funded buyer signs a challenge for embeddings: sent to any other route it must be refused (wrong_route).
  const [embeddings] = Challenge.deserializeList(otherRoute.headers.get("www-authenticate")!);
  const wrongRoute = await creditClient(buyer).createCredential({ challenge: embeddings } as never);

  // Tokens and cookies: garbage, a JWT signed by a key of our own (foreign issuer), another
  // seller's real token (valid, but as a cookie without the CSRF header writes are refused;
  // reads of its own data change nothing), an expired-looking one.
  const { privateKey } = await generateKeyPair("ES256");
  const foreign = await new SignJWT({ sub: seller.id, role: "authenticated" }).setProtectedHeader({ alg: "ES256", kid: "foreign" }).setIssuer("cn2-test").setExpirationTime("1h").sign(privateKey);
  const none = `${btoa(JSON.stringify({ alg: "none" })).replace(/=/g, "")}.${btoa(JSON.stringify({ sub: seller.id })).replace(/=/g, "")}.`;
  fx = {
    seller,
    keyId,
    buyer,
    badAuthorizations: [
      "Payment", "Payment ", "Payment !!!", `Payment ${btoa("{}")}`, `Payment ${btoa(JSON.stringify({ challenge: {}, payload: {} }))}`,
      unfundedCredential, tampered, wrongRoute, "Bearer ", "Bearer test-ops-token2", `Bearer ${foreign}`, `Bearer ${none}`, "Basic dGVzdDp0ZXN0",
    ],
    badCookies: [
      "__Host-cn2_session=", "__Host-cn2_session=garbage", `__Host-cn2_session=${foreign}`, `__Host-cn2_session=${none}`,
      `__Host-cn2_session=${seller.token.slice(0, -4)}AAAA`, "cn2_session=x; __Host-cn2_session=y", "a=b; c", `__Host-cn2_session=${"x".repeat(8000)}`,
      `other=1; __Host-cn2_session=${other.token}x`,
    ],
  };
});

describe("fuzz: every public route", () => {
  it("M5/P6: generated bad requests on every route get a small 4xx with a code, never a 5xx, and change nothing", async () => {
    const before = await snapshot(fx);
    const known = [fx.keyId, fx.seller.id, fx.buyer.buyerId];
    let cases = 0;
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...METHODS), pathArb(known), headersArb(fx), bodyArb, async (method, path, headers, body) => {
        cases++;
        const upper = method.toUpperCase();
        const res = await call(path, { method, headers, body: upper === "GET" || upper === "HEAD" ? undefined : body });
        const text = await res.text();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const where = `${method} ${path.slice(0, 120)} -> ${res.status} ${text.slice(0, 200)}`;
        expect(headerBytes(res), where).toBeLessThan(HEADER_LIMIT);
        expect(res.headers.get("cn2-request-id"), where).toMatch(/^req_/);
        if (res.status < 400) return;
        if (upper === "HEAD") return; // no body to read a code from; the status and request id say it
        const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown }; requestId?: unknown; type?: unknown; code?: unknown };
        expect(typeof parsed.error?.code, where).toBe("string");
        expect(typeof parsed.error?.message, where).toBe("string");
        expect(parsed.requestId, where).toBe(res.headers.get("cn2-request-id"));
        if (res.headers.get("content-type")?.startsWith("application/problem+json")) {
          expect(parsed.code, where).toBe(parsed.error!.code);
          expect(String(parsed.type), where).toMatch(/^https:\/\/paymentauth\.org\/problems\//);
        }
        if (res.status >= 500) expect(["no_key_available", "no_eu_key_available"], where).toContain(parsed.error!.code);
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
    console.log(`fuzz: ${cases} generated requests over ${ROUTES.length} route templates and methods ${METHODS.join(" ")} (seed ${SEED}); statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}`);
    expect(cases).toBe(RUNS);
    expect(await snapshot(fx)).toEqual(before);
  });
});

describe("regressions the fuzzer found", () => {
  it("a refused Stripe webhook answers in the one error shape, with the request id in the body", async () => {
    const res = await call("/webhooks/stripe", { method: "POST", headers: { "content-type": "application/json" }, body: "null" });
    const body = (await res.json()) as { error: { code: string; message: string }; requestId?: string };
    expect(res.status).toBe(400);
    expect(body.error.code).toBe("bad_signature");
    expect(body.requestId).toMatch(/^req_/);
    expect(body.requestId).toBe(res.headers.get("cn2-request-id"));
  });
});
