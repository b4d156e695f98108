// `npm run bench` runs cn2's upstream calls straight to workerd's network, as deployed, by
// editing one line of Miniflare's bundle as it loads (bench/workerd.ts, docs/bench.md). The
// bench is not part of CI; this keeps a Miniflare upgrade from breaking it unnoticed.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { miniflareEntry, withDirectOutbound } from "../../bench/workerd.ts";

describe("bench: Miniflare without its outbound helper", () => {
  it("the installed Miniflare still has exactly the one line the bench edits, and the edit removes the helper from user Workers' path", () => {
    const { path, version } = miniflareEntry();
    const source = readFileSync(path, "utf8");
    const edited = withDirectOutbound(source, version);
    expect(edited).not.toContain("globalOutbound: { name: getOutboundInterceptorName(workerIndex) }");
    expect(edited.split('globalOutbound: { name: "internet" },').length).toBeGreaterThan(source.split('globalOutbound: { name: "internet" },').length);
    expect(edited.length).toBe(source.length - "getOutboundInterceptorName(workerIndex)".length + '"internet"'.length);
  });

  it("a bundle without that line is refused loudly, not run with the helper", () => {
    expect(() => withDirectOutbound("module.exports = {}", "0.0.0")).toThrow(/no longer has the outbound helper line/);
  });
});
