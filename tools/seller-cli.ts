// The seller CLI: sign in, list a provider key on cn2 and manage its configuration (S1-S3).
//
//   npm run seller -- login [--email you@example.com]   (dev sign-in; or paste a token: --token)
//   npm run seller -- add --provider openai --price-micros 1000 --rpm 60 --concurrency 4 --region eu < key.txt
//   npm run seller -- list | show <keyId> | set <keyId> field=value ... | remove <keyId> | whoami | logout | help
//
// `add` seals the credential here, with the vault's public key, before anything is sent:
// the plaintext leaves this process only as ciphertext bound to (sellerId, keyId). The
// seller is the signed-in one; its session token lives in the git-ignored .cn2-session.json.
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import * as v from "valibot";
import {
  KeyConfigPatchSchema,
  KeyConfigSchema,
  KeyIdSchema,
  SellerIdSchema,
  type KeyConfigInput,
  type KeyConfigPatch,
} from "../schema/wire.ts";
import { encryptCredential } from "../core/vault.ts";
import { DERIVED_KEY_ID, INVALID_KEY_ID_MESSAGE, isKeyIdFor, newKeyId } from "../core/key-id.ts";
import { ApiError, CliError, SESSION_PATH, apiClient, isMain, pretty, runCli, saveSession, tokenExpiry, type ApiClient, type KeyView } from "./api-client.ts";

/** The dev account `npm start` seeds and `login` signs in as by default. */
export const DEFAULT_DEV_EMAIL = "demo@cn2.example";

const USAGE = `cn2 seller CLI

  npm run seller -- login [--email <address>] [--token]
      Dev (npm start): signs in as the email (default ${DEFAULT_DEV_EMAIL}), creating the account.
      Production, or --token: paste the session token the dashboard shows (it is checked, then saved).
      The token is kept in .cn2-session.json (git-ignored, mode 0600), per CN2_URL.
  npm run seller -- whoami | logout
  npm run seller -- add --provider <id> --price-micros <n> --rpm <n> --concurrency <n> --region <eu|us|asia|global>
                        [--tier standard|premium|economy] [--daily-budget-micros <n>] [--monthly-budget-micros <n>]
                        [--routes "POST /v1/chat/completions,GET /v1/models"] [--file <path>]
      Reads the credential from --file or stdin, encrypts it locally and uploads only the ciphertext.
  npm run seller -- list [--json]
  npm run seller -- show <keyId>
  npm run seller -- set <keyId> field=value ...
      fields: priceMicros requestsPerMinute maxConcurrent dailyBudgetMicros monthlyBudgetMicros
              (none = no cap) allowedRoutes (comma list) region tier status (active|paused)
  npm run seller -- remove <keyId>
  npm run seller -- payout [--amount-micros <n>]
      Withdraw (default: everything available, rounded down to cents for Stripe) to your payout method.
  npm run seller -- payout status | onboard | confirm <0xAddress> | schedule <daily|weekly|monthly|manual>
      status: method, readiness, KYC and balance; onboard: a Stripe Connect onboarding link;
      confirm: confirm the USDC address you set; schedule: when scheduled payouts run (weekly by default).

Environment: CN2_URL (default http://127.0.0.1:8787), CN2_SELLER_TOKEN (default: the saved session).`;

// ---------------------------------------------------------------------------------
// Library: used by tools/dev.ts to seed demo keys, and by tests

/** Validate a key config the way the API will, with messages that name the field. */
export function validateConfig(config: unknown) {
  const result = v.safeParse(KeyConfigSchema, config);
  if (!result.success) throw new CliError(`invalid key config: ${describeIssues(result.issues)}`);
  return result.output;
}

/**
 * Seal `credential` to the vault's current public key and register the key for the
 * signed-in seller. Everything is validated before the first request, so bad input never
 * reaches the network. The seller id (bound into the envelope) is the session's, from
 * GET /api/me unless given.
 */
