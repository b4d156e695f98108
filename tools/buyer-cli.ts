// The buyer CLI: a keypair is the buyer's whole identity (no account). It pays cn2's
// 402 challenges with prepaid credit through the buyer client (buyer/, the cn2-buyer package).
//
//   npm run buyer -- keygen [--alg Ed25519|P-256] [--force]
//   npm run buyer -- topup <usd> [--card]      (local: the dev faucet; --card: Stripe Checkout)
//   npm run buyer -- balance [--json]
//   npm run buyer -- budget <usd|none>
//   npm run buyer -- call <path> [json]        (POST with a JSON body, else GET)
//   npm run buyer -- account …                 (the optional buyer account, B4: tools/buyer-account-cli.ts)
//
// The key file (.buyer-key.json by default, mode 0600) spends the buyer's credit: keep it
// out of git and never paste it anywhere.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Receipt } from "mppx";
import {
  Cn2BuyerError, createPayingFetch, generateBuyerKey, getBalance, loadBuyerKey, microsToUsd, requestFaucet,
  serializeBuyerKey, setDailyBudget, startTopUp, usdToMicros, type BuyerKey, type KeyAlg,
} from "../buyer/index.ts";
import { CliError, DEFAULT_BASE_URL, REPO_ROOT, isMain, pretty, runCli } from "./api-client.ts";
import { accountCommand, ACCOUNT_USAGE } from "./buyer-account-cli.ts";

const USAGE = `cn2 buyer CLI (prepaid credit, no account)

  npm run buyer -- keygen [--alg Ed25519|P-256] [--force]   make a buyer key (.buyer-key.json)
  npm run buyer -- topup <usd> [--card]                      add credit: the dev faucet locally,
                                                              or a Stripe Checkout link with --card
  npm run buyer -- balance [--json]                          balance, daily budget, recent history
  npm run buyer -- budget <usd|none>                         cap what this key spends per UTC day
  npm run buyer -- call <path> [json]                        a paid request: POST the JSON, else GET

Optional buyer account (buying never needs one):
${ACCOUNT_USAGE}

Options: --url <cn2> (default $CN2_URL or ${DEFAULT_BASE_URL}), --key <file> (default $CN2_BUYER_KEY or .buyer-key.json)`;

export const DEFAULT_KEY_PATH = join(REPO_ROOT, ".buyer-key.json");

async function readKey(path: string): Promise<BuyerKey> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new CliError(`no buyer key at ${path}: run \`npm run buyer -- keygen\` first`);
    throw err;
  }
  return loadBuyerKey(text);
}

const usd = (micros: number) => `$${microsToUsd(micros)}`;

