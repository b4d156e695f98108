// What crosses between buyer, key object and upstream (core/forward.ts): the header
// lists are the privacy and security boundary of the proxy, so they are pinned here.
import { describe, expect, it } from "vitest";
import { buyerResponse, keyRequestHeaders, upstreamHeaders } from "../../core/forward.ts";
import { PROVIDERS } from "../../schema/providers.ts";
import { H } from "../../schema/wire.ts";
import { SECURITY_HEADERS } from "../../core/http.ts";

describe("buyerResponse", () => {
  it("an upstream cannot fake our headers or a receipt, and its account and hop-by-hop headers never reach the buyer", async () => {
    const upstream = new Headers({
      "content-type": "application/json", "x-request-id": "up-1", "openai-processing-ms": "12",
      "openai-organization": "org-seller", "openai-project": "proj-seller", "set-cookie": "a=b",
      connection: "keep-alive", "keep-alive": "timeout=5", "content-length": "42",
      [H.refusal]: "rate_limited", [H.price]: "1", [H.requestId]: "req_fake", [H.key]: "k_fake", "payment-receipt": "forged",
    });
    const res = buyerResponse(PROVIDERS.openai, new Response("{}", { status: 201, headers: upstream }), "{}", { [H.price]: "1000", [H.requestId]: "req_real" });
    expect(res.status).toBe(201);
    expect(await res.text()).toBe("{}");
    expect(Object.fromEntries(res.headers)).toEqual({
      "content-type": "application/json", "openai-processing-ms": "12", "x-request-id": "up-1", [H.price]: "1000", [H.requestId]: "req_real",
      // PR22: set here, on the one copy the key object makes, so the proxy never copies again.
      ...SECURITY_HEADERS,
    });
  });

  it("a bodiless status stays bodiless", () => {
    expect(buyerResponse(PROVIDERS.openai, new Response(null, { status: 204 }), new ArrayBuffer(0), {}).body).toBeNull();
  });
});

describe("key object request headers", () => {
  it("the router passes only the allow-list plus its own internal headers, always its own values", () => {
    const buyer = new Headers({
      "content-type": "application/json", "user-agent": "sdk", authorization: "Bearer buyer", cookie: "s=1",
      [H.requestId]: "req_forged", [H.paid]: "999999", [H.tab]: "tab_forged b p 1", "x-anything": "1",
    });
    const toKey = keyRequestHeaders(PROVIDERS.openai, buyer, { [H.requestId]: "req_real", [H.paid]: "0", [H.tab]: "" });
    expect(toKey).toEqual({ "content-type": "application/json", "user-agent": "sdk", [H.requestId]: "req_real", [H.paid]: "0", [H.tab]: "" });
  });

  it("the key object drops the internal and framing headers and injects the credential the provider's way", () => {
    const fromRouter = new Headers({ "content-type": "application/json", [H.requestId]: "req_real", [H.paid]: "0", [H.tab]: "t b p 1", "content-length": "10", host: "key" });
    expect(upstreamHeaders(PROVIDERS.openai, fromRouter, "sk-seller")).toEqual({ "content-type": "application/json", authorization: "Bearer sk-seller" });
    expect(upstreamHeaders(PROVIDERS.anthropic, fromRouter, "sk-ant")).toEqual({ "content-type": "application/json", "x-api-key": "sk-ant", "anthropic-version": "2023-06-01" });
  });
});
