// `npm run buyer -- account …`: the optional buyer account (B4) from the buyer CLI. Buying
// never needs it; it gathers the spend of the buyer keys you attach, tops them up by card,
// and deletes everything it holds when asked.
//
//   account login [--email you@example.com] [--token]   sign in (dev sign-in locally; --token pastes a Supabase session token)
//   account logout | show | attach | detach [<buyer id>] | history [--days N] | topup <usd> [--buyer-id <id>] | delete --yes
//
// The session token lives in .cn2-buyer-session.json (git-ignored, mode 0600; per CN2_URL;
// CN2_BUYER_SESSION_FILE moves it, CN2_BUYER_TOKEN overrides it). `attach` signs the proof
// with the buyer key file: the key itself never leaves this machine.
import { chmodSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  ACCOUNT_TOPUP_PATH, ATTACH_PATH, BUYER_ACCOUNT_PATH, HISTORY_PATH, newAttachProof,
  type BuyerAccountDeleted, type BuyerAccountHistory, type BuyerAccountView,
} from "../schema/buyer-account.ts";
import { accountRequestHeaders } from "../core/credit-method.ts";
import { microsToUsd, usdToMicros, type BuyerKey } from "../buyer/index.ts";
import { CliError, REPO_ROOT, pretty, tokenExpiry } from "./api-client.ts";

export const BUYER_SESSION_PATH = process.env.CN2_BUYER_SESSION_FILE || join(REPO_ROOT, ".cn2-buyer-session.json");
/** The account `account login` signs in as locally, unless --email says otherwise. */
export const DEFAULT_BUYER_EMAIL = "buyer@cn2.example";

export const ACCOUNT_USAGE = `  npm run buyer -- account login [--email <address>] [--token]   sign in to the optional buyer account
  npm run buyer -- account show | history [--days N] [--json]      the account, and its ids' spend (90 days)
  npm run buyer -- account attach                                   attach this buyer key (signed with it)
  npm run buyer -- account detach [<buyer id>]                      detach (default: this key's id)
  npm run buyer -- account topup <usd> [--buyer-id <id>]            a Stripe Checkout link for an attached id
  npm run buyer -- account delete --yes                             delete the account and its ids' spend history
  npm run buyer -- account logout`;

interface BuyerSession {
  token: string;
  accountId: string;
  email: string;
  /** Seconds since the epoch. */
  expiresAt: number;
}

type SessionFile = { sessions: Record<string, BuyerSession> };

function readSessions(): SessionFile {
  try {
    const parsed = JSON.parse(readFileSync(BUYER_SESSION_PATH, "utf8")) as SessionFile;
    return parsed && typeof parsed.sessions === "object" ? parsed : { sessions: {} };
  } catch {
    return { sessions: {} };
  }
}

function saveSession(baseUrl: string, session: BuyerSession | null): void {
  const file = readSessions();
  if (session) file.sessions[baseUrl] = session;
  else delete file.sessions[baseUrl];
  if (Object.keys(file.sessions).length === 0) return void rmSync(BUYER_SESSION_PATH, { force: true });
  writeFileSync(BUYER_SESSION_PATH, JSON.stringify(file, null, 2) + "\n", { mode: 0o600 });
  chmodSync(BUYER_SESSION_PATH, 0o600);
}

export interface AccountOptions {
  baseUrl: string;
  /** The buyer key file, read when a command needs it. */
  readKey: () => Promise<BuyerKey>;
  out: (line: string) => void;
  json: boolean;
  email?: string;
  token: boolean;
  days?: string;
  buyerId?: string;
  yes: boolean;
}