export async function main(argv: string[], out: (line: string) => void = (l) => process.stdout.write(l + "\n")): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: "string" },
      key: { type: "string" },
      alg: { type: "string", default: "Ed25519" },
      force: { type: "boolean", default: false },
      card: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      // account commands
      email: { type: "string" },
      token: { type: "boolean", default: false },
      days: { type: "string" },
      "buyer-id": { type: "string" },
      yes: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const [command, ...args] = positionals;
  const baseUrl = (values.url ?? process.env.CN2_URL ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
  const keyPath = values.key ?? process.env.CN2_BUYER_KEY ?? DEFAULT_KEY_PATH;
  const opts = { baseUrl };

  try {
    switch (command) {
      case "keygen": {
        if (values.alg !== "Ed25519" && values.alg !== "P-256") throw new CliError("--alg must be Ed25519 or P-256");
        const key = await generateBuyerKey(values.alg as KeyAlg);
        try {
          await writeFile(keyPath, serializeBuyerKey(key) + "\n", { mode: 0o600, flag: values.force ? "w" : "wx" });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "EEXIST") throw new CliError(`${keyPath} exists; --force replaces it (and abandons its credit)`);
          throw err;
        }
        out(`buyer key written to ${keyPath} (${key.alg}); keep it secret, it spends your credit`);
        out(`buyer id: ${key.buyerId}`);
        return;
      }
      case "topup": {
        if (!args[0]) throw new CliError("usage: topup <usd> [--card]");
        const amountMicros = usdToMicrosOrExit(args[0]);
        const key = await readKey(keyPath);
        if (!values.card) {
          try {
            const r = await requestFaucet({ ...opts, buyerId: key.buyerId, amountMicros });
            out(`added ${usd(r.creditedMicros)} from the dev faucet; balance ${usd(r.balanceMicros)}`);
            return;
          } catch (err) {
            if (!(err instanceof Cn2BuyerError && err.code === "not_found")) throw err;
            out("no dev faucet here; opening a card top-up instead");
          }
        }
        const session = await startTopUp({ ...opts, buyerId: key.buyerId, amountMicros });
        out(`pay ${usd(session.amountMicros)} here; your credit arrives when Stripe confirms:`);
        out(session.url);
        return;
      }
      case "balance": {
        const view = await getBalance({ ...opts, privateKey: await readKey(keyPath) });
        if (values.json) return out(pretty(view));
        out(`balance      ${usd(view.balanceMicros)}`);
        // Credit a busy buyer's tab holds: what it does not spend comes back within seconds.
        if (view.heldMicros > 0) out(`held in tabs ${usd(view.heldMicros)} (what is not spent comes back when they close)`);
        out(`daily budget ${view.dailyCapMicros === null ? "none" : usd(view.dailyCapMicros)} (spent today ${usd(view.spentTodayMicros)})`);
        for (const h of view.history.slice(0, 10)) out(`  ${new Date(h.at).toISOString()}  ${h.kind.padEnd(7)} ${usd(h.amountMicros).padStart(14)}  -> ${usd(h.balanceMicros)}`);
        return;
      }
      case "budget": {
        if (!args[0]) throw new CliError("usage: budget <usd|none>");
        const cap = args[0] === "none" ? null : usdToMicrosOrExit(args[0]);
        const r = await setDailyBudget({ ...opts, privateKey: await readKey(keyPath) }, cap);
        out(`daily budget ${r.dailyCapMicros === null ? "removed" : `set to ${usd(r.dailyCapMicros)}`}`);
        return;
      }
      case "call": {
        const [path, body] = args;
        if (!path?.startsWith("/")) throw new CliError("usage: call </provider/path> [json]");
        if (body !== undefined) {
          try {
            JSON.parse(body);
          } catch {
            throw new CliError("the request body must be JSON");
          }
        }
        const payingFetch = createPayingFetch({ baseUrl, privateKey: await readKey(keyPath) });
        const res = await payingFetch(baseUrl + path, body === undefined
          ? { method: "GET" }
          : { method: "POST", headers: { "content-type": "application/json" }, body });
        process.stderr.write(`HTTP ${res.status}${res.headers.get("cn2-request-id") ? ` (request ${res.headers.get("cn2-request-id")})` : ""}\n`);
        const receipt = res.headers.get("payment-receipt");
        if (receipt) {
          const r = Receipt.deserialize(receipt) as Record<string, unknown>;
          process.stderr.write(`paid ${usd(Number(r.amountMicros))} by ${String(r.method)}${r.refunded ? " (refunded)" : ""}\n`);
        }
        if (res.body) for await (const chunk of res.body) process.stdout.write(chunk);
        process.stdout.write("\n");
        if (!res.ok) process.exitCode = 1;
        return;
      }
      case "account":
        return await accountCommand(args, {
          baseUrl, out, readKey: () => readKey(keyPath), json: values.json, email: values.email, token: values.token,
          days: values.days, buyerId: values["buyer-id"], yes: values.yes,
        });
      case undefined:
      case "help":
        return out(USAGE);
      default:
        if (values.help) return out(USAGE);
        throw new CliError(`unknown command "${command}"\n${USAGE}`);
    }
  } catch (err) {
    if (err instanceof Cn2BuyerError) throw new CliError(`${err.code}: ${err.message}`);
    if (err instanceof TypeError && /fetch failed/.test(err.message)) throw new CliError(`cannot reach cn2 at ${baseUrl}; is \`npm start\` running?`);
    throw err;
  }
}

function usdToMicrosOrExit(text: string): number {
  try {
    return usdToMicros(text);
  } catch {
    throw new CliError(`"${text}" is not a dollar amount like 5 or 2.50`);
  }
}

if (isMain(import.meta.url)) runCli((argv) => main(argv));