export async function addKey(
  client: ApiClient,
  input: { credential: string; config: KeyConfigInput; keyId?: string; sellerId?: string },
): Promise<KeyView> {
  const config = validateConfig(input.config);
  if (input.keyId !== undefined && !DERIVED_KEY_ID.test(input.keyId)) throw new CliError(`invalid key id: ${INVALID_KEY_ID_MESSAGE}`);
  if (input.sellerId !== undefined) parseWith(SellerIdSchema, input.sellerId, "seller id");
  checkCredential(input.credential);
  const sellerId = input.sellerId ?? (await client.me()).id;
  // Derived from the seller (core/key-id.ts): the API takes no id made for anyone else.
  const keyId = input.keyId ?? (await newKeyId(sellerId));
  if (!(await isKeyIdFor(sellerId, keyId))) throw new CliError(`invalid key id: ${INVALID_KEY_ID_MESSAGE}`);

  const vault = await client.vaultPublicKey();
  const current = vault.keys?.find((k) => k.kid === vault.current);
  if (!current) throw new CliError("the vault publishes no current public key");
  const envelope = await encryptCredential(input.credential, current, { sellerId, keyId });
  return client.createKey({ keyId, sellerId, envelope, config });
}

function checkCredential(credential: string): void {
  if (typeof credential !== "string" || credential.length === 0) throw new CliError("empty credential");
  // It is injected into an HTTP header upstream: line breaks and NUL can never work.
  if (/[\r\n\0]/.test(credential)) throw new CliError("credential must be a single line");
}

function parseWith<T extends v.GenericSchema>(schema: T, value: unknown, what: string): v.InferOutput<T> {
  const result = v.safeParse(schema, value);
  if (!result.success) throw new CliError(`invalid ${what}: ${describeIssues(result.issues)}`);
  return result.output;
}

/** CLI flag names for config fields, so errors point at what the seller typed. */
const FLAG_OF: Record<string, string> = {
  priceMicros: "--price-micros",
  requestsPerMinute: "--rpm",
  maxConcurrent: "--concurrency",
  dailyBudgetMicros: "--daily-budget-micros",
  monthlyBudgetMicros: "--monthly-budget-micros",
  allowedRoutes: "--routes",
};

function describeIssues(issues: readonly v.BaseIssue<unknown>[]): string {
  return issues
    .map((issue) => {
      const path = v.getDotPath(issue);
      const field = path?.split(".")[0];
      const name = path ? `${path}${field && FLAG_OF[field] ? ` (${FLAG_OF[field]})` : ""}` : "";
      return name ? `${name}: ${issue.message}` : issue.message;
    })
    .join("; ");
}

// ---------------------------------------------------------------------------------
// Argument parsing helpers

function integer(flag: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw.trim())) throw new CliError(`${flag} must be a whole number, got "${raw}"`);
  return Number(raw.trim());
}

function routeList(raw: string): string[] {
  return raw.split(",").map((r) => r.trim()).filter(Boolean);
}

async function readCredential(file: string | undefined): Promise<string> {
  let text: string;
  if (file) {
    text = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
      throw new CliError(`cannot read --file ${file}: ${err.code ?? "error"}`);
    });
  } else {
    if (process.stdin.isTTY) process.stderr.write("Paste the credential, then press Enter and Ctrl-D:\n");
    text = await readStdin();
  }
  return text.replace(/[\r\n]+$/, "");
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

const PATCH_FIELDS = [
  "priceMicros", "requestsPerMinute", "maxConcurrent", "dailyBudgetMicros", "monthlyBudgetMicros",
  "allowedRoutes", "region", "tier", "status",
] as const;
type PatchField = (typeof PATCH_FIELDS)[number];

/** `field=value` pairs -> a validated KeyConfigPatch. */
export function parsePatch(pairs: string[]): KeyConfigPatch {
  if (pairs.length === 0) throw new CliError(`set needs at least one field=value (fields: ${PATCH_FIELDS.join(", ")})`);
  const patch: Record<string, unknown> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    const field = (eq > 0 ? pair.slice(0, eq) : pair) as PatchField;
    if (eq <= 0 || !PATCH_FIELDS.includes(field)) {
      throw new CliError(`expected field=value with field one of ${PATCH_FIELDS.join(", ")}, got "${pair}"`);
    }
    patch[field] = patchValue(field, pair.slice(eq + 1));
  }
  return parseWith(KeyConfigPatchSchema, patch, "change");
}

