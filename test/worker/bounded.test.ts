// Bounded answers (issue 10, build 5), through the Worker's real entry: whatever a request
// carries (a 60 KB path, a huge query), every answer's headers and body stay small, and the
// payment challenge binds the route by a hash instead of repeating the path. A 16 KB
// WWW-Authenticate is more than Node's fetch reads (UND_ERR_HEADERS_OVERFLOW) and turns a
// small request into a large answer.
import { Challenge } from "mppx";
import { beforeAll, describe, expect, it } from "vitest";
import { createPayingFetch } from "../../buyer/index.ts";
import { generateBuyerKey } from "../../buyer/keys.ts";
import { addKey, call, OPS, removeAllKeys, worker } from "./helpers.ts";

/** Header bytes as they go on the wire: "name: value\r\n" per header. */
function headerBytes(res: Response): number {
  let n = 0;
  for (const [name, value] of res.headers) n += name.length + value.length + 4;
  return n;
}

const HEADER_LIMIT = 2048;
const BODY_LIMIT = 4096;
const LONG = "a".repeat(60 * 1024);
const HUGE_QUERY = `?q=${"x".repeat(60 * 1024)}&${"k=v&".repeat(2000)}`;

beforeAll(async () => {
  await removeAllKeys();
  await addKey();
});

describe("bounded answers", () => {
  it("the 402 for a 60 KB path binds the route by hash: WWW-Authenticate stays under 1 KB, all headers under 2 KB", async () => {
    const res = await call(`/openai/v1/models/${LONG}${HUGE_QUERY}`);
    const body = await res.text();
    expect(res.status).toBe(402);
    const challenge = res.headers.get("www-authenticate") ?? "";
    expect(challenge.length).toBeGreaterThan(0);
    expect(challenge.length).toBeLessThan(1024);
    expect(challenge).not.toContain("aaaaaaaaaa");
    expect(headerBytes(res)).toBeLessThan(HEADER_LIMIT);
    expect(body.length).toBeLessThan(BODY_LIMIT);
    // The same size for a short path: the challenge does not grow with the path.
    const short = await call("/openai/v1/models/m");
    await short.text();
    const shortChallenge = short.headers.get("www-authenticate") ?? "";
    expect(Math.abs(shortChallenge.length - challenge.length)).toBeLessThan(16);
  });

  it("a challenge for one route still cannot pay for another (the hash binds it)", async () => {
    const key = await generateBuyerKey();
    const fund = await call("/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId: key.buyerId, amountMicros: 10_000 }) });
    expect(fund.status).toBe(200);
    const first = await call("/openai/v1/models/one");
    await first.text();
    const [challenge] = Challenge.deserializeList(first.headers.get("www-authenticate")!);
    const { creditClient } = await import("../../buyer/keys.ts");
    const credential = await creditClient(key).createCredential({ challenge } as never);
    const elsewhere = await call("/openai/v1/models/two", { headers: { authorization: credential } });
    expect(elsewhere.status).toBe(402);
    expect(((await elsewhere.json()) as { code: string }).code).toBe("wrong_route");
    // And on its own route the same credential pays (a 60 KB path too, below).
    const paid = await call("/openai/v1/models/one", { headers: { authorization: credential } });
    await paid.text();
    expect(paid.headers.get("payment-receipt")).not.toBeNull();
  });

  it("a buyer's paying fetch pays for a 60 KB path: every answer's headers stay small", async () => {
    const key = await generateBuyerKey();
    const fund = await call("/api/credit/faucet", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ buyerId: key.buyerId, amountMicros: 10_000 }) });
    expect(fund.status).toBe(200);
    const seen: Response[] = [];
    const base = (input: RequestInfo | URL, init?: RequestInit) =>
      worker().fetch(input as string, init).then((r) => {
        seen.push(r.clone());
        return r;
      });
    const pay = createPayingFetch({ baseUrl: "https://cn2.test", privateKey: key, fetch: base as typeof fetch });
    const res = await pay(`https://cn2.test/openai/v1/models/${LONG}`);
    await res.text();
    expect(res.headers.get("payment-receipt")).not.toBeNull();
    expect(seen.map((r) => r.status)).toContain(402);
    for (const r of seen) expect(headerBytes(r)).toBeLessThan(HEADER_LIMIT);
  });

  const families = [
    "/openai/v1/chat/completions/", "/openai/", "/anthropic/v1/models/", "/no-such-provider/", "/api/", "/api/keys/", "/api/disputes/",
    "/api/credit/balance/", "/auth/", "/auth/dev/sign-in/", "/ops/keys/", "/ops/pools/", "/ops/disputes/", "/webhooks/", "/webhooks/stripe/", "/healthz/",
  ];
  for (const prefix of families) {
    it(`${prefix}<60 KB> with a huge query: small headers and a small body, with and without the ops token`, async () => {
      for (const method of ["GET", "POST", "DELETE"]) {
        for (const headers of [{}, { authorization: `Bearer ${OPS}` }] as Record<string, string>[]) {
          const res = await call(`${prefix}${LONG}${HUGE_QUERY}`, { method, headers, body: method === "GET" ? undefined : "{}" });
          const body = await res.text();
          expect(headerBytes(res), `${method} ${prefix}: ${res.status}`).toBeLessThan(HEADER_LIMIT);
          expect(body.length, `${method} ${prefix}: ${res.status} ${body.slice(0, 200)}`).toBeLessThan(BODY_LIMIT);
        }
      }
    });
  }
});
