// The seller CLI: list a provider key on cn2 and manage its configuration (S2, S3).
//
//   npm run seller -- add --provider openai --price-micros 1000 --rpm 60 --concurrency 4 --region eu < key.txt
//   npm run seller -- list | show <keyId> | set <keyId> field=value ... | remove <keyId> | help
//
// `add` seals the credential here, with the vault's public key, before anything is sent:
// the plaintext leaves this process only as ciphertext bound to (sellerId, keyId).
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
import { encryptCredential } from "../worker/vault.ts";
import { CliError, apiClient, isMain, pretty, runCli, type ApiClient, type KeyView } from "./api-client.ts";

export const DEFAULT_SELLER = "demo";

const USAGE = `cn2 seller CLI

  npm run seller -- add --provider <id> --price-micros <n> --rpm <n> --concurrency <n> --region <eu|us|asia|global>
                        [--tier standard|premium|economy] [--daily-budget-micros <n>] [--monthly-budget-micros <n>]
                        [--routes "POST /v1/chat/completions,GET /v1/models"] [--seller <id>] [--file <path>]
      Reads the credential from --file or stdin, encrypts it locally and uploads only the ciphertext.
  npm run seller -- list [--seller <id>] [--json]
  npm run seller -- show <keyId>
  npm run seller -- set <keyId> field=value ...
      fields: priceMicros requestsPerMinute maxConcurrent dailyBudgetMicros monthlyBudgetMicros
              (none = no cap) allowedRoutes (comma list) region tier status (active|paused)
  npm run seller -- remove <keyId>

Environment: CN2_URL (default http://127.0.0.1:8787), CN2_OPS_TOKEN (default: OPS_TOKEN in .dev.vars).`;

// ---------------------------------------------------------------------------------
// Library: used by tools/dev.ts to seed demo keys, and by tests

/** `k_` + 16 random [a-z0-9], unbiased (rejection sampling over random bytes). */
export function newKeyId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  let id = "";
  while (id.length < 16) {
    for (const byte of crypto.getRandomValues(new Uint8Array(32))) {
      // 252 = 7 * 36: bytes above it would favour the first letters.
      if (byte < 252 && id.length < 16) id += alphabet[byte % 36];
    }
  }
  return `k_${id}`;
}

/** Validate a key config the way the API will, with messages that name the field. */
export function validateConfig(config: unknown) {
  const result = v.safeParse(KeyConfigSchema, config);
  if (!result.success) throw new CliError(`invalid key config: ${describeIssues(result.issues)}`);
  return result.output;
}

/**
 * Seal `credential` to the vault's current public key and register the key. Everything
 * is validated before the first request, so bad input never reaches the network.
 */
export async function addKey(
  client: ApiClient,
  input: { credential: string; sellerId: string; config: KeyConfigInput; keyId?: string },
): Promise<KeyView> {
  const config = validateConfig(input.config);
  const sellerId = parseWith(SellerIdSchema, input.sellerId, "seller id");
  const keyId = parseWith(KeyIdSchema, input.keyId ?? newKeyId(), "key id");
  checkCredential(input.credential);

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
      seller: { type: "string", default: DEFAULT_SELLER },
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

  // Check config and seller before asking for the secret.
  const checked = validateConfig(config);
  parseWith(SellerIdSchema, values.seller, "--seller");
  const credential = await readCredential(values.file);
  const key = await addKey(client, { credential, sellerId: values.seller!, config: checked });
  process.stdout.write(`added ${key.keyId} (${key.config.provider} ${key.config.region} ${key.config.tier}) for seller ${key.sellerId}\n`);
}

async function cmdList(client: ApiClient, args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: { seller: { type: "string", default: DEFAULT_SELLER }, json: { type: "boolean", default: false } },
  });
  const keys = await client.listKeys(values.seller!);
  if (values.json) return void process.stdout.write(pretty(keys) + "\n");
  if (keys.length === 0) return void process.stdout.write(`no keys for seller ${values.seller}\n`);
  process.stdout.write(table(keys.map(keyRow), ["keyId", "provider", "region", "tier", "price µ$", "rpm", "conc", "status", "health"]));
}

function keyRow(k: KeyView): string[] {
  const c = k.config;
  return [k.keyId, c.provider, c.region, c.tier, String(c.priceMicros), String(c.requestsPerMinute), String(c.maxConcurrent), c.status, k.health?.state ?? "?"];
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

export async function main(argv: string[], client: ApiClient = apiClient()): Promise<void> {
  const [command, ...args] = argv;
  switch (command) {
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
