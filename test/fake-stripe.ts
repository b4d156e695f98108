// A fake Stripe API on loopback for the payments and payouts suites: the endpoints cn2
// calls through the real `stripe` client (Checkout Sessions, Connect accounts, account
// links, transfers), in Stripe's wire format: form-encoded bodies with bracketed keys,
// bearer auth, Idempotency-Key replay (same key -> the same response, `Idempotent-Replayed`),
// Stripe's error envelope. Test-only controls under /__fake make the events Stripe would
// send, signed with the real Stripe-Signature scheme (t=<unix>,v1=<HMAC-SHA256 hex>).
import { createHmac, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

/** Test-only Stripe credentials: the fake checks them, vitest.config.ts binds them. */
export const TEST_STRIPE = { secretKey: "sk_test_cn2_fake_0123456789", webhookSecret: "whsec_cn2_test_0123456789abcdef" } as const;

export interface FakeStripe {
  url: string;
  close(): Promise<void>;
}

interface Session {
  id: string;
  object: "checkout.session";
  url: string;
  mode: string;
  payment_status: "unpaid" | "paid";
  status: "open" | "complete";
  currency: string;
  amount_subtotal: number;
  amount_total: number;
  client_reference_id: string | null;
  metadata: Record<string, string>;
  success_url: string;
  cancel_url: string;
}

interface Account {
  id: string;
  object: "account";
  country: string;
  email: string | null;
  controller: Record<string, unknown>;
  capabilities: Record<string, string>;
  charges_enabled: boolean;
  payouts_enabled: boolean;
  details_submitted: boolean;
  metadata: Record<string, string>;
}

interface Transfer {
  id: string;
  object: "transfer";
  amount: number;
  amount_reversed: number;
  currency: string;
  destination: string;
  description: string | null;
  metadata: Record<string, string>;
  reversed: boolean;
  created: number;
}

interface LogEntry {
  method: string;
  path: string;
  authorized: boolean;
  idempotencyKey: string | null;
  stripeVersion: string | null;
  form: Record<string, string>;
}

const id = (prefix: string, n = 16) => `${prefix}${randomBytes(n).toString("hex").slice(0, n)}`;

/** The bracketed sub-keys of a form field: sub(form, "metadata") -> {cn2_buyer_id: ...}. */
function sub(form: Record<string, string>, name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(form)) {
    const m = new RegExp(`^${name.replace(/[[\]]/g, "\\$&")}\\[([^\\]]+)\\]$`).exec(k);
    if (m) out[m[1]!] = v;
  }
  return out;
}

