// `npm start`: the whole marketplace locally, in one command.
//
//   1. .dev.vars: a random ops token, a dev vault key and the MPP secret that signs payment
//      challenges (each created once, kept across restarts; mode 0600)
//      and the dev sign-in key (AUTH_DEV_SIGNING_KEY + its public AUTH_JWKS)
//   2. the demo upstream (fake OpenAI/Anthropic/...) in this process, on :8788; Postgres:
//      the embedded PGlite persisted in .data/pglite on :54329 (DATABASE_URL set: that
//      database instead), migrated; a fake Persona for KYC
//   2b. the seller dashboard (dashboard/) built into dashboard/dist, served by the Worker
//   3. `wrangler dev` on :8787, pointed at the demo upstream, with the dev faucet on, its
//      Hyperdrive binding at the database above
//   4. wait for GET /healthz
//   5. sign in the demo seller (demo@cn2.example; the session is saved for the seller CLI)
//      and seed three keys (once; skipped when it already has keys)
//   6. print a copy-paste curl, the sign-in link and how to buy (buyer key, faucet credit, a paid call)
//
// Ctrl-C stops wrangler (and its workerd), the upstream, Persona and the database.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import type { KeyConfigInput } from "../schema/wire.ts";
import { generateDevSigningKey } from "../core/dev-signing-key.ts";
import { generateVaultKey, parseVaultPrivateKeys } from "../core/vault.ts";
import { DEFAULT_BASE_URL, DEV_VARS_PATH, REPO_ROOT, apiClient, formatError, isMain, parseDevVars, type ApiClient } from "./api-client.ts";
import { connect, DEFAULT_DATA_DIR, DEFAULT_PORT as PGLITE_DEFAULT_PORT, hyperdriveUrl, migrate, startEmbeddedDb, type EmbeddedDb } from "./database.ts";
import { startDemoUpstream, upstreamBaseUrls } from "./demo-upstream.ts";
import { buildDashboard } from "./dashboard-build.ts";
import { startFakePersona, type FakePersona } from "./fake-persona.ts";
import { DEFAULT_DEV_EMAIL, addKey, login } from "./seller-cli.ts";

const HOST = "127.0.0.1";
const PORT = Number(process.env.CN2_PORT ?? 8787);
const UPSTREAM_PORT = Number(process.env.DEMO_UPSTREAM_PORT ?? 8788);
const READY_TIMEOUT_MS = 60_000;

const log = (line: string) => process.stderr.write(`[cn2] ${line}\n`);

// ---------------------------------------------------------------------------------
// 1. Secrets

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Make sure .dev.vars holds OPS_TOKEN, VAULT_PRIVATE_KEYS and MPP_SECRET_KEY, adding only
 * what is missing: an existing vault key must survive restarts or stored envelopes stop
 * opening, and a kept MPP secret keeps outstanding challenges and receipts verifiable.
 */
export async function ensureDevVars(path = DEV_VARS_PATH): Promise<{ opsToken: string; proxyToken: string; created: string[] }> {
  const existing = existsSync(path) ? readFileSync(path, "utf8") : "";
  const vars = parseDevVars(existing);
  const added: string[] = [];

  if (vars.VAULT_PRIVATE_KEYS) {
    try {
      parseVaultPrivateKeys(vars.VAULT_PRIVATE_KEYS); // fail early and clearly, never echoing it
    } catch (err) {
      throw new Error(`${path}: ${(err as Error).message}; fix it or delete the line to generate a new dev key`);
    }
  } else {
    const { privateKey } = await generateVaultKey(`dev-${new Date().toISOString().slice(0, 10)}`);
    // Single quotes: dotenv takes the JSON verbatim.
    added.push(`VAULT_PRIVATE_KEYS='${JSON.stringify([privateKey])}'`);
  }
  let opsToken = vars.OPS_TOKEN;
  if (!opsToken) {
    opsToken = randomHex(32);
    added.push(`OPS_TOKEN=${opsToken}`);
  }
  // Unpaid proxy calls (the printed curl): a token of their own, never the ops token.
  let proxyToken = vars.PROXY_TOKEN;
  if (!proxyToken) {
    proxyToken = randomHex(32);
    added.push(`PROXY_TOKEN=${proxyToken}`);
  }

  // Payments (docs/payments.md): challenge ids and receipts are HMACs under this key.
  if (!vars.MPP_SECRET_KEY) added.push(`MPP_SECRET_KEY=${randomHex(32)}`);

  // Seller webhooks (docs/webhooks.md): signing secrets are sealed under this key at rest.
  if (!vars.WEBHOOK_SECRET_KEYS) {
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
    added.push(`WEBHOOK_SECRET_KEYS='${JSON.stringify([{ kid: `dev-${new Date().toISOString().slice(0, 10)}`, key }])}'`);
  }

  // Seller sign-in (worker/seller/auth.ts): the dev sign-in's ES256 key and the JWKS that verifies it.
  if (!vars.AUTH_DEV_SIGNING_KEY || !vars.AUTH_JWKS) {
    const { privateJwk, jwks } = await generateDevSigningKey();
    added.push(`AUTH_DEV_SIGNING_KEY='${JSON.stringify(privateJwk)}'`, `AUTH_JWKS='${JSON.stringify(jwks)}'`);
  }

  if (added.length > 0) {
    const prefix = existing && !existing.endsWith("\n") ? `${existing}\n` : existing;
    const header = existing ? "" : "# Local secrets for `wrangler dev`, written by `npm start`. Never commit.\n";
    writeFileSync(path, `${header}${prefix}${added.join("\n")}\n`, { mode: 0o600 });
    chmodSync(path, 0o600); // mode applies only on creation
  }
  return { opsToken, proxyToken, created: added.map((line) => line.slice(0, line.indexOf("="))) };
}

