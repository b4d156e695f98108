// The seller dashboard end to end in real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core), against the real Worker under wrangler dev with the demo
// upstream (test/browser/stack.ts). One seller's story, in order: sign in, add a key (the
// plaintext never leaves the page), watch traffic, earnings and health move live, check
// the earnings page against the ledger, export, a second seller refused from the first
// seller's room, an accessibility scan of every page, and closing the account.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { createPayingFetch, generateBuyerKey, requestFaucet } from "../../buyer/index.ts";
import { connect } from "../../tools/database.ts";
import { isKeyIdFor, newKeyId } from "../../core/key-id.ts";

const { url, proxyToken, demoUrl, databaseUrl, supabaseUrl } = inject("browserStack");
const DOCS = join(import.meta.dirname, "..", "..", "docs");
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const CHAT = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] });
const PRICE = 3000;
/** The seller's share of one paid request: the price minus the 10 % fee (MARKETPLACE_FEE_BPS). */
const SHARE = PRICE - PRICE / 10;

/** Dollars exactly as the page prints micro-dollars (dashboard/src/ui.tsx usd()). */
const usd = (micros: number) => `$${Math.floor(micros / 1e6).toLocaleString("en-US")}.${String(micros % 1e6).padStart(6, "0")}`;

let browser: Browser;
let context: BrowserContext;
let page: Page;
const email = `browser-${Date.now().toString(36)}@example.test`;
const credential = `sk-demo-browser-${crypto.randomUUID().replaceAll("-", "")}`;
let sellerId = "";
let keyId = "";
/** Everything the page sent: request URLs, headers and bodies, WebSocket frames. */
const sent: string[] = [];
let navigations = 0;

/** Console reports of Content-Security-Policy violations, from every page of the run. */
const cspViolations: string[] = [];

async function newPage(ctx: BrowserContext) {
  const p = await ctx.newPage();
  p.on("pageerror", (e) => console.error("page error:", e.message));
  p.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  return p;
}

async function signIn(p: Page, address: string) {
  await p.goto(url);
  await p.getByLabel("Email", { exact: true }).fill(address);
  await p.getByRole("button", { name: "Sign in (dev)" }).click();
  await p.getByRole("heading", { name: "Your keys" }).waitFor();
}

const cell = (field: string) => page.locator(`tr[data-key-id="${keyId}"] [data-field="${field}"]`);
/** Wait (at most 2 s, the bound) until the cell's text matches. */
const until = (field: string, text: RegExp | string, timeout = 2_000) =>
  cell(field).filter({ hasText: typeof text === "string" ? new RegExp(`^${text.replace(/[.$]/g, "\\$&")}$`) : text }).waitFor({ timeout });