function patchValue(field: PatchField, raw: string): unknown {
  switch (field) {
    case "priceMicros":
    case "requestsPerMinute":
    case "maxConcurrent":
      return integer(field, raw);
    case "dailyBudgetMicros":
    case "monthlyBudgetMicros":
      return raw === "none" ? null : integer(field, raw);
    case "allowedRoutes":
      return routeList(raw);
    default:
      return raw;
  }
}

// ---------------------------------------------------------------------------------
// Commands

async function cmdAdd(client: ApiClient, args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      provider: { type: "string" },
      "price-micros": { type: "string" },
      rpm: { type: "string" },
      concurrency: { type: "string" },
      region: { type: "string" },
      tier: { type: "string" },
      "daily-budget-micros": { type: "string" },
      "monthly-budget-micros": { type: "string" },
      routes: { type: "string" },
      file: { type: "string" },
    },
  });
  for (const required of ["provider", "price-micros", "rpm", "concurrency", "region"] as const) {
    if (values[required] === undefined) throw new CliError(`add needs --${required} (see \`npm run seller -- help\`)`);
  }
  const config: Record<string, unknown> = {
    provider: values.provider,
    priceMicros: integer("--price-micros", values["price-micros"]),
    requestsPerMinute: integer("--rpm", values.rpm),
    maxConcurrent: integer("--concurrency", values.concurrency),
    region: values.region,
  };
  if (values.tier !== undefined) config.tier = values.tier;
  if (values["daily-budget-micros"] !== undefined) config.dailyBudgetMicros = integer("--daily-budget-micros", values["daily-budget-micros"]);
  if (values["monthly-budget-micros"] !== undefined) config.monthlyBudgetMicros = integer("--monthly-budget-micros", values["monthly-budget-micros"]);
  if (values.routes !== undefined) config.allowedRoutes = routeList(values.routes);

  // Check config and the session before asking for the secret.
  const checked = validateConfig(config);
  const sellerId = (await client.me()).id;
  const credential = await readCredential(values.file);
  const key = await addKey(client, { credential, sellerId, config: checked });
  process.stdout.write(`added ${key.keyId} (${key.config.provider} ${key.config.region} ${key.config.tier}) for seller ${key.sellerId}\n`);
}

async function cmdList(client: ApiClient, args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: { json: { type: "boolean", default: false } },
  });
  const keys = await client.listKeys();
  if (values.json) return void process.stdout.write(pretty(keys) + "\n");
  if (keys.length === 0) return void process.stdout.write("no keys yet (add one: npm run seller -- add ...)\n");
  process.stdout.write(table(keys.map(keyRow), ["keyId", "provider", "region", "tier", "price µ$", "rpm", "conc", "status", "health"]));
}

function keyRow(k: KeyView): string[] {
  const c = k.config;
  // Premium is earned (docs/api.md): until then the key serves in standard, and says so.
  const tier = k.servingTier && k.servingTier !== c.tier ? `${c.tier} (serving ${k.servingTier})` : c.tier;
  return [k.keyId, c.provider, c.region, tier, String(c.priceMicros), String(c.requestsPerMinute), String(c.maxConcurrent), c.status, k.health?.state ?? "?"];
}

function table(rows: string[][], header: string[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  return all.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n") + "\n";
}

function keyIdArg(args: string[], command: string): string {
  const [keyId, ...rest] = args;
  if (!keyId) throw new CliError(`${command} needs a key id`);
  if (command !== "set" && rest.length > 0) throw new CliError(`${command} takes one key id`);
  return parseWith(KeyIdSchema, keyId, "key id");
}

/**
 * Sign in and save the session. Dev: the deployment's dev sign-in (POST /auth/dev/sign-in).
 * Production (no dev sign-in there, or --token): a token pasted from the dashboard, checked
 * with GET /api/me before it is saved.
 */
export async function login(client: ApiClient, opts: { email?: string; token?: string } = {}): Promise<{ sellerId: string; email: string | null; expiresAt: number }> {
  let token = opts.token;
  if (token === undefined) {
    try {
      token = (await client.devSignIn(opts.email ?? DEFAULT_DEV_EMAIL)).token;
    } catch (err) {
      if (err instanceof ApiError && (err.code === "not_found" || err.code === "auth_not_configured")) {
        throw new CliError(`${client.baseUrl} has no dev sign-in: sign in on the dashboard, copy the session token, then run \`npm run seller -- login --token\` and paste it`);
      }
      throw err;
    }
  }
  client.useSellerToken(token);
  const me = await client.me();
  const session = { token, sellerId: me.id, email: me.email, expiresAt: tokenExpiry(token) };
  saveSession(client.baseUrl, session);
  return session;
}

async function cmdLogin(client: ApiClient, args: string[]): Promise<void> {
  const { values } = parseArgs({ args, strict: true, options: { email: { type: "string" }, token: { type: "boolean", default: false } } });
  let token: string | undefined;
  if (values.token) {
    if (process.stdin.isTTY) process.stderr.write("Paste the session token, then press Enter and Ctrl-D:\n");
    token = (await readStdin()).trim();
    if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) throw new CliError("that is not a session token (expected a JWT: three base64url parts)");
  }
  const session = await login(client, { email: values.email, token });
  const until = session.expiresAt ? ` until ${new Date(session.expiresAt * 1000).toISOString()}` : "";
  process.stdout.write(`signed in as ${session.email ?? session.sellerId} (seller ${session.sellerId})${until}; session saved to ${SESSION_PATH}\n`);
}

