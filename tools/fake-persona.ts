// A fake Persona on loopback: the local default for KYC (`npm start`) and the tests' Persona.
// It answers the two REST calls cn2 makes (create an inquiry; generate its one-time link),
// checking the API key, version header and template like Persona would. Opening the link
// plays the end user: the inquiry is approved and, when a webhook URL is configured, the
// signed `inquiry.approved` event is posted to it (Persona-Signature: t=..,v1=HMAC).
import { createHmac, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface FakePersonaOptions {
  apiKey: string;
  templateId: string;
  webhookSecret: string;
  /** Where to post events when a link is opened (npm start: the Worker's /webhooks/persona). */
  webhookUrl?: string;
  port?: number;
  host?: string;
}

export interface FakePersona {
  url: string;
  close(): Promise<void>;
}

interface Inquiry {
  id: string;
  referenceId: string | null;
  status: string;
  code: string | null;
}

/** Persona's signature header for `body`, as its webhooks carry it. */
export function signPersonaEvent(secret: string, body: string, timestamp = Math.floor(Date.now() / 1000)): string {
  return `t=${timestamp},v1=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;
}

/** An event body in Persona's JSON:API shape. */
export function personaEvent(inquiry: { id: string; referenceId: string | null; status: string }): string {
  return JSON.stringify({
    data: {
      type: "event",
      id: `evt_${randomBytes(12).toString("hex")}`,
      attributes: {
        name: `inquiry.${inquiry.status}`,
        payload: { data: { type: "inquiry", id: inquiry.id, attributes: { status: inquiry.status, "reference-id": inquiry.referenceId } } },
        "created-at": new Date().toISOString(),
      },
    },
  });
}

export async function startFakePersona(options: FakePersonaOptions): Promise<FakePersona> {
  const inquiries = new Map<string, Inquiry>();
  const log: { method: string; path: string; authorized: boolean }[] = [];
  let baseUrl = "";

  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (body += chunk));
    req.on("end", () => {
      void handle(req, body).then(
        ({ status, json, html }) => {
          res.writeHead(status, { "content-type": html ? "text/html; charset=utf-8" : "application/json" });
          res.end(html ?? JSON.stringify(json));
        },
        () => {
          res.writeHead(500, { "content-type": "application/json" });
          res.end(JSON.stringify({ errors: [{ title: "fake persona failed" }] }));
        },
      );
    });
  });

  async function handle(req: http.IncomingMessage, body: string): Promise<{ status: number; json?: unknown; html?: string }> {
    const url = new URL(req.url ?? "/", "http://fake");
    const authorized = req.headers.authorization === `Bearer ${options.apiKey}` && typeof req.headers["persona-version"] === "string";
    log.push({ method: req.method ?? "", path: url.pathname, authorized });
    if (url.pathname === "/__fake/log") return { status: 200, json: { calls: log, inquiries: [...inquiries.values()] } };

    if (req.method === "POST" && url.pathname === "/api/v1/inquiries") {
      if (!authorized) return { status: 401, json: { errors: [{ title: "Unauthorized" }] } };
      const attrs = (JSON.parse(body || "{}") as { data?: { attributes?: Record<string, string> } }).data?.attributes ?? {};
      if (attrs["inquiry-template-id"] !== options.templateId) return { status: 422, json: { errors: [{ title: "template not found" }] } };
      const inquiry: Inquiry = { id: `inq_${randomBytes(12).toString("hex")}`, referenceId: attrs["reference-id"] ?? null, status: "created", code: null };
      inquiries.set(inquiry.id, inquiry);
      return { status: 201, json: { data: { type: "inquiry", id: inquiry.id, attributes: { status: inquiry.status, "reference-id": inquiry.referenceId } } } };
    }
    const otl = url.pathname.match(/^\/api\/v1\/inquiries\/(inq_[a-f0-9]+)\/generate-one-time-link$/);
    if (req.method === "POST" && otl) {
      if (!authorized) return { status: 401, json: { errors: [{ title: "Unauthorized" }] } };
      const inquiry = inquiries.get(otl[1]!);
      if (!inquiry) return { status: 404, json: { errors: [{ title: "not found" }] } };
      inquiry.code = randomBytes(8).toString("hex");
      return { status: 200, json: { data: { type: "inquiry", id: inquiry.id }, meta: { "one-time-link": `${baseUrl}/verify?code=${inquiry.code}` } } };
    }
    if (req.method === "GET" && url.pathname === "/verify") {
      const inquiry = [...inquiries.values()].find((i) => i.code !== null && i.code === url.searchParams.get("code"));
      if (!inquiry) return { status: 404, html: "<p>This link is invalid or was used already.</p>" };
      inquiry.code = null;
      inquiry.status = "approved";
      let delivered = "no webhook URL configured";
      if (options.webhookUrl) {
        const event = personaEvent(inquiry);
        const sent = await fetch(options.webhookUrl, {
          method: "POST",
          headers: { "content-type": "application/json", "persona-signature": signPersonaEvent(options.webhookSecret, event) },
          body: event,
        }).catch(() => null);
        delivered = sent ? `webhook answered ${sent.status}` : "webhook unreachable";
      }
      return { status: 200, html: `<!doctype html><title>Fake Persona</title><p>Identity verified (fake Persona, local development): inquiry approved; ${delivered}.</p>` };
    }
    return { status: 404, json: { errors: [{ title: "not found" }] } };
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve());
  });
  baseUrl = `http://${options.host ?? "127.0.0.1"}:${(server.address() as AddressInfo).port}`;
  return {
    url: baseUrl,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