/** An unpaid operator call; after the edit test the key serves in the economy tier, which a buyer asks for by header. */
let tier = "standard";
function opsChat() {
  return fetch(`${url}/openai/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", "cn2-proxy-token": proxyToken, "cn2-tier": tier }, body: CHAT });
}

async function axeViolations(p: Page) {
  // Evaluated through the DevTools protocol, which the page's CSP does not govern.
  await p.evaluate(AXE);
  // Strings, not functions: they run in the page (DOM types are not this file's).
  const result = (await p.evaluate("axe.run(document, { resultTypes: ['violations'] })")) as {
    violations: { id: string; impact: string; nodes: { target: string[] }[] }[];
    passes: unknown[];
  };
  // The scan really ran: it checked rules that passed.
  expect(result.passes.length).toBeGreaterThan(10);
  return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

beforeAll(async () => {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 900 } });
  page = await newPage(context);
  page.on("request", (r) => sent.push(`${r.method()} ${r.url()}\n${JSON.stringify(r.headers())}\n${r.postData() ?? ""}`));
  page.on("websocket", (ws) => ws.on("framesent", (f) => sent.push(String(f.payload))));
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) navigations++;
  });
});

afterAll(async () => {
  await browser?.close();
});

describe("seller dashboard in Chromium", () => {
  it("the Worker's own paths run before single-page routing; any other path is the app", async () => {
    const type = async (path: string, init?: RequestInit) => {
      const res = await fetch(`${url}${path}`, { ...init, headers: { accept: "text/html", ...init?.headers } });
      await res.arrayBuffer();
      return `${res.status} ${(res.headers.get("content-type") ?? "").split(";")[0]}`;
    };
    expect(await type("/healthz")).toBe("200 application/json");
    expect(await type("/api/nothing-here")).toBe("404 application/json");
    expect(await type("/auth/config")).toBe("200 application/json");
    expect(await type("/ops/keys/k_aaaaaaaaaaaa")).toBe("401 application/json");
    expect(await type("/webhooks/stripe", { method: "POST", body: "{}" })).toMatch(/^(400|503) application\/json$/);
    expect(await type("/openai/v1/chat/completions", { method: "POST", body: CHAT, headers: { "content-type": "application/json" } })).toMatch(/^(402|503) application\/(problem\+)?json$/);
    expect(await type("/earnings")).toBe("200 text/html");
    expect(await type("/some/page/of/the/app")).toBe("200 text/html");
  });

  it("PR26: signs in with the dev sign-in; the only cookie is the essential HttpOnly session cookie; strict CSP", async () => {
    const res = await page.goto(url);
    const csp = res!.headers()["content-security-policy"] ?? "";
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain("unsafe-inline");
    expect(await page.locator("script:not([src])").count()).toBe(0);
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.getByLabel("Email", { exact: true }).fill(email);
    await page.getByRole("button", { name: "Sign in (dev)" }).click();
    await page.getByRole("heading", { name: "Your keys" }).waitFor();
    await page.getByText("You have no keys listed yet.").waitFor();
    const cookies = await context.cookies();
    expect(cookies.map((c) => c.name)).toEqual(["__Host-cn2_session"]);
    expect(cookies[0]).toMatchObject({ httpOnly: true, secure: true, sameSite: "Lax", path: "/" });
    expect(await page.evaluate("document.cookie")).toBe("");
    expect(await page.evaluate("localStorage.length")).toBe(0);
    await page.getByTestId("live-status").getByText("Live").waitFor({ timeout: 10_000 });
    sellerId = ((await (await context.request.get(`${url}/api/me`)).json()) as { seller: { id: string } }).seller.id;
  });

  it("PR26: signs in through Supabase Auth in the page (email one-time code), traded for the session cookie; supabase-js keeps nothing", async () => {
    const other = await browser.newContext();
    const p = await newPage(other);
    const address = `otp-${email}`;
    await p.goto(`${url}/sign-in`);
    await p.getByLabel("Email for a sign-in code").fill(address);
    await p.getByRole("button", { name: "Email me a code" }).click();
    await p.getByLabel("One-time code").waitFor();
    const { code } = (await (await fetch(`${supabaseUrl}/__fake/otp?email=${encodeURIComponent(address)}`)).json()) as { code: string };
    expect(code).toMatch(/^\d{6}$/);
    await p.getByLabel("One-time code").fill(code);
    await p.getByRole("button", { name: "Sign in", exact: true }).click();
    await p.getByRole("heading", { name: "Your keys" }).waitFor();
    const me = (await (await other.request.get(`${url}/api/me`)).json()) as { seller: { email: string } };
    expect(me.seller.email).toBe(address);
    expect((await other.cookies()).map((c) => c.name)).toEqual(["__Host-cn2_session"]);
    // supabase-js signed out locally once the cookie was set: no token left in the page's storage.
    expect(await p.evaluate("JSON.stringify(Object.entries(sessionStorage).filter(([k]) => k.startsWith('sb-') && !k.endsWith('-code-verifier')))")).toBe("[]");
    expect(await p.evaluate("localStorage.length")).toBe(0);
    await other.close();
  });

  it("PR2: adds a key sealed in the page with WebCrypto; no outgoing request or frame carries the plaintext", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "Add a key" }).click();
    await page.getByRole("heading", { name: "Add a key" }).waitFor();
    await page.getByLabel("Provider API key").fill(credential);
    await page.getByLabel("Price per request (micro-dollars)").fill(String(PRICE));
    // Keyboard only from here: Enter submits the form.
    await page.getByLabel("Requests per minute").focus();
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Your keys" }).waitFor();
    await page.locator("tr[data-key-id]").first().waitFor();
    keyId = (await page.locator("tr[data-key-id]").first().getAttribute("data-key-id"))!;
    // The page derived the id for this seller (core/key-id.ts); the API took it.
    expect(keyId).toMatch(/^k_[a-z2-7]{26}$/);
    expect(await isKeyIdFor(sellerId, keyId)).toBe(true);
    const create = sent.find((s) => s.startsWith(`POST ${url}/api/keys\n`));
    expect(create).toBeDefined();
    expect(create).toContain('"envelope":{"v":1');
    const b64 = (s: string) => btoa(s);
    for (const s of sent) {
      expect(s).not.toContain(credential);
      expect(s).not.toContain(b64(credential));
      expect(s).not.toContain(encodeURIComponent(credential));
    }
    // The envelope really holds the credential: the upstream receives it when the key serves.
    const served = await opsChat();
    expect(served.status).toBe(200);
    const log = (await (await fetch(`${demoUrl}/__demo/log`)).json()) as { requests: { credential: string }[] };
    expect(log.requests.at(-1)!.credential).toBe(credential);
  });

  it("proxy traffic and paid earnings move the key's numbers on screen without a reload", async () => {
    const before = navigations;
    // One ops call was made above; four more.
    for (let i = 0; i < 4; i++) expect((await opsChat()).status).toBe(200);
    await until("rpm", "5");
    await until("in-flight", "0");
    await until("track", /^5 calls/);
    // Paid calls earn: the seller's share shows as "earned today".
    const buyer = await generateBuyerKey();
    await requestFaucet({ baseUrl: url, buyerId: buyer.buyerId, amountMicros: 1_000_000 });
    const pay = createPayingFetch({ baseUrl: url, privateKey: buyer });
    for (let i = 0; i < 3; i++) {
      const res = await pay(`${url}/openai/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: CHAT });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    }
    await until("earned-today", usd(3 * SHARE));
    await until("rpm", "8");
    expect(navigations).toBe(before);
  });

  it("the key turns unhealthy on screen when the upstream fails, then recovers", async () => {
    const behave = await fetch(`${demoUrl}/__demo/behaviour`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ credential, status: 500, times: 3 }) });
    expect(behave.ok).toBe(true);
    for (let i = 0; i < 3; i++) expect((await opsChat()).status).toBeGreaterThanOrEqual(500);
    await until("state", "cooling");
    await until("last-error", /^server_error/);
    // The breaker opens for 5 s; then one probe is let through and succeeds.
    let recovered = false;
    for (let i = 0; i < 60 && !recovered; i++) {
      const res = await opsChat();
      recovered = res.status === 200;
      await res.arrayBuffer();
      if (!recovered) await new Promise((r) => setTimeout(r, 250));
    }
    expect(recovered).toBe(true);
    await until("state", "healthy");
  });

  it("the earnings page's total equals the ledger to the micro-dollar", async () => {
    // Key objects flush to the ledger a second after earning here (EARNINGS_FLUSH_MS=1000).
    const sql = connect(databaseUrl, { max: 1 });
    let ledger = 0;
    try {
      for (let i = 0; i < 100; i++) {
        const [row] = await sql<{ net: string }[]>`select coalesce(sum(amount_micros - fee_micros), 0)::text as net from public.earnings_ledger where seller_id = ${sellerId}`;
        ledger = Number(row!.net);
        if (ledger === 3 * SHARE) break;
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await sql.end();
    }
    expect(ledger).toBe(3 * SHARE);
    await page.getByRole("navigation").getByRole("link", { name: "Earnings" }).click();
    await page.getByRole("heading", { name: "Earnings" }).waitFor();
    await page.getByTestId("ledger-total").filter({ hasText: usd(ledger) }).waitFor();
    expect(await page.getByTestId("balance-earned").textContent()).toBe(usd(ledger));
    expect(await page.getByTestId("live-unflushed").textContent()).toBe(usd(0));
    await page.locator(".chart canvas").first().waitFor();
    await page.screenshot({ path: join(DOCS, "dashboard-earnings.png"), fullPage: true });
  });

  it("PR25: downloads the JSON and CSV exports, identical to the API's", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "Privacy" }).click();
    await page.getByRole("heading", { name: "Privacy and your data" }).waitFor();
    const [json] = await Promise.all([page.waitForEvent("download"), page.getByRole("link", { name: "Everything as JSON" }).click()]);
    const downloaded = JSON.parse(readFileSync((await json.path())!, "utf8")) as Record<string, unknown>;
    const api = (await (await context.request.get(`${url}/api/export?format=json`)).json()) as Record<string, unknown>;
    delete downloaded.exportedAt;
    delete api.exportedAt;
    expect(downloaded).toEqual(api);
    expect((downloaded.keys as { keyId: string }[]).map((k) => k.keyId)).toEqual([keyId]);
    expect((downloaded.earnings as unknown[]).length).toBeGreaterThan(0);
    for (const data of ["earnings", "keys"]) {
      const [csv] = await Promise.all([page.waitForEvent("download"), page.getByRole("link", { name: data === "earnings" ? "Earnings as CSV" : "Key configurations as CSV" }).click()]);
      const file = readFileSync((await csv.path())!, "utf8");
      const fromApi = await (await context.request.get(`${url}/api/export?format=csv&data=${data}`)).text();
      expect(file).toBe(fromApi);
      expect(file).toContain(keyId);
    }
  });

  it("a second seller's socket to the first seller's room is refused; its own room opens", async () => {
    const other = await browser.newContext();
    const p = await newPage(other);
    await signIn(p, `other-${email}`);
    const attempt = (room: string) => p.evaluate(`new Promise((resolve) => {
      const ws = new WebSocket(location.origin.replace("http", "ws") + "/api/live/${room}");
      ws.onopen = () => { resolve("open"); ws.close(); };
      ws.onerror = () => resolve("refused");
    })`) as Promise<string>;
    expect(await attempt(sellerId)).toBe("refused");
    const otherId = ((await (await other.request.get(`${url}/api/me`)).json()) as { seller: { id: string } }).seller.id;
    expect(await attempt(otherId)).toBe("open");
    await other.close();
  });

  it("PR5: edits limits, budget, routes and tier; pauses and resumes the key; all shown live", async () => {
    await page.goto(url);
    await page.getByRole("button", { name: `Edit ${keyId}` }).click();
    await page.getByRole("heading", { name: `Edit ${keyId}` }).waitFor();
    await page.getByLabel("Requests per minute").fill("700");
    await page.getByLabel("Daily budget (micro-dollars, blank = none)").fill("5000000");
    await page.getByLabel("Allowed routes (blank = the provider's defaults)").fill("POST /v1/chat/completions");
    await page.getByLabel("Tier").selectOption("economy");
    await page.getByRole("button", { name: "Save changes" }).click();
    await page.getByRole("heading", { name: `Edit ${keyId}` }).waitFor({ state: "detached" });
    const view = ((await (await context.request.get(`${url}/api/keys/${keyId}`)).json()) as { key: { config: Record<string, unknown> } }).key.config;
    expect(view).toMatchObject({ requestsPerMinute: 700, dailyBudgetMicros: 5_000_000, allowedRoutes: ["POST /v1/chat/completions"], tier: "economy", priceMicros: PRICE });
    await until("tier", "economy / economy");
    tier = "economy";
    expect((await opsChat()).status).toBe(200);
    await page.getByRole("button", { name: `Pause ${keyId}` }).click();
    await until("state", "paused");
    expect((await opsChat()).status).toBe(503);
    await page.getByRole("button", { name: `Resume ${keyId}` }).click();
    await until("state", "healthy");
    expect((await opsChat()).status).toBe(200);
  });

  it("removes a key only after confirmation", async () => {
    // A second key, made through the API as the page would (cookie, CSRF header, our Origin).
    const { encryptCredential } = await import("../../core/vault.ts");
    const vault = (await (await context.request.get(`${url}/api/vault/public-key`)).json()) as { keys: { kid: string; jwk: JsonWebKey }[] };
    const spare = await newKeyId(sellerId);
    const envelope = await encryptCredential(`sk-demo-spare-${Date.now()}`, vault.keys[0]!, { sellerId, keyId: spare });
    const made = await context.request.post(`${url}/api/keys`, {
      headers: { "cn2-csrf": "1", origin: url, "content-type": "application/json" },
      data: { keyId: spare, sellerId, envelope, config: { provider: "openai", priceMicros: PRICE, requestsPerMinute: 100, maxConcurrent: 2, region: "us" } },
    });
    expect(made.status()).toBe(201);
    await page.goto(url);
    const row = page.locator(`tr[data-key-id="${spare}"]`);
    await row.waitFor();
    await page.getByRole("button", { name: `Remove ${spare}` }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Cancel" }).click();
    expect((await context.request.get(`${url}/api/keys/${spare}`)).status()).toBe(200);
    await page.getByRole("button", { name: `Remove ${spare}` }).click();
    await page.getByRole("dialog").getByRole("button", { name: "Remove the key" }).click();
    await row.waitFor({ state: "detached" });
    expect((await context.request.get(`${url}/api/keys/${spare}`)).status()).toBe(404);
    await page.locator(`tr[data-key-id="${keyId}"]`).waitFor();
  });

  it("axe-core finds no serious or critical violation on any page; the keys page screenshot", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "Keys" }).click();
    await page.locator(`tr[data-key-id="${keyId}"]`).waitFor();
    await page.screenshot({ path: join(DOCS, "dashboard-keys.png"), fullPage: true });
    const found: Record<string, string[]> = {};
    for (const [path, heading] of [["/", "Your keys"], ["/keys/new", "Add a key"], ["/earnings", "Earnings"], ["/payouts", "Payouts and verification"], ["/webhooks", "Webhooks"], ["/privacy", "Privacy and your data"]] as const) {
      await page.goto(`${url}${path}`);
      await page.getByRole("heading", { name: heading, exact: true }).waitFor();
      found[path] = await axeViolations(page);
    }
    // The edit form and the removal dialog (opened from the keyboard; Escape closes it).
    await page.goto(url);
    await page.getByRole("button", { name: `Edit ${keyId}` }).click();
    await page.getByRole("heading", { name: `Edit ${keyId}` }).waitFor();
    found["/ (edit)"] = await axeViolations(page);
    await page.getByRole("button", { name: `Remove ${keyId}` }).focus();
    await page.keyboard.press("Enter");
    await page.getByRole("dialog").waitFor();
    expect(await page.evaluate("document.activeElement?.textContent")).toBe("Cancel");
    found["/ (remove dialog)"] = await axeViolations(page);
    await page.keyboard.press("Escape");
    await page.getByRole("dialog").waitFor({ state: "hidden" });
    const signedOut = await browser.newContext();
    const s = await newPage(signedOut);
    await s.goto(url);
    await s.getByRole("heading", { name: "Sign in" }).waitFor();
    found["/sign-in"] = await axeViolations(s);
    await signedOut.close();
    expect(found).toEqual(Object.fromEntries(Object.keys(found).map((k) => [k, []])));
    // Every page so far ran under the strict CSP without the browser blocking anything.
    expect(cspViolations).toEqual([]);
  });

  it("PR25: closing the account ends the session and the keys stop serving", async () => {
    // The key serves until the account closes.
    expect((await opsChat()).status).toBe(200);
    await page.goto(`${url}/privacy`);
    await page.getByRole("button", { name: "Close my account…" }).click();
    const confirm = page.getByRole("button", { name: "Close my account for good" });
    expect(await confirm.isDisabled()).toBe(true);
    await page.getByLabel(/Type your email/).fill(email);
    await confirm.click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.getByText("Your account is closed and you are signed out.").waitFor();
    expect((await context.cookies()).filter((c) => c.name === "__Host-cn2_session")).toEqual([]);
    expect((await context.request.get(`${url}/api/me`)).status()).toBe(401);
    const res = await opsChat();
    expect(res.status).toBe(503);
    // The auth user went too (Supabase's Admin API, faked on loopback, deletes it).
    const sql = connect(databaseUrl, { max: 1 });
    try {
      expect(await sql`select id from auth.users where id = ${sellerId}`).toHaveLength(0);
    } finally {
      await sql.end();
    }
  });
});