// ---------------------------------------------------------------------------------
// 3. wrangler dev

/** Lines of wrangler's output that say nothing a cn2 developer needs. */
const NOISE = [
  /^\s*$/,
  /^\s*⛅️ wrangler/,
  /^[\s─-]+$/,
  /Your Worker has access to the following bindings/,
  /^\s*Binding\s+Resource\s+Mode/,
  /^\s*env\.[A-Z_]+ /,
  /Using (vars|secrets) defined in \.dev\.vars/,
  /^\s*⎔ Starting local server/,
  /Ready on http/,
  /GET \/healthz /,
  /Reloading local server/,
  /Local server updated and ready/,
  /update available/i,
  /CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE variable for binding/,
  /^\s*│|^\s*[╭╰]/,
];

function forwardFiltered(stream: NodeJS.ReadableStream | null, to: NodeJS.WriteStream): void {
  if (!stream) return;
  let pending = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    pending += chunk;
    const lines = pending.split(/\r?\n/);
    pending = lines.pop() ?? "";
    // Strip colour codes only for matching; print lines as wrangler wrote them.
    for (const line of lines) if (!NOISE.some((re) => re.test(line.replace(/\x1b\[[0-9;]*m/g, "")))) to.write(line + "\n");
  });
  stream.on("end", () => pending && to.write(pending + "\n"));
}

/** What wrangler dev needs beyond wrangler.toml: the database and the fake Persona. */
interface DevServices {
  databaseUrl: string;
  persona: { url: string; apiKey: string; templateId: string; webhookSecret: string };
}

