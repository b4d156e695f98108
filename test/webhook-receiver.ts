// A webhook receiver on loopback for the tests (and for trying webhooks with `npm start`):
// it records every delivery it gets, answers as told (fail N times with some status,
// answer slowly, redirect), and verifies each signature the way docs/webhooks.md tells
// receivers to, with node:crypto: an implementation independent of the Worker's.
//
//   POST   /hooks/<name>             a delivery (what the Worker calls)
//   PUT    /__receiver/hooks/<name>  {secret?, failTimes?, failStatus?, delayMs?, redirectTo?}
//   GET    /__receiver/hooks/<name>  {deliveries: [...]}
//   DELETE /__receiver/hooks/<name>  forget the name's config and log
//
//   npx node test/webhook-receiver.ts [--port 8789]   (Node 22; prints each delivery)
import { createHmac, timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";

/**
 * Verify a cn2 webhook (the receiver snippet of docs/webhooks.md): `rawBody` exactly as
 * received, `header` the cn2-signature value. Returns the signed timestamp, or throws.
 */
export function verifyCn2Signature(secret: string, header: string | undefined, rawBody: string, toleranceSeconds = 300, now = Math.floor(Date.now() / 1000)): number {
  let t = "";
  const signatures: string[] = [];
  for (const part of (header ?? "").split(",")) {
    const [key, value = ""] = part.trim().split("=", 2);
    if (key === "t") t = value;
    if (key === "v1") signatures.push(value);
  }
  if (!/^\d+$/.test(t) || signatures.length === 0) throw new Error("malformed cn2-signature header");
  if (Math.abs(now - Number(t)) > toleranceSeconds) throw new Error("timestamp outside tolerance (replay?)");
  const expected = createHmac("sha256", secret).update(`${t}.${rawBody}`).digest();
  const ok = signatures.some((sig) => {
    const given = Buffer.from(sig, "hex");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  if (!ok) throw new Error("signature mismatch");
  return Number(t);
}

export interface ReceivedDelivery {
  name: string;
  eventId: string | null;
  eventType: string | null;
  attempt: number | null;
  signature: string | null;
  contentType: string | null;
  body: string;
  /** ms since epoch, when the request arrived. */
  receivedAt: number;
  /** What the receiver answered. */
  status: number;
  /** Verified with the configured secret; null when no secret was configured. */
  verified: boolean | null;
}

interface HookConfig {
  secret?: string;
  /** Answer failStatus to this many deliveries before answering 200. -1: always fail. */
  failTimes?: number;
  failStatus?: number;
  delayMs?: number;
  /** Answer 302 to this location instead. */
  redirectTo?: string;
}

export interface WebhookReceiver {
  url: string;
  close(): Promise<void>;
}

export async function startWebhookReceiver(opts: { port?: number; host?: string; print?: boolean } = {}): Promise<WebhookReceiver> {
  const configs = new Map<string, HookConfig>();
  const logs = new Map<string, ReceivedDelivery[]>();
  const logOf = (name: string) => {
    let log = logs.get(name);
    if (!log) logs.set(name, (log = []));
    return log;
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      void handle(req, res, Buffer.concat(chunks).toString("utf8")).catch(() => {
        if (!res.headersSent) res.writeHead(500).end();
      });
    });
  });

  const send = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(body));
  };

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, raw: string) {
    const url = new URL(req.url ?? "/", "http://receiver");
    const hook = /^\/hooks\/([A-Za-z0-9_-]{1,64})$/.exec(url.pathname);
    if (hook && req.method === "POST") {
      const name = hook[1]!;
      const config = configs.get(name) ?? {};
      const header = (h: string) => {
        const value = req.headers[h];
        return typeof value === "string" ? value : null;
      };
      let verified: boolean | null = null;
      if (config.secret) {
        try {
          verifyCn2Signature(config.secret, header("cn2-signature") ?? undefined, raw);
          verified = true;
        } catch {
          verified = false;
        }
      }
      const failing = config.failTimes !== undefined && config.failTimes !== 0;
      if (failing && config.failTimes! > 0) config.failTimes! -= 1;
      const status = config.redirectTo ? 302 : failing ? (config.failStatus ?? 500) : 200;
      const entry: ReceivedDelivery = {
        name,
        eventId: header("cn2-event-id"),
        eventType: header("cn2-event-type"),
        attempt: header("cn2-delivery-attempt") === null ? null : Number(header("cn2-delivery-attempt")),
        signature: header("cn2-signature"),
        contentType: header("content-type"),
        body: raw,
        receivedAt: Date.now(),
        status,
        verified,
      };
      logOf(name).push(entry);
      if (opts.print) console.log(`${new Date(entry.receivedAt).toISOString()} ${name} ${entry.eventType} ${entry.eventId} attempt ${entry.attempt} -> ${status}${verified === null ? "" : verified ? " (signature ok)" : " (SIGNATURE BAD)"}`);
      if (config.delayMs) await new Promise((r) => setTimeout(r, config.delayMs));
      if (res.destroyed) return;
      if (config.redirectTo) return send(res, 302, { redirect: true }, { location: config.redirectTo });
      return send(res, status, { received: status < 300 });
    }
    const admin = /^\/__receiver\/hooks\/([A-Za-z0-9_-]{1,64})$/.exec(url.pathname);
    if (admin) {
      const name = admin[1]!;
      if (req.method === "PUT") {
        configs.set(name, JSON.parse(raw || "{}") as HookConfig);
        return send(res, 200, { ok: true });
      }
      if (req.method === "GET") return send(res, 200, { deliveries: logs.get(name) ?? [] });
      if (req.method === "DELETE") {
        configs.delete(name);
        logs.delete(name);
        return send(res, 200, { ok: true });
      }
    }
    send(res, 404, { error: "not_found" });
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${opts.host ?? "127.0.0.1"}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const i = process.argv.indexOf("--port");
  const port = i > 0 ? Number(process.argv[i + 1]) : 8789;
  startWebhookReceiver({ port, print: true }).then((r) => console.log(`webhook receiver on ${r.url}/hooks/<name> (register it with DEV_WEBHOOKS_ALLOW_HTTP=1)`));
}
