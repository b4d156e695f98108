// A fake Stripe API on loopback for the payments suites: the few endpoints cn2 calls,
// with Stripe's form encoding, bearer auth and Idempotency-Key behaviour, plus test-only
// endpoints to complete a Checkout Session and get the signed webhook Stripe would send.
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

interface LogEntry {
  method: string;
  path: string;
  authorized: boolean;
  idempotencyKey: string | null;
  form: Record<string, string>;
}

export async function startFakeStripe(opts: { secretKey: string; webhookSecret: string; port?: number }): Promise<FakeStripe> {
  const sessions = new Map<string, Session>();
  const idempotent = new Map<string, string>();
  const log: LogEntry[] = [];
  let base = "";

  const send = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(body));
  };
  const stripeError = (res: http.ServerResponse, status: number, type: string, message: string) => send(res, status, { error: { type, message } });

  const server = http.createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (raw += c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://fake");
      const path = url.pathname;
      const authorized = req.headers.authorization === `Bearer ${opts.secretKey}`;
      const form = req.headers["content-type"]?.startsWith("application/x-www-form-urlencoded") ? Object.fromEntries(new URLSearchParams(raw)) : {};
      const idempotencyKey = (req.headers["idempotency-key"] as string | undefined) ?? null;

      // ---- test controls ------------------------------------------------------------
      if (path === "/__fake/log") return send(res, 200, { requests: log });
      if (path === "/__fake/reset" && req.method === "POST") {
        log.length = 0;
        return send(res, 200, { ok: true });
      }
      const complete = /^\/__fake\/sessions\/([^/]+)\/complete$/.exec(path);
      if (complete && req.method === "POST") {
        const s = sessions.get(complete[1]!);
        if (!s) return stripeError(res, 404, "invalid_request_error", "No such checkout session");
        s.payment_status = "paid";
        s.status = "complete";
        const event = { id: `evt_${randomBytes(12).toString("hex")}`, object: "event", type: "checkout.session.completed", created: Math.floor(Date.now() / 1000), data: { object: s } };
        const payload = JSON.stringify(event);
        const t = Math.floor(Date.now() / 1000);
        const signature = `t=${t},v1=${createHmac("sha256", opts.webhookSecret).update(`${t}.${payload}`).digest("hex")}`;
        return send(res, 200, { event, payload, signature });
      }

      // ---- the Stripe API -------------------------------------------------------------
      log.push({ method: req.method ?? "", path, authorized, idempotencyKey, form });
      if (!authorized) return stripeError(res, 401, "invalid_request_error", "Invalid API Key provided");
      if (path === "/v1/checkout/sessions" && req.method === "POST") {
        if (idempotencyKey && idempotent.has(idempotencyKey)) {
          return send(res, 200, JSON.parse(idempotent.get(idempotencyKey)!), { "idempotent-replayed": "true" });
        }
        const unit = Number(form["line_items[0][price_data][unit_amount]"]);
        const quantity = Number(form["line_items[0][quantity]"] ?? "1");
        if (form.mode !== "payment" || !Number.isInteger(unit) || unit < 50 || !form.success_url) {
          return stripeError(res, 400, "invalid_request_error", "Invalid checkout session parameters");
        }
        const metadata: Record<string, string> = {};
        for (const [k, v] of Object.entries(form)) {
          const m = /^metadata\[(.+)\]$/.exec(k);
          if (m) metadata[m[1]!] = v;
        }
        const id = `cs_test_${randomBytes(16).toString("hex")}`;
        const session: Session = {
          id, object: "checkout.session", url: `${base}/pay/${id}`, mode: "payment", payment_status: "unpaid", status: "open",
          currency: form["line_items[0][price_data][currency]"] ?? "usd", amount_subtotal: unit * quantity, amount_total: unit * quantity,
          client_reference_id: form.client_reference_id ?? null, metadata, success_url: form.success_url, cancel_url: form.cancel_url ?? "",
        };
        sessions.set(id, session);
        if (idempotencyKey) idempotent.set(idempotencyKey, JSON.stringify(session));
        return send(res, 200, session);
      }
      const get = /^\/v1\/checkout\/sessions\/([^/]+)$/.exec(path);
      if (get && req.method === "GET") {
        const s = sessions.get(get[1]!);
        return s ? send(res, 200, s) : stripeError(res, 404, "invalid_request_error", "No such checkout session");
      }
      return stripeError(res, 404, "invalid_request_error", `Unrecognized request URL (${req.method}: ${path})`);
    });
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: base,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
