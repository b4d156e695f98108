// Route patterns decide what a seller's key may be used for (S3, P3) and what a request
// costs, so a pattern that matches too much is a security bug and one that matches too
// little breaks buyers.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { priceFor, routeAllowed, routeMatches } from "../../schema/routes.ts";
import { PROVIDERS } from "../../schema/providers.ts";

const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"] as const;

describe("routeMatches", () => {
  it("matches a literal route exactly", () => {
    expect(routeMatches("POST /v1/chat/completions", "POST", "/v1/chat/completions")).toBe(true);
    expect(routeMatches("POST /v1/chat/completions", "GET", "/v1/chat/completions")).toBe(false);
    expect(routeMatches("POST /v1/chat/completions", "POST", "/v1/chat/completions/x")).toBe(false);
    expect(routeMatches("POST /v1/chat/completions", "POST", "/v1/chat")).toBe(false);
    expect(routeMatches("POST /v1/chat/completions", "POST", "/v2/v1/chat/completions")).toBe(false);
  });

  it("compares the request method case-insensitively", () => {
    expect(routeMatches("POST /v1/messages", "post", "/v1/messages")).toBe(true);
  });

  it("lets `*` match within one segment only", () => {
    const pattern = "POST /v1beta/models/*:generateContent";
    expect(routeMatches(pattern, "POST", "/v1beta/models/gemini-2.0-flash:generateContent")).toBe(true);
    expect(routeMatches(pattern, "POST", "/v1beta/models/a/b:generateContent")).toBe(false);
    expect(routeMatches(pattern, "POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent")).toBe(false);
    expect(routeMatches(pattern, "POST", "/v1beta/models/gemini-2.0-flash:generateContentX")).toBe(false);
    expect(routeMatches("GET /v1/models/*", "GET", "/v1/models/gpt-4o")).toBe(true);
    expect(routeMatches("GET /v1/models/*", "GET", "/v1/models/gpt-4o/versions")).toBe(false);
  });

  it("lets a `**` suffix match the rest of the path", () => {
    const pattern = "GET /v1/files/**";
    expect(routeMatches(pattern, "GET", "/v1/files/abc")).toBe(true);
    expect(routeMatches(pattern, "GET", "/v1/files/abc/content")).toBe(true);
    expect(routeMatches(pattern, "GET", "/v1/filesystem")).toBe(false);
    expect(routeMatches(pattern, "GET", "/v2/files/abc")).toBe(false);
    expect(routeMatches("* /**", "DELETE", "/anything/at/all")).toBe(true);
  });

  it("lets method `*` match any method but not another path", () => {
    for (const method of METHODS) expect(routeMatches("* /v1/models", method, "/v1/models")).toBe(true);
    expect(routeMatches("* /v1/models", "GET", "/v1/models/x")).toBe(false);
  });

  it("treats regex metacharacters in paths literally", () => {
    const cases: [pattern: string, literal: string, lookalike: string][] = [
      ["GET /v1/a.b", "/v1/a.b", "/v1/aXb"],
      ["GET /v1/(x)+", "/v1/(x)+", "/v1/xx"],
      ["GET /v1/{id}", "/v1/{id}", "/v1/id"],
      ["GET /v1/a|b", "/v1/a|b", "/v1/b"],
      ["GET /v1/a?", "/v1/a?", "/v1/"],
      ["GET /v1/[ab]", "/v1/[ab]", "/v1/a"],
      ["GET /v1/^a$", "/v1/^a$", "/v1/a"],
      ["GET /v1/a\\d", "/v1/a\\d", "/v1/a1"],
      ["GET /v1/a+", "/v1/a+", "/v1/aaa"],
    ];
    for (const [pattern, literal, lookalike] of cases) {
      expect(routeMatches(pattern, "GET", literal), pattern).toBe(true);
      expect(routeMatches(pattern, "GET", lookalike), pattern).toBe(false);
    }
  });

  // Paths as a URL's pathname gives them: no spaces; `*` excluded because it is the wildcard.
  const literalPath = fc.string({ unit: "binary" }).filter((s) => !s.includes("*") && !s.includes(" ")).map((s) => `/${s}`);
  const method = fc.constantFrom(...METHODS);

  it("property: a pattern without wildcards matches exactly its own route", () => {
    fc.assert(
      fc.property(method, literalPath, method, literalPath, (m, path, otherMethod, otherPath) => {
        const pattern = `${m} ${path}`;
        expect(routeMatches(pattern, m, path)).toBe(true);
        expect(routeMatches(pattern, otherMethod, otherPath)).toBe(otherMethod === m && otherPath === path);
      }),
    );
  });

  it("property: `*` matches any one segment and never a slash", () => {
    const segment = fc.string({ unit: "binary" }).filter((s) => !s.includes("/"));
    fc.assert(
      fc.property(segment, segment, (a, b) => {
        expect(routeMatches("GET /v1/models/*/info", "GET", `/v1/models/${a}/info`)).toBe(true);
        expect(routeMatches("GET /v1/models/*/info", "GET", `/v1/models/${a}/${b}/info`)).toBe(false);
      }),
    );
  });

  it("property: every pattern the wire schema accepts compiles", () => {
    const validPattern = fc.stringMatching(/^(GET|POST|PUT|PATCH|DELETE|\*) \/[A-Za-z0-9_.:\-/*{}]*$/);
    fc.assert(
      fc.property(validPattern, method, literalPath, (pattern, m, path) => {
        expect(typeof routeMatches(pattern, m, path)).toBe("boolean");
      }),
    );
  });
});

describe("routeAllowed", () => {
  it("allows a route when any pattern matches", () => {
    const allowed = ["GET /v1/models", "POST /v1/chat/completions"];
    expect(routeAllowed(allowed, "POST", "/v1/chat/completions")).toBe(true);
    expect(routeAllowed(allowed, "GET", "/v1/models")).toBe(true);
    expect(routeAllowed(allowed, "POST", "/v1/models")).toBe(false);
    expect(routeAllowed(allowed, "DELETE", "/v1/files/x")).toBe(false);
  });

  it("allows nothing for an empty list (callers substitute the provider defaults)", () => {
    expect(routeAllowed([], "GET", "/v1/models")).toBe(false);
  });

  it("lets the providers' default routes serve what the official SDKs call", () => {
    expect(routeAllowed(PROVIDERS.openai.defaultRoutes, "POST", "/v1/chat/completions")).toBe(true);
    expect(routeAllowed(PROVIDERS.openai.defaultRoutes, "GET", "/v1/models/gpt-4o")).toBe(true);
    expect(routeAllowed(PROVIDERS.openai.defaultRoutes, "DELETE", "/v1/files/file-1")).toBe(false);
    expect(routeAllowed(PROVIDERS.anthropic.defaultRoutes, "POST", "/v1/messages")).toBe(true);
    expect(routeAllowed(PROVIDERS.google.defaultRoutes, "POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent")).toBe(true);
    expect(routeAllowed(PROVIDERS.google.defaultRoutes, "POST", "/v1beta/tunedModels/x:generateContent")).toBe(false);
    expect(routeAllowed(PROVIDERS.groq.defaultRoutes, "POST", "/v1/chat/completions")).toBe(true);
  });
});

describe("priceFor", () => {
  const config = {
    priceMicros: 1000,
    routePrices: [
      { route: "POST /v1/embeddings", priceMicros: 50 },
      { route: "POST /v1/**", priceMicros: 2000 },
      { route: "POST /v1/chat/completions", priceMicros: 9999 }, // shadowed by the one above
      { route: "GET /v1/models", priceMicros: 0 },
    ],
  };

  it("uses the first matching route price", () => {
    expect(priceFor(config, "POST", "/v1/embeddings")).toBe(50);
    expect(priceFor(config, "POST", "/v1/chat/completions")).toBe(2000);
  });

  it("keeps a route price of zero", () => {
    expect(priceFor(config, "GET", "/v1/models")).toBe(0);
  });

  it("falls back to the key's price", () => {
    expect(priceFor(config, "GET", "/v1/models/gpt-4o")).toBe(1000);
    expect(priceFor({ priceMicros: 7, routePrices: [] }, "POST", "/v1/messages")).toBe(7);
  });
});