async function cmdPayout(client: ApiClient, args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const print = (value: unknown) => void process.stdout.write(pretty(value) + "\n");
  switch (sub) {
    case "status":
      return print({ ...(await client.call<Record<string, unknown>>("GET", "/api/payout", undefined, "seller")), balance: (await client.earnings()).balance });
    case "onboard": {
      const link = await client.call<{ accountId: string; url: string; expiresAt: string }>("POST", "/api/payout/stripe/onboard", {}, "seller");
      return void process.stdout.write(`Stripe account ${link.accountId}: finish onboarding at\n${link.url}\n(the link expires ${link.expiresAt})\n`);
    }
    case "confirm": {
      if (!rest[0]) throw new CliError("usage: npm run seller -- payout confirm <0xAddress>");
      return print(await client.call("POST", "/api/payout/confirm", { evmAddress: rest[0] }, "seller"));
    }
    case "schedule": {
      if (!rest[0]) throw new CliError("usage: npm run seller -- payout schedule <daily|weekly|monthly|manual>");
      return print(await client.call("PUT", "/api/payout/schedule", { schedule: rest[0] }, "seller"));
    }
    default: {
      const { values } = parseArgs({ args, strict: true, options: { "amount-micros": { type: "string" } } });
      const raw = values["amount-micros"];
      if (raw !== undefined && !/^[1-9][0-9]{0,15}$/.test(raw)) throw new CliError("--amount-micros must be a whole number of micro-dollars");
      const { payout } = await client.call<{ payout: { id: string; status: string; amountMicros: number; method: string } }>(
        "POST", "/api/payouts", raw === undefined ? {} : { amountMicros: Number(raw) }, "seller");
      process.stdout.write(`payout ${payout.id}: ${payout.status}, ${(payout.amountMicros / 1_000_000).toFixed(6)} USD by ${payout.method}\n`);
      return print(payout);
    }
  }
}

export async function main(argv: string[], client: ApiClient = apiClient()): Promise<void> {
  const [command, ...args] = argv;
  switch (command) {
    case "login":
      return cmdLogin(client, args);
    case "logout":
      saveSession(client.baseUrl, null);
      return void process.stdout.write(`signed out of ${client.baseUrl}\n`);
    case "whoami":
      return void process.stdout.write(pretty(await client.me()) + "\n");
    case "add":
      return cmdAdd(client, args);
    case "list":
      return cmdList(client, args);
    case "show":
      return void process.stdout.write(pretty(await client.getKey(keyIdArg(args, "show"))) + "\n");
    case "set": {
      const keyId = keyIdArg(args, "set");
      const key = await client.patchKey(keyId, parsePatch(args.slice(1)));
      return void process.stdout.write(pretty(key) + "\n");
    }
    case "payout":
      return cmdPayout(client, args);
    case "remove": {
      const keyId = keyIdArg(args, "remove");
      await client.deleteKey(keyId);
      return void process.stdout.write(`removed ${keyId}\n`);
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      return void process.stdout.write(USAGE + "\n");
    default:
      throw new CliError(`unknown command "${command}" (try \`npm run seller -- help\`)`);
  }
}

if (isMain(import.meta.url)) runCli((argv) => main(argv));
