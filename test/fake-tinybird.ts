// A fake Tinybird Events API on loopback, for the analytics sink's tests (and for trying the
// sink with `npm start`: TINYBIRD_TOKEN + TINYBIRD_API_BASE in .dev.vars). It speaks the
// wire format worker/analytics/tinybird.ts sends:
//
//   POST /v0/events?name=<datasource>[&wait=true]   Authorization: Bearer <token>, NDJSON body
//     -> 200 (wait=true) or 202 {"successful_rows": N, "quarantined_rows": M}
//     -> 403 {"error": ...} for a wrong token, 400 for an empty body or no name
//
// and it can be told to misbehave, to prove a slow or failing sink never touches a request:
//
//   PUT    /__fake/mode {"mode": "ok" | "fail" | "hang", "status"?: 503}
//            fail: answer `status` (default 503) and ingest nothing;
//            hang: read the body, never answer, ingest nothing (when the mode changes, a
//            batch still held is answered 503, still not ingested)
//   GET    /__fake/state                 {mode, hanging, attempts}
//   GET    /__fake/attempts              [{at, mode, status, abandoned, requestIds}] every POST,
//                                        answered or not (abandoned: the client timed out on it)
//   GET    /__fake/rows?name=<datasource> [row, ...] every ingested row, as parsed
//   DELETE /__fake                       back to ok, forget rows and attempts
//
//   npx node test/fake-tinybird.ts [--port 8790] [--token t]   (Node 22; prints each batch)
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";

export type FakeMode = "ok" | "fail" | "hang";

export interface FakeAttempt {
  at: number;
  mode: FakeMode;
  /** What was answered; null while (or because) it hung. */
  status: number | null;
  /** The client gave up on a hanging batch (closed the connection before any answer: its timeout). */
  abandoned: boolean;
  requestIds: string[];
}

export interface FakeTinybird {
  url: string;
  close(): Promise<void>;
}

export const TEST_TINYBIRD = { token: "p.test-tinybird-append-token" };

/** The columns of the cn2_requests data source (docs/tinybird/cn2_requests.datasource). */
const COLUMNS: Record<string, (v: unknown) => boolean> = {
  request_id: (v) => typeof v === "string" && v.length > 0,
  key_id: (v) => typeof v === "string" && v.length > 0,
  provider: (v) => typeof v === "string",
  route: (v) => typeof v === "string",
  method: (v) => typeof v === "string",
  // DateTime64(3): "YYYY-MM-DD HH:MM:SS[.fff]"
  at: (v) => typeof v === "string" && /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,3})?$/.test(v),
  latency_ms: (v) => Number.isInteger(v) && (v as number) >= 0,
  // Nullable(UInt32): null while the time to the last byte is unknown.
  duration_ms: (v) => v === null || (Number.isInteger(v) && (v as number) >= 0),
  status: (v) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535,
  amount_micros: (v) => Number.isInteger(v) && (v as number) >= 0,
  outcome: (v) => typeof v === "string",
};

export async function startFakeTinybird(opts: { port?: number; host?: string; token?: string; print?: boolean } = {}): Promise<FakeTinybird> {
  const token = opts.token ?? TEST_TINYBIRD.token;
  let mode: FakeMode = "ok";
  let failStatus = 503;
  const rows = new Map<string, Record<string, unknown>[]>();
  const attempts: FakeAttempt[] = [];
  const hanging = new Map<http.ServerResponse, FakeAttempt>();

  /** Let go of held batches: answered 503 (ingested never), or dropped when the fake closes. */
  const releaseHanging = (drop = false) => {
    for (const [res, attempt] of hanging) {
      if (drop) res.socket?.destroy();
      else if (!res.writableEnded) {
        attempt.status = 503;
        send(res, 503, { error: "service unavailable (fake, after hanging)" });
      }
    }
    hanging.clear();
  };

  const send = (res: http.ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://fake");
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text: string = Buffer.concat(chunks).toString("utf8");

    if (url.pathname === "/__fake/mode" && req.method === "PUT") {
      const body = JSON.parse(text || "{}") as { mode?: FakeMode; status?: number };
      if (body.mode !== "ok" && body.mode !== "fail" && body.mode !== "hang") return send(res, 400, { error: "mode must be ok, fail or hang" });
      mode = body.mode;
      failStatus = body.status ?? 503;
      if (mode !== "hang") releaseHanging();
      return send(res, 200, { mode });
    }
    if (url.pathname === "/__fake/state" && req.method === "GET") return send(res, 200, { mode, hanging: hanging.size, attempts: attempts.length });
    if (url.pathname === "/__fake/attempts" && req.method === "GET") return send(res, 200, attempts);
    if (url.pathname === "/__fake/rows" && req.method === "GET") return send(res, 200, rows.get(url.searchParams.get("name") ?? "") ?? []);
    if (url.pathname === "/__fake" && req.method === "DELETE") {
      mode = "ok";
      releaseHanging();
      rows.clear();
      attempts.length = 0;
      return send(res, 200, { reset: true });
    }

    if (url.pathname !== "/v0/events" || req.method !== "POST") return send(res, 404, { error: "not found" });
    if (req.headers.authorization !== `Bearer ${token}`) return send(res, 403, { error: "invalid authentication token" });
    const name = url.searchParams.get("name");
    if (!name) return send(res, 400, { error: "name parameter is required" });
    const lines: string[] = text.split("\n").filter((l: string) => l.trim() !== "");
    if (lines.length === 0) return send(res, 400, { error: "empty body" });
    const parsed: (Record<string, unknown> | null)[] = lines.map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return null;
      }
    });
    const attempt: FakeAttempt = { at: Date.now(), mode, status: null, abandoned: false, requestIds: parsed.map((p) => String(p?.request_id ?? "")) };
    attempts.push(attempt);

    if (mode === "hang") {
      hanging.set(res, attempt);
      res.once("close", () => {
        if (!res.writableEnded) attempt.abandoned = true;
        hanging.delete(res);
      });
      return;
    }
    if (mode === "fail") {
      attempt.status = failStatus;
      return send(res, failStatus, { error: "service unavailable (fake)" });
    }
    // Rows that do not fit the data source's columns go to quarantine, as Tinybird does.
    let ok = 0;
    let quarantined = 0;
    const table = rows.get(name) ?? [];
    rows.set(name, table);
    for (const row of parsed) {
      if (row && Object.entries(COLUMNS).every(([col, valid]) => valid(row[col]))) {
        table.push(row);
        ok++;
      } else quarantined++;
    }
    const status = url.searchParams.get("wait") === "true" ? 200 : 202;
    attempt.status = status;
    if (opts.print) console.log(`fake tinybird: ${name} +${ok} rows (${quarantined} quarantined)`);
    send(res, status, { successful_rows: ok, quarantined_rows: quarantined });
  });

  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", resolve));
  const address = server.address() as AddressInfo;
  return {
    url: `http://${address.address}:${address.port}`,
    close: () => {
      releaseHanging(true);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      return closed;
    },
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  const fake = await startFakeTinybird({ port: Number(arg("--port") ?? 8790), token: arg("--token"), print: true });
  console.log(`fake Tinybird Events API on ${fake.url} (token ${arg("--token") ?? TEST_TINYBIRD.token})`);
}
