// splitUrl (core/http.ts) replaces a URL object per proxied request: on any URL the
// runtime hands us (already parsed and serialised), it must agree with URL exactly.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { splitUrl } from "../../core/http.ts";

describe("splitUrl", () => {
  it("agrees with URL's pathname and search on serialised URLs (property)", () => {
    const part = fc.string({ unit: fc.constantFrom(..."abc/?#%&=.-_~+ :@!$'()*,;é€"), maxLength: 24 });
    fc.assert(
      fc.property(part, part, part, fc.constantFrom("https://key", "http://127.0.0.1:8787", "https://cn2.example"), (path, query, hash, origin) => {
        const built = new URL(origin);
        built.pathname = path;
        built.search = query;
        built.hash = hash;
        const href = built.href;
        const url = new URL(href);
        expect(splitUrl(href)).toEqual({ pathname: url.pathname, search: url.search });
      }),
      { numRuns: 2000 },
    );
  });

  it("handles the edges", () => {
    expect(splitUrl("https://key/")).toEqual({ pathname: "/", search: "" });
    expect(splitUrl("https://key/v1/models?")).toEqual({ pathname: "/v1/models", search: "" });
    expect(splitUrl("https://key/a?b=1#c")).toEqual({ pathname: "/a", search: "?b=1" });
    expect(splitUrl("https://key/a#c?d")).toEqual({ pathname: "/a", search: "" });
  });
});