/** One call to the account API; its error code and message as a CliError. The token is never printed. */
async function request<T>(baseUrl: string, token: string | null, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<T> {
  const h: Record<string, string> = { accept: "application/json", ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  if (body !== undefined) h["content-type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(baseUrl + path, { method, headers: h, body });
  } catch {
    throw new CliError(`cannot reach cn2 at ${baseUrl}; is \`npm start\` running?`);
  }
  const data = (await res.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
  if (!res.ok) {
    const code = data?.error?.code ?? `http_${res.status}`;
    const hint = res.status === 401 ? " (sign in again: npm run buyer -- account login)" : "";
    throw new CliError(`${code}: ${data?.error?.message ?? `HTTP ${res.status}`}${hint}`);
  }
  return data as T;
}

function sessionToken(baseUrl: string): string {
  const token = process.env.CN2_BUYER_TOKEN || readSessions().sessions[baseUrl]?.token;
  if (!token) throw new CliError("not signed in to a buyer account: run `npm run buyer -- account login`");
  return token;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

const usd = (micros: number) => `$${microsToUsd(micros)}`;

export async function accountCommand(args: string[], o: AccountOptions): Promise<void> {
  const [sub, ...rest] = args;
  const { baseUrl, out } = o;
  switch (sub) {
    case "login": {
      let token: string;
      if (o.token) {
        if (process.stdin.isTTY) process.stderr.write("Paste the session token, then press Enter and Ctrl-D:\n");
        token = (await readStdin()).trim();
        if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) throw new CliError("that is not a session token (expected a JWT: three base64url parts)");
        await request(baseUrl, token, "POST", BUYER_ACCOUNT_PATH);
      } else {
        const body = JSON.stringify({ email: o.email ?? DEFAULT_BUYER_EMAIL, account: "buyer" });
        try {
          token = (await request<{ token: string }>(baseUrl, null, "POST", "/auth/dev/sign-in", body, { "cn2-csrf": "1" })).token;
        } catch (err) {
          if (err instanceof CliError && /^(not_found|auth_not_configured):/.test(err.message)) {
            throw new CliError(`${baseUrl} has no dev sign-in: sign in with Supabase, copy the session token, then run \`npm run buyer -- account login --token\` and paste it`);
          }
          throw err;
        }
      }
      const { account } = await request<{ account: BuyerAccountView }>(baseUrl, token, "GET", BUYER_ACCOUNT_PATH);
      saveSession(baseUrl, { token, accountId: account.id, email: account.email, expiresAt: tokenExpiry(token) });
      return out(`signed in as ${account.email} (buyer account ${account.id}); session saved to ${BUYER_SESSION_PATH}`);
    }
    case "logout":
      saveSession(baseUrl, null);
      return out("signed out of the buyer account");
    case "show": {
      const { account } = await request<{ account: BuyerAccountView }>(baseUrl, sessionToken(baseUrl), "GET", BUYER_ACCOUNT_PATH);
      if (o.json) return out(pretty(account));
      out(`buyer account ${account.id} (${account.email}), opened ${account.createdAt}`);
      if (account.buyerIds.length === 0) return out("no buyer ids attached: `npm run buyer -- account attach` attaches this key");
      for (const b of account.buyerIds) out(`  ${b.buyerId}  attached ${b.attachedAt}`);
      return;
    }
    case "attach": {
      const token = sessionToken(baseUrl);
      const key = await o.readKey();
      const { account } = await request<{ account: BuyerAccountView }>(baseUrl, token, "POST", BUYER_ACCOUNT_PATH);
      // The proof: {accountId, nonce} signed with the key, over this exact body and path.
      const body = JSON.stringify(newAttachProof(account.id));
      const signed = await accountRequestHeaders(key, { method: "POST", pathAndQuery: ATTACH_PATH, body });
      const r = await request<{ buyerId: string; attachedAt: string }>(baseUrl, token, "POST", ATTACH_PATH, body, signed);
      return out(`buyer id ${r.buyerId} attached to ${account.email} (since ${r.attachedAt})`);
    }
    case "detach": {
      const buyerId = rest[0] ?? (await o.readKey()).buyerId;
      await request(baseUrl, sessionToken(baseUrl), "DELETE", `${ATTACH_PATH}/${encodeURIComponent(buyerId)}`);
      return out(`buyer id ${buyerId} detached; its credit and anonymous use are unchanged`);
    }
    case "history": {
      const query = o.days === undefined ? "" : `?days=${encodeURIComponent(o.days)}`;
      const h = await request<BuyerAccountHistory>(baseUrl, sessionToken(baseUrl), "GET", HISTORY_PATH + query);
      if (o.json) return out(pretty(h));
      out(`spend since ${h.since} (${h.days} days): ${usd(h.totals.spentMicros)} in ${h.totals.requests} requests, ${usd(h.totals.refundedMicros)} refunded`);
      for (const b of h.buyerIds) {
        out(`${b.buyerId}  balance ${usd(b.balanceMicros)}`);
        for (const d of b.days) out(`  ${d.day}  ${usd(d.spentMicros).padStart(14)} spent  ${usd(d.refundedMicros).padStart(14)} refunded  ${String(d.requests).padStart(6)} requests`);
      }
      return;
    }
    case "topup": {
      if (!rest[0]) throw new CliError("usage: account topup <usd> [--buyer-id <id>]");
      let amountMicros: number;
      try {
        amountMicros = usdToMicros(rest[0]);
      } catch {
        throw new CliError(`"${rest[0]}" is not a dollar amount like 5 or 2.50`);
      }
      const buyerId = o.buyerId ?? (await o.readKey()).buyerId;
      const session = await request<{ url: string; amountMicros: number }>(baseUrl, sessionToken(baseUrl), "POST", ACCOUNT_TOPUP_PATH, JSON.stringify({ buyerId, amountMicros }));
      out(`pay ${usd(session.amountMicros)} for ${buyerId} here; the credit arrives when Stripe confirms:`);
      return out(session.url);
    }
    case "delete": {
      if (!o.yes) throw new CliError("this deletes the buyer account, its attachments and the spend history of its ids (credit stays with the keys): add --yes");
      const r = await request<BuyerAccountDeleted>(baseUrl, sessionToken(baseUrl), "DELETE", BUYER_ACCOUNT_PATH);
      if (r.signInDeleted) saveSession(baseUrl, null);
      return out(`buyer account deleted: ${r.detachedBuyerIds} buyer id(s) detached, ${r.erasedSpendDays} day(s) of spend erased${r.signInDeleted ? ", sign-in deleted" : " (the sign-in stays: it holds a seller account)"}`);
    }
    default:
      throw new CliError(`unknown account command "${sub ?? ""}"\n${ACCOUNT_USAGE}`);
  }
}