function startWrangler(upstreams: Record<string, string>, services: DevServices): ChildProcess {
  const bin = join(REPO_ROOT, "node_modules", ".bin", "wrangler");
  const args = [
    "dev",
    "--port", String(PORT),
    "--ip", HOST,
    // Development, opted into here (core/environment.ts): wrangler.toml is production, and
    // the settings below are refused there.
    "--var", "CN2_DEV:1",
    "--var", `UPSTREAM_BASE_URLS:${JSON.stringify(upstreams)}`,
    // Free credit at POST /api/credit/faucet: local development only, never in wrangler.toml.
    "--var", "DEV_FAUCET:1",
    // Webhook receivers on http://127.0.0.1 for local testing.
    "--var", "DEV_WEBHOOKS_ALLOW_HTTP:1",
    // KYC against the fake Persona (tools/fake-persona.ts): throwaway credentials per start.
    "--var", `PERSONA_API_BASE:${services.persona.url}`,
    "--var", `PERSONA_TEMPLATE_ID:${services.persona.templateId}`,
    "--var", `PERSONA_API_KEY:${services.persona.apiKey}`,
    "--var", `PERSONA_WEBHOOK_SECRET:${services.persona.webhookSecret}`,
    "--persist-to", join(REPO_ROOT, ".wrangler", "state"),
    "--show-interactive-dev-session=false",
  ];
  const child = spawn(bin, args, {
    cwd: REPO_ROOT,
    // wrangler refuses Node 20: put the Node running this script (22) first on PATH.
    env: {
      ...process.env,
      PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ""}`,
      WRANGLER_SEND_METRICS: "false",
      // Miniflare otherwise fetches a real `request.cf` (the developer's own country) from
      // workers.cloudflare.com: offline that is a warning per start, online it makes EU
      // routing depend on where the developer sits. The placeholder is deterministic.
      CLOUDFLARE_CF_FETCH_ENABLED: process.env.CLOUDFLARE_CF_FETCH_ENABLED ?? "false",
      // Hyperdrive's local connection: the database npm start migrated (overrides wrangler.toml's).
      CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE: services.databaseUrl,
    },
    stdio: ["ignore", "pipe", "pipe"],
    // Own process group, so stopping it also stops the workerd it starts.
    detached: true,
  });
  forwardFiltered(child.stdout, process.stdout);
  forwardFiltered(child.stderr, process.stderr);
  return child;
}

function stopChild(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal); // the group we created with detached: true
  } catch {
    child.kill(signal);
  }
}

// ---------------------------------------------------------------------------------
// 4. Readiness

async function waitForHealthz(client: ApiClient, wrangler: ChildProcess): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (wrangler.exitCode !== null || wrangler.signalCode !== null) {
      throw new Error(`wrangler dev exited (${wrangler.exitCode ?? wrangler.signalCode}) before the Worker answered; see its output above`);
    }
    try {
      if ((await client.healthz()).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      throw new Error(`the Worker did not answer GET ${client.baseUrl}/healthz within ${READY_TIMEOUT_MS / 1000} s; see wrangler's output above`);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

// ---------------------------------------------------------------------------------
// 2b. Postgres

/**
 * DATABASE_URL when set (migrated here too); else the embedded PGlite persisted in
 * .data/pglite, on PGLITE_PORT (default 54329, so `psql` and `node tools/database.ts` find it)
 * or any free port when that one is taken.
 */
async function startDatabase(): Promise<{ databaseUrl: string; embedded: EmbeddedDb | null }> {
  const external = process.env.DATABASE_URL;
  let embedded: EmbeddedDb | null = null;
  if (!external) {
    const port = Number(process.env.PGLITE_PORT ?? PGLITE_DEFAULT_PORT);
    embedded = await startEmbeddedDb({ dataDir: DEFAULT_DATA_DIR, port }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "EADDRINUSE") throw err;
      log(`port ${port} is taken; the embedded database uses a free port`);
      return startEmbeddedDb({ dataDir: DEFAULT_DATA_DIR, port: 0 });
    });
  }
  const databaseUrl = external ?? embedded!.url;
  const sql = connect(databaseUrl, { max: 1 });
  try {
    const { applied } = await migrate(sql);
    log(`${external ? "DATABASE_URL" : `embedded PGlite (.data/pglite) on ${embedded!.url}`}: ${applied.length ? `applied ${applied.length} migration(s)` : "migrations up to date"}`);
  } finally {
    await sql.end();
  }
  return { databaseUrl: hyperdriveUrl(databaseUrl), embedded };
}

// ---------------------------------------------------------------------------------
// 5. Demo keys

const DEMO_KEYS: { name: string; config: KeyConfigInput }[] = [
  { name: "alpha", config: { provider: "openai", region: "us", tier: "standard", priceMicros: 2000, requestsPerMinute: 600, maxConcurrent: 8 } },
  { name: "bravo", config: { provider: "openai", region: "eu", tier: "standard", priceMicros: 1500, requestsPerMinute: 600, maxConcurrent: 8 } },
  { name: "charlie", config: { provider: "anthropic", region: "global", tier: "standard", priceMicros: 2500, requestsPerMinute: 600, maxConcurrent: 8 } },
];

/**
 * Sign the demo seller in (dev sign-in; the session is saved for `npm run seller`), then
 * seed its keys once; the demo upstream accepts any `sk-demo-...` credential.
 */
export async function seedDemoKeys(client: ApiClient): Promise<{ seeded: boolean; keyIds: string[] }> {
  const { sellerId } = await login(client, { email: DEFAULT_DEV_EMAIL });
  const existing = await client.listKeys();
  if (existing.length > 0) return { seeded: false, keyIds: existing.map((k) => k.keyId) };
  const keyIds: string[] = [];
  for (const { name, config } of DEMO_KEYS) {
    const key = await addKey(client, { credential: `sk-demo-${name}-${randomHex(12)}`, sellerId, config });
    keyIds.push(key.keyId);
  }
  return { seeded: true, keyIds };
}

// ---------------------------------------------------------------------------------
// 6. Ready

function readyBlock(url: string, proxyToken: string, upstreamUrl: string, keyIds: string[]): string {
  const body = '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello"}]}';
  return [
    "",
    `cn2 is running at ${url}   (demo upstream: ${upstreamUrl})`,
    "",
    "Stream a chat completion through the marketplace (unpaid, with the dev proxy token):",
    "",
    `  curl -N ${url}/openai/v1/chat/completions -H "cn2-proxy-token: ${proxyToken}" -H "content-type: application/json" -d '${body}'`,
    "",
    "Buy it like anyone would: a buyer key, free credit from the dev faucet, a paid call:",
    "",
    // The CLIs default to the default port: on another one, they must be told.
    ...(url === DEFAULT_BASE_URL ? [] : [`  export CN2_URL=${url}      # in each shell where you run the commands below`]),
    "  npm run buyer -- keygen",
    "  npm run buyer -- topup 5",
    `  npm run buyer -- call /openai/v1/chat/completions '${body.replace('"stream":true,', "")}'`,
    "  npm run buyer -- balance",
    "",
    `Seller dashboard: ${url}/   sign in as the demo seller: ${url}/auth/dev/sign-in?email=${encodeURIComponent(DEFAULT_DEV_EMAIL)}`,
    "",
    "Seller tools (signed in as the demo seller; `npm run seller -- login --email you@example.com` for another)",
    "and ops tools (they read the ops token from .dev.vars):",
    "  npm run seller -- list",
    `  npm run inspect -- key ${keyIds[0] ?? "<keyId>"}`,
    "  npm run inspect -- pools",
    "",
    "Ctrl-C stops everything.",
    "",
  ].join("\n");
}

// ---------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { opsToken, proxyToken, created } = await ensureDevVars();
  // The dashboard first: wrangler dev serves dashboard/dist as static assets.
  await buildDashboard();
  log("built the seller dashboard into dashboard/dist");
  if (created.length) log(`wrote ${created.join(", ")} to .dev.vars`);

  const upstream = await startDemoUpstream({ port: UPSTREAM_PORT, host: HOST }).catch((err: NodeJS.ErrnoException) => {
    throw new Error(`demo upstream cannot listen on ${HOST}:${UPSTREAM_PORT} (${err.code ?? err.message}); set DEMO_UPSTREAM_PORT`);
  });
  log(`demo upstream on ${upstream.url}`);
  const url = `http://${HOST}:${PORT}`;
  const { databaseUrl, embedded } = await startDatabase();
  const personaSecrets = { apiKey: `persona_dev_${randomHex(16)}`, templateId: "itmpl_dev0000000000", webhookSecret: `wbhsec_dev_${randomHex(16)}` };
  const persona: FakePersona = await startFakePersona({ ...personaSecrets, host: HOST, webhookUrl: `${url}/webhooks/persona` });
  log(`fake Persona (KYC) on ${persona.url}`);

  const wrangler = startWrangler(upstreamBaseUrls(upstream.url), { databaseUrl, persona: { url: persona.url, ...personaSecrets } });
  let stopping = false;
  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    log("stopping");
    stopChild(wrangler);
    const killer = setTimeout(() => stopChild(wrangler, "SIGKILL"), 5000);
    if (wrangler.exitCode === null && wrangler.signalCode === null) await new Promise((r) => wrangler.once("exit", r));
    clearTimeout(killer);
    await upstream.close();
    await persona.close();
    await embedded?.close();
    process.exit(code);
  };
  process.once("SIGINT", () => void shutdown(0));
  process.once("SIGTERM", () => void shutdown(0));
  process.once("exit", () => stopChild(wrangler)); // last resort if we die another way
  wrangler.once("exit", (code, signal) => {
    if (stopping) return;
    log(`wrangler dev stopped (${code ?? signal})`);
    void shutdown(code || 1);
  });

  try {
    const client = apiClient({ baseUrl: url, token: opsToken });
    await waitForHealthz(client, wrangler);
    const { seeded, keyIds } = await seedDemoKeys(client);
    log(seeded ? `seeded seller ${DEFAULT_DEV_EMAIL} with ${keyIds.length} demo keys` : `seller ${DEFAULT_DEV_EMAIL} already has ${keyIds.length} key(s); not seeding`);
    process.stdout.write(readyBlock(url, proxyToken, upstream.url, keyIds));
  } catch (err) {
    process.stderr.write(formatError(err, opsToken) + "\n");
    await shutdown(1);
  }
}

if (isMain(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(formatError(err) + "\n");
    process.exit(1);
  });
}
