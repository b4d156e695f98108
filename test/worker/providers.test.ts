// P1: every catalogued provider is reachable with its own credential header; buyer
// credentials never reach it, and account headers never come back.
import { beforeEach, describe, expect, it } from "vitest";
import { addKey, call, demoLog, OPS, PROXY, removeAllKeys, resetDemo } from "./helpers.ts";

const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  call(path, { method: "POST", headers: { "content-type": "application/json", "cn2-proxy-token": PROXY, ...headers }, body: JSON.stringify(body) });

describe("provider catalog through the proxy", () => {
  beforeEach(async () => {
    await resetDemo();
    await removeAllKeys();
  });

  it("openai: strips the seller's account headers and the buyer's own Authorization", async () => {
    const { credential } = await addKey();
    const res = await post("/openai/v1/chat/completions", { model: "m", messages: [{ role: "user", content: "x" }] }, { authorization: "Bearer buyer-own-key", cookie: "session=buyer" });
    expect(res.status, await res.clone().text()).toBe(200);
    for (const h of ["openai-organization", "openai-project", "set-cookie"]) expect(res.headers.get(h)).toBeNull();
    expect(res.headers.get("x-request-id")).toBeTruthy();
    // The demo upstream answers 401 unless it saw the seller's credential.
    expect((await demoLog())[0]?.credential).toBe(credential);
  });

  it("only the provider's allow-listed buyer headers reach the upstream, plus the injected credential", async () => {
    await addKey();
    const res = await post("/openai/v1/chat/completions", { model: "m", messages: [{ role: "user", content: "x" }] }, {
      // allowed for openai
      accept: "application/json", "user-agent": "sdk/1.0", "openai-beta": "assistants=v2", "x-stainless-lang": "js",
      // never forwarded: the buyer's credentials and cookies, our own headers, anything else
      authorization: "Bearer buyer-own-key", cookie: "session=buyer", "cn2-tier": "standard", "cn2-request-id": "req_forged0000000000",
      "cn2-paid-micros": "999", "x-forwarded-for": "203.0.113.9", "x-custom-tracking": "abc", "openai-organization": "org-buyer",
    });
    expect(res.status, await res.clone().text()).toBe(200);
    const names = (await demoLog())[0]!.headerNames;
    const expected = ["accept", "authorization", "content-type", "openai-beta", "user-agent", "x-stainless-lang"];
    // The platform's own framing headers (host, content-length, ...) are not the buyer's.
    const framing = new Set(["host", "content-length", "connection", "accept-encoding", "cf-worker", "transfer-encoding"]);
    expect(names.filter((n) => !framing.has(n))).toEqual(expected);
  });

  it("anthropic: x-api-key injected, anthropic-version defaulted, streamed events pass through", async () => {
    const { credential } = await addKey({ config: { provider: "anthropic" } });
    const res = await post("/anthropic/v1/messages", { model: "claude-opus-4-8", max_tokens: 20, stream: true, messages: [{ role: "user", content: "x" }] }, { "x-api-key": "buyer-key" });
    const text = await res.text();
    expect(res.status, text).toBe(200);
    expect(text).toContain("event: message_stop");
    expect(res.headers.get("anthropic-organization-id")).toBeNull();
    expect((await demoLog())[0]?.credential).toBe(credential);
  });

  it("google: x-goog-api-key injected and a buyer's ?key= never forwarded", async () => {
    const { credential } = await addKey({ config: { provider: "google" } });
    const res = await post("/google/v1beta/models/gemini-2.0-flash:generateContent?key=buyer-key", { contents: [{ parts: [{ text: "x" }] }] });
    const body = await res.text();
    expect(res.status, body).toBe(200);
    expect(JSON.parse(body).candidates[0].content.parts[0].text).toBeTruthy();
    const stream = await post("/google/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", { contents: [{ parts: [{ text: "x" }] }] });
    expect(await stream.text()).toContain("data: ");
    const log = await demoLog();
    expect(log.map((e) => e.credential)).toEqual([credential, credential]);
  });

  it("groq: the OpenAI-compatible path under its own base", async () => {
    await addKey({ config: { provider: "groq" } });
    const res = await post("/groq/v1/chat/completions", { model: "llama-3.3-70b", messages: [{ role: "user", content: "x" }] });
    expect(res.status, await res.clone().text()).toBe(200);
    expect((await demoLog())[0]?.path).toContain("/groq/openai/v1/chat/completions");
  });

  it("GET routes forward the query string", async () => {
    await addKey();
    const res = await call("/openai/v1/models?limit=2", { headers: { "cn2-proxy-token": PROXY } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { data: unknown[] }).data.length).toBeGreaterThan(0);
  });
});
