// The whole marketplace for the browser tests, as `npm start` runs it but hermetic: the
// dashboard built by Vite, the real Worker under `wrangler dev` (Static Assets, _headers,
// Durable Objects, KV, queues in workerd) on a free loopback port, throwaway secrets in
// a temporary env file, an in-memory PGlite behind Hyperdrive and the demo upstream.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";
import { buildDashboard } from "../../tools/dashboard-build.ts";
import { generateDevSigningKey } from "../../core/dev-signing-key.ts";
import { generateVaultKey } from "../../core/vault.ts";
import { connect, hyperdriveUrl, migrate, startEmbeddedDb } from "../../tools/database.ts";
import { startDemoUpstream, upstreamBaseUrls } from "../../tools/demo-upstream.ts";
import { startFakeSupabaseAuth } from "./fake-supabase-auth.ts";

const ROOT = join(import.meta.dirname, "..", "..");
const HOST = "127.0.0.1";

export interface Stack {
  url: string;
  opsToken: string;
  /** Unpaid proxy calls (`cn2-proxy-token`). */
  proxyToken: string;
  demoUrl: string;
  databaseUrl: string;
  /** The fake Supabase Auth the sign-in page's supabase-js talks to. */
  supabaseUrl: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, HOST, () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const hex = (n: number) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, "0")).join("");

export async function startStack(): Promise<Stack> {
  await buildDashboard();
  const upstream = await startDemoUpstream({ port: 0, host: HOST });
  const db = await startEmbeddedDb({ port: 0 });
  const sql = connect(db.url, { max: 1 });
  await migrate(sql).finally(() => sql.end());
  // Production sign-in (supabase-js in the page) against a fake Supabase Auth; the dev
  // sign-in stays on beside it, as when a developer sets SUPABASE_URL locally.
  const supabase = await startFakeSupabaseAuth({ databaseUrl: db.url });
  // The page may call it: the built CSP allows Supabase's hosted origins only (test build only).
  // Put back when the stack stops, so a later deploy of dashboard/dist never carries it.
  const headersPath = join(ROOT, "dashboard", "dist", "_headers");
  const builtHeaders = readFileSync(headersPath, "utf8");
  writeFileSync(headersPath, builtHeaders.replace("connect-src 'self' https://*.supabase.co", `connect-src 'self' https://*.supabase.co ${supabase.url}`));
  const dir = mkdtempSync(join(tmpdir(), "cn2-browser-"));
  const opsToken = hex(32);
  const proxyToken = hex(32);
  const vault = await generateVaultKey("browser-test");
  const dev = await generateDevSigningKey("browser-test");
  const envFile = join(dir, "secrets.env");
  writeFileSync(envFile, [
    `OPS_TOKEN=${opsToken}`,
    `PROXY_TOKEN=${proxyToken}`,
    `VAULT_PRIVATE_KEYS='${JSON.stringify([vault.privateKey])}'`,
    `MPP_SECRET_KEY=${hex(32)}`,
    `WEBHOOK_SECRET_KEYS='${JSON.stringify([{ kid: "browser-test", key: btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32)))) }])}'`,
    `AUTH_DEV_SIGNING_KEY='${JSON.stringify(dev.privateJwk)}'`,
    `SUPABASE_SERVICE_ROLE_KEY=${supabase.serviceRoleKey}`,
    `AUTH_JWKS='${JSON.stringify({ keys: [...dev.jwks.keys, ...supabase.jwks.keys] })}'`,
  ].join("\n") + "\n", { mode: 0o600 });
  const port = await freePort();
  const url = `http://${HOST}:${port}`;
  const child: ChildProcess = spawn(join(ROOT, "node_modules", ".bin", "wrangler"), [
    "dev", "--port", String(port), "--ip", HOST,
    "--env-file", envFile,
    // Development, opted into (core/environment.ts): wrangler.toml is production.
    "--var", "CN2_DEV:1",
    "--var", `UPSTREAM_BASE_URLS:${JSON.stringify(upstreamBaseUrls(upstream.url))}`,
    "--var", "DEV_FAUCET:1",
    "--var", `SUPABASE_URL:${supabase.url}`,
    "--var", `SUPABASE_ANON_KEY:${supabase.anonKey}`,
    // Earnings reach the ledger a second after a request, so the test sees the ledger move.
    "--var", "EARNINGS_FLUSH_MS:1000",
    // A paused, resumed or closed key leaves or rejoins its pool at once (as in the workerd tests).
    "--var", "POOL_CACHE_MS:0",
    "--var", "POOL_DEBOUNCE_MS:0",
    "--persist-to", join(dir, "state"),
    "--show-interactive-dev-session=false",
  ], {
    cwd: ROOT,
    env: {
      ...process.env,
      PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ""}`,
      WRANGLER_SEND_METRICS: "false",
      CLOUDFLARE_CF_FETCH_ENABLED: "false",
      CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE: hyperdriveUrl(db.url),
    },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  child.stdout?.on("data", (d) => (output = (output + d).slice(-4000)));
  child.stderr?.on("data", (d) => (output = (output + d).slice(-4000)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      const exited = new Promise((r) => child.once("exit", r));
      try { process.kill(-child.pid, "SIGTERM"); } catch { child.kill("SIGTERM"); }
      const killer = setTimeout(() => { try { process.kill(-child.pid!, "SIGKILL"); } catch { /* gone */ } }, 5000);
      await exited;
      clearTimeout(killer);
    }
    writeFileSync(headersPath, builtHeaders);
    await upstream.close();
    await supabase.close();
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`wrangler dev exited (${child.exitCode}):\n${output}`);
      try {
        if ((await fetch(`${url}/healthz`)).ok) break;
      } catch { /* not yet */ }
      if (i > 600) throw new Error(`the Worker did not answer within 120 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, opsToken, proxyToken, demoUrl: upstream.url, databaseUrl: db.url, supabaseUrl: supabase.url, stop };
}