export async function startFakeStripe(opts: { secretKey: string; webhookSecret: string; port?: number }): Promise<FakeStripe> {
  const sessions = new Map<string, Session>();
  const accounts = new Map<string, Account>();
  const transfers = new Map<string, Transfer>();
  /** Idempotency-Key -> [status, body] of the first response. */
  const idempotent = new Map<string, [number, string]>();
  /** destination -> Stripe error code: the next transfers there fail with it. */
  const failTransfers = new Map<string, string>();
  const log: LogEntry[] = [];
  let base = "";

  const send = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "application/json", "request-id": id("req_", 14), ...headers });
    res.end(typeof body === "string" ? body : JSON.stringify(body));
  };
  const stripeError = (status: number, type: string, message: string, code?: string): [number, unknown] => [status, { error: { type, message, ...(code ? { code } : {}) } }];

  /** A signed event, as Stripe would POST it to the webhook endpoint. */
  const event = (type: string, object: unknown, account?: string) => {
    const ev = { id: id("evt_", 24), object: "event", api_version: "2026-10-28.endive", type, created: Math.floor(Date.now() / 1000), livemode: false, ...(account ? { account } : {}), data: { object } };
    const payload = JSON.stringify(ev);
    const t = Math.floor(Date.now() / 1000);
    const signature = `t=${t},v1=${createHmac("sha256", opts.webhookSecret).update(`${t}.${payload}`).digest("hex")}`;
    return { event: ev, payload, signature };
  };

  /** The Stripe API proper: [status, body]. */
  function api(method: string, path: string, form: Record<string, string>): [number, unknown] {
    if (path === "/v1/checkout/sessions" && method === "POST") {
      const unit = Number(form["line_items[0][price_data][unit_amount]"]);
      const quantity = Number(form["line_items[0][quantity]"] ?? "1");
      if (form.mode !== "payment" || !Number.isInteger(unit) || unit < 50 || !form.success_url) {
        return stripeError(400, "invalid_request_error", "Invalid checkout session parameters", "parameter_invalid_integer");
      }
      const sid = `cs_test_${randomBytes(16).toString("hex")}`;
      const session: Session = {
        id: sid, object: "checkout.session", url: `${base}/pay/${sid}`, mode: "payment", payment_status: "unpaid", status: "open",
        currency: form["line_items[0][price_data][currency]"] ?? "usd", amount_subtotal: unit * quantity, amount_total: unit * quantity,
        client_reference_id: form.client_reference_id ?? null, metadata: sub(form, "metadata"), success_url: form.success_url, cancel_url: form.cancel_url ?? "",
      };
      sessions.set(sid, session);
      return [200, session];
    }
    const getSession = /^\/v1\/checkout\/sessions\/([^/]+)$/.exec(path);
    if (getSession && method === "GET") {
      const s = sessions.get(getSession[1]!);
      return s ? [200, s] : stripeError(404, "invalid_request_error", "No such checkout session", "resource_missing");
    }
    if (path === "/v1/accounts" && method === "POST") {
      // Controller properties are the current way to make an account; `type` is legacy.
      const controller = {
        fees: { payer: form["controller[fees][payer]"] },
        losses: { payments: form["controller[losses][payments]"] },
        requirement_collection: form["controller[requirement_collection]"],
        stripe_dashboard: { type: form["controller[stripe_dashboard][type]"] },
      };
      if (form.type || !controller.fees.payer || !controller.stripe_dashboard.type) {
        return stripeError(400, "invalid_request_error", "Provide controller properties (fees, losses, requirement_collection, stripe_dashboard)", "parameter_missing");
      }
      const account: Account = {
        id: `acct_${randomBytes(8).toString("hex")}`, object: "account", country: form.country ?? "US", email: form.email ?? null,
        controller: { ...controller, type: "application", is_controller: true },
        capabilities: Object.fromEntries(Object.keys(sub(form, "capabilities")).map((c) => [c.replace(/\]\[requested$/, ""), "inactive"])),
        charges_enabled: false, payouts_enabled: false, details_submitted: false, metadata: sub(form, "metadata"),
      };
      accounts.set(account.id, account);
      return [200, account];
    }
    const getAccount = /^\/v1\/accounts\/(acct_[A-Za-z0-9]+)$/.exec(path);
    if (getAccount && method === "GET") {
      const a = accounts.get(getAccount[1]!);
      return a ? [200, a] : stripeError(404, "invalid_request_error", "No such account", "resource_missing");
    }
    if (path === "/v1/account_links" && method === "POST") {
      if (!accounts.has(form.account ?? "")) return stripeError(400, "invalid_request_error", "No such account", "resource_missing");
      if (form.type !== "account_onboarding" || !form.refresh_url || !form.return_url) return stripeError(400, "invalid_request_error", "Invalid account link parameters", "parameter_missing");
      const created = Math.floor(Date.now() / 1000);
      return [200, { object: "account_link", created, expires_at: created + 300, url: `${base}/connect/onboarding/${form.account}/${randomBytes(8).toString("hex")}` }];
    }
    if (path === "/v1/transfers" && method === "POST") {
      const amount = Number(form.amount);
      const destination = form.destination ?? "";
      if (!Number.isInteger(amount) || amount < 1) return stripeError(400, "invalid_request_error", "Invalid integer: amount", "parameter_invalid_integer");
      if (form.currency !== "usd") return stripeError(400, "invalid_request_error", "Invalid currency", "parameter_invalid_empty");
      const account = accounts.get(destination);
      if (!account) return stripeError(400, "invalid_request_error", "No such destination", "resource_missing");
      if (!account.payouts_enabled) return stripeError(400, "invalid_request_error", "The destination account needs to have payouts enabled", "account_invalid");
      const failure = failTransfers.get(destination);
      if (failure) return stripeError(400, "invalid_request_error", "You have insufficient available funds in your Stripe account", failure);
      const transfer: Transfer = {
        id: id("tr_", 24), object: "transfer", amount, amount_reversed: 0, currency: "usd", destination, description: form.description ?? null,
        metadata: sub(form, "metadata"), reversed: false, created: Math.floor(Date.now() / 1000),
      };
      transfers.set(transfer.id, transfer);
      return [200, transfer];
    }
    const getTransfer = /^\/v1\/transfers\/(tr_[A-Za-z0-9]+)$/.exec(path);
    if (getTransfer && method === "GET") {
      const t = transfers.get(getTransfer[1]!);
      return t ? [200, t] : stripeError(404, "invalid_request_error", "No such transfer", "resource_missing");
    }
    return stripeError(404, "invalid_request_error", `Unrecognized request URL (${method}: ${path})`);
  }

  const server = http.createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (raw += c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://fake");
      const path = url.pathname;
      const method = req.method ?? "GET";
      const authorized = req.headers.authorization === `Bearer ${opts.secretKey}`;
      const form = method === "GET" ? Object.fromEntries(url.searchParams) : Object.fromEntries(new URLSearchParams(raw));
      const idempotencyKey = (req.headers["idempotency-key"] as string | undefined) ?? null;

      // ---- test controls ------------------------------------------------------------
      if (path.startsWith("/__fake/")) {
        const body = raw ? (JSON.parse(raw) as Record<string, unknown>) : {};
        if (path === "/__fake/log") return send(res, 200, { requests: log });
        if (path === "/__fake/reset" && method === "POST") {
          log.length = 0;
          return send(res, 200, { ok: true });
        }
        if (path === "/__fake/transfers") return send(res, 200, { transfers: [...transfers.values()] });
        const complete = /^\/__fake\/sessions\/([^/]+)\/complete$/.exec(path);
        if (complete && method === "POST") {
          const s = sessions.get(complete[1]!);
          if (!s) return send(res, ...stripeError(404, "invalid_request_error", "No such checkout session"));
          s.payment_status = "paid";
          s.status = "complete";
          return send(res, 200, event("checkout.session.completed", s));
        }
        // The seller finished onboarding: payouts enabled, and the account.updated Stripe sends.
        const onboard = /^\/__fake\/accounts\/([^/]+)\/onboard$/.exec(path);
        if (onboard && method === "POST") {
          const a = accounts.get(onboard[1]!);
          if (!a) return send(res, ...stripeError(404, "invalid_request_error", "No such account"));
          a.details_submitted = true;
          a.charges_enabled = a.payouts_enabled = body.payoutsEnabled !== false;
          return send(res, 200, event("account.updated", a, a.id));
        }
        // Make the next transfers to an account fail with a Stripe error code (or stop failing).
        const fail = /^\/__fake\/accounts\/([^/]+)\/fail-transfers$/.exec(path);
        if (fail && method === "POST") {
          if (typeof body.code === "string") failTransfers.set(fail[1]!, body.code);
          else failTransfers.delete(fail[1]!);
          return send(res, 200, { ok: true });
        }
        // An event about a transfer (transfer.created, transfer.reversed).
        const tev = /^\/__fake\/transfers\/([^/]+)\/event$/.exec(path);
        if (tev && method === "POST") {
          const t = transfers.get(tev[1]!);
          if (!t) return send(res, ...stripeError(404, "invalid_request_error", "No such transfer"));
          if (body.type === "transfer.reversed") {
            t.reversed = true;
            t.amount_reversed = t.amount;
          }
          return send(res, 200, event(String(body.type), t));
        }
        return send(res, ...stripeError(404, "invalid_request_error", "no such fake control"));
      }

      // ---- the Stripe API -------------------------------------------------------------
      log.push({ method, path, authorized, idempotencyKey, stripeVersion: (req.headers["stripe-version"] as string | undefined) ?? null, form });
      if (!authorized) return send(res, ...stripeError(401, "invalid_request_error", "Invalid API Key provided"));
      if (method === "POST" && idempotencyKey) {
        const seen = idempotent.get(`${path} ${idempotencyKey}`);
        if (seen) return send(res, seen[0], seen[1], { "idempotent-replayed": "true" });
      }
      const [status, body] = api(method, path, form);
      const text = JSON.stringify(body);
      if (method === "POST" && idempotencyKey) idempotent.set(`${path} ${idempotencyKey}`, [status, text]);
      return send(res, status, text);
    });
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: base,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
