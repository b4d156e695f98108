// M2, PR20: the public statistics page in real headless Chromium, against the real Worker
// (test/browser/stack.ts). Nobody signs in: the page is reached from the sign-in page's
// link, shows figures computed from request metadata seeded with known values, hides a
// cell of two sellers, fits a phone's width and passes axe-core.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { chromium, type Browser } from "playwright-core";
import { connect } from "../../tools/database.ts";

const { url, databaseUrl } = inject("browserStack");
const DOCS = join(import.meta.dirname, "..", "..", "docs");
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

let browser: Browser;

/** Three sellers with anthropic/global/standard keys and a minute's traffic; two with groq/global/economy keys. */
async function seed() {
  const sql = connect(databaseUrl, { max: 1 });
  const tag = randomUUID().slice(0, 8);
  try {
    const sellers: string[] = [];
    for (let i = 0; i < 3; i++) {
      const id = randomUUID();
      const email = `stats-page-${tag}-${i}@example.test`;
      await sql`insert into auth.users (id, email) values (${id}, ${email})`;
      await sql`insert into public.sellers (id, email) values (${id}, ${email})`;
      sellers.push(id);
    }
    const key = async (i: number, provider: string, tier: string, price: number) => {
      const keyId = `k_page${tag}${provider.slice(0, 2)}${i}`;
      await sql`insert into public.keys (key_id, seller_id, provider, price_micros, requests_per_minute, max_concurrent, region, tier)
                values (${keyId}, ${sellers[i]!}, ${provider}, ${price}, 60, 4, 'global', ${tier})`;
      return keyId;
    };
    const log = (keyId: string, n: number, status: number, ttfb: number, duration: number | null, outcome = "served") =>
      sql`insert into public.request_log (request_id, key_id, provider, route, method, at, latency_ms, duration_ms, status, outcome)
          select ${`req_page${tag}${keyId.slice(-3)}${n}xxxxxx`}, key_id, provider, '/v1/messages', 'POST', now() - interval '1 minute', ${ttfb}, ${duration}, ${status}, ${outcome}
            from public.keys where key_id = ${keyId}`;
    const a = [await key(0, "anthropic", "standard", 1000), await key(1, "anthropic", "standard", 2000), await key(2, "anthropic", "standard", 3000)];
    // One success per seller (ttfb 100/200/300 ms, last byte 1000/2000/3000 ms) and one 500.
    for (const [i, keyId] of a.entries()) await log(keyId, 0, 200, 100 * (i + 1), 1000 * (i + 1));
    await log(a[0]!, 1, 500, 50, null, "upstream_error");
    await key(0, "groq", "economy", 500);
    await key(1, "groq", "economy", 600);
  } finally {
    await sql.end();
  }
}

beforeAll(async () => {
  await seed();
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

afterAll(async () => {
  await browser?.close();
});

describe("public statistics page in Chromium", () => {
  it("PR20: reached from the sign-in page without a session, shows the figures on a phone's width, hides a two-seller cell, passes axe", async () => {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const page = await context.newPage();
    page.on("pageerror", (e) => console.error("page error:", e.message));
    await page.goto(`${url}/sign-in`);
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.getByRole("link", { name: "marketplace statistics" }).click();
    await page.getByRole("heading", { name: "Marketplace statistics" }).waitFor();
    expect(new URL(page.url()).pathname).toBe("/stats");
    expect(await page.getByRole("navigation").getByRole("link", { name: "Statistics" }).getAttribute("aria-current")).toBe("page");

    const cell = page.locator('[data-cell="cell-anthropic-global-standard"]');
    await cell.waitFor();
    expect(await cell.locator('[data-field="active-keys"]').textContent()).toBe("3");
    expect(await cell.locator('[data-field="price"]').textContent()).toBe("$0.001000 / $0.002000 / $0.003000");
    // The last 5 minutes: 4 attempts, 3 answered: 75 %; the 500 is the provider's failure:
    // uptime 75 % too. Last byte 1000/2000/3000: p90 = 2000 + 0.8 * 1000, p99 = 2000 +
    // 0.98 * 1000; first byte 100/200/300 likewise.
    const shown = async (field: string) => (await cell.locator(`td[data-window="5m"][data-field="${field}"]`).textContent());
    expect(await shown("requests")).toBe("4");
    expect(await shown("success")).toBe("75.00%");
    expect(await shown("uptime")).toBe("75.00%");
    expect([await shown("latency-p50"), await shown("latency-p90"), await shown("latency-p99")]).toEqual(["2,000", "2,800", "2,980"]);
    expect([await shown("ttfb-p50"), await shown("ttfb-p90"), await shown("ttfb-p99")]).toEqual(["200", "280", "298"]);
    const hidden = page.locator('[data-cell="cell-groq-global-economy"]');
    await hidden.getByText("Hidden: fewer than 3 sellers").waitFor();
    expect(await hidden.locator("table").count()).toBe(0);

    // Readable on a phone: neither the page nor the table needs scrolling sideways.
    expect(await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")).toBe(true);
    expect(await page.evaluate(`[...document.querySelectorAll(".table-scroll")].every((el) => el.scrollWidth <= el.clientWidth)`)).toBe(true);
    await page.screenshot({ path: join(DOCS, "dashboard-stats.png"), fullPage: true });
    await page.evaluate(AXE);
    const result = (await page.evaluate("axe.run(document, { resultTypes: ['violations'] })")) as {
      violations: { id: string; impact: string; nodes: { target: string[] }[] }[];
      passes: unknown[];
    };
    expect(result.passes.length).toBeGreaterThan(10);
    expect(result.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)).toEqual([]);
    // Nobody signed in, and the page set no cookie (PR26).
    expect(await context.cookies()).toEqual([]);
    await context.close();
  });
});
