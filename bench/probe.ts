// `npm run bench -- --profile`: a probe Worker, loaded into the same workerd as cn2, that
// rebuilds cn2's request path one layer at a time so each layer's cost can be read off
// as a difference between two rows:
//
//   probe:bare            Worker -> upstream (header allow-list, credential injected)
//   probe:bare+kv         + one KV read per request (what an uncached pool lookup costs)
//   probe:do              Worker -> Durable Object (SQLite-backed) -> upstream
//   probe:do+signal       + SellerKey's call handling: timeout timer + AbortSignal.any on the
//                           upstream fetch, a fresh copy of the response headers
//   probe:do-rpc          the same hop as a JS RPC call (stub.serve(...)) returning the
//                           Response, instead of stub.fetch(Request): an alternative
//   probe:do-rpc-plain    the hop as JS RPC carrying plain data both ways: a header record
//                           and the body in, status, header pairs and the answer read
//                           whole out (no Request or Response on either side of the hop)
//   probe:do-passthrough  the buyer's request handed to the object as it is (no body
//                           buffer, no header copy): the floor of this hop
//   probe:do-stream       the body streamed to the object with a small header record
//                           instead of buffered first (cn2 buffers it so failover can resend)
//   probe:do+stream       + the body piped through a TransformStream (SellerKey watches the
//                           pipe to tell a clean end from a cut)
//   probe:do+identity     the same pipe through workerd's native IdentityTransformStream
//                           instead (what SellerKey does for streams)
//   probe:do+buffer       the small non-streamed answer read whole instead of piped (its end
//                           is then known without a pipe; SellerKey does this for small
//                           answers of known length)
//   probe:do+stream+sqlA  + the SQL SellerKey ran before it answered: before the upstream
//                           call the hits INSERT (window counted in memory, expired rows
//                           deleted in batches) and two spend upserts; after it the
//                           earnings upsert and the health write
//   probe:do+stream+sqlB  + the SQL it ran when the stream ended (request_meta INSERT; past
//                           10,500 rows a batched trim): its full former per-request set
//   probe:...+sqlB@10k    the same with request_meta already at its 10,000-row cap (a busy
//                           key between flushes, or one whose flush fails): the batched trim
//                           then runs every 500 requests
//   probe:healthz         a Worker answering JSON, no upstream  } the router alone is
//   cn2:healthz           cn2's GET /healthz through its router } the difference
//
// The SQL rows reproduce SellerKey's hot path as it was on the afternoon of 2026-11-25,
// with storage commits on every request; SellerKey has since moved them into a batch every
// PERSIST_MS (objects/seller-key/seller-key.ts). They stay as the measure of what a per-request
// commit costs here (cn2 itself: `--var PERSIST_MS=0`).
import type { ExtraWorker } from "./workerd.ts";
import type { Target } from "./load.ts";

const SOURCE = /* js */ `
import { DurableObject } from "cloudflare:workers";

const MINUTE = 60000;
const MAX_BUFFERED_META = 10000;
const FORWARD = ["content-type", "accept", "accept-encoding", "user-agent", "idempotency-key"];
const HOP = new Set(["connection", "keep-alive", "transfer-encoding", "content-length", "host"]);

function upstreamRequest(env, method, path, incoming, body, signal) {
  const headers = new Headers();
  for (const name of FORWARD) {
    const v = incoming.get(name);
    if (v !== null) headers.set(name, v);
  }
  headers.set("authorization", "Bearer " + env.CREDENTIAL);
  return fetch(env.UPSTREAM + path, { method, headers, body, signal });
}

export class Probe extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(\`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS hits (at INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS hits_at ON hits (at);
      CREATE TABLE IF NOT EXISTS spend (period TEXT PRIMARY KEY, micros INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS earnings (id INTEGER PRIMARY KEY CHECK (id = 1), unflushed_micros INTEGER NOT NULL, fee_micros INTEGER NOT NULL, served_count INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS request_meta (request_id TEXT PRIMARY KEY, at INTEGER NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, status INTEGER NOT NULL, latency_ms INTEGER NOT NULL, amount_micros INTEGER NOT NULL, outcome TEXT NOT NULL);
    \`);
    this.inFlight = 0;
    this.hits = [];
    this.hitsStart = 0;
    this.metaRows = this.sql.exec("SELECT count(*) AS n FROM request_meta").one().n;
    this.health = { state: "healthy", success: 1, latencyMs: 0, coolingUntil: 0, consecutiveFailures: 0, backoffMs: 5000, reason: null };
  }

  addSpend(period, micros) {
    this.sql.exec("INSERT INTO spend (period, micros) VALUES (?, ?) ON CONFLICT (period) DO UPDATE SET micros = micros + excluded.micros", period, micros);
  }

  // probe:do-rpc: what "plain" does, reached over JS RPC instead of fetch().
  async serve(path, method, headerList, body) {
    const up = await upstreamRequest(this.env, method, path, new Headers(headerList), body);
    return new Response(up.body, up);
  }

  // probe:do-rpc-plain: no Request or Response crosses the hop, only plain data.
  async servePlain(path, method, headerRecord, body) {
    const up = await upstreamRequest(this.env, method, path, new Headers(headerRecord), body);
    const headers = [];
    for (const [name, value] of up.headers) if (!HOP.has(name)) headers.push([name, value]);
    return { status: up.status, headers, body: await up.arrayBuffer() };
  }

  async fetch(request) {
    // do-passthrough hands over the buyer's own request: no mode header, its layer in the path.
    const mode = request.headers.get("x-probe-mode") ?? "plain";
    const requestId = request.headers.get("x-probe-request-id") ?? crypto.randomUUID();
    const url = new URL(request.url);
    const method = request.method;
    const path = url.pathname.startsWith("/do-passthrough/") ? url.pathname.slice("/do-passthrough".length) : url.pathname;
    const now = Date.now();
    const sqlBefore = mode === "sqlA" || mode === "sqlB" || mode === "sqlBfull";
    const sqlAfter = mode === "sqlB" || mode === "sqlBfull";
    if (mode === "sqlBfull" && !this.filled) {
      this.filled = true;
      this.sql.exec(
        "INSERT OR IGNORE INTO request_meta SELECT 'pre_' || x, ? - x, 'POST', '/v1/chat/completions', 200, 1, 1000, 'served' FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT x FROM c)",
        now, MAX_BUFFERED_META,
      );
      this.metaRows = this.sql.exec("SELECT count(*) AS n FROM request_meta").one().n;
    }
    const price = 1000;
    const day = "d:" + new Date(now).toISOString().slice(0, 10);
    const month = "m:" + new Date(now).toISOString().slice(0, 7);

    if (mode === "plain") {
      const up = await upstreamRequest(this.env, method, path, request.headers, request.body);
      return new Response(up.body, up);
    }

    if (sqlBefore) {
      // The window is counted in memory; the table gets one INSERT per request and a
      // batched DELETE of expired rows (as SellerKey.hitsInWindow does).
      const cutoff = now - MINUTE;
      while (this.hitsStart < this.hits.length && this.hits[this.hitsStart] <= cutoff) this.hitsStart++;
      if (this.hitsStart > 1024 && this.hitsStart * 2 > this.hits.length) {
        this.hits = this.hits.slice(this.hitsStart);
        this.hitsStart = 0;
        this.sql.exec("DELETE FROM hits WHERE at <= ?", cutoff);
      }
      this.hits.push(now);
      this.sql.exec("INSERT INTO hits (at) VALUES (?)", now);
      this.addSpend(day, price);
      this.addSpend(month, price);
    }
    this.inFlight++;
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), 10000);
    const signal = AbortSignal.any([request.signal, timeout.signal]);
    const started = performance.now();
    const up = await upstreamRequest(this.env, method, path, request.headers, request.body, signal);
    clearTimeout(timer);
    const latency = Math.round(performance.now() - started);
    this.health = { ...this.health, success: this.health.success + 0.2 * (1 - this.health.success), latencyMs: this.health.latencyMs === 0 ? latency : this.health.latencyMs + 0.2 * (latency - this.health.latencyMs) };
    if (sqlBefore) {
      this.sql.exec(
        "INSERT INTO earnings (id, unflushed_micros, fee_micros, served_count) VALUES (1, ?, ?, 1) ON CONFLICT (id) DO UPDATE SET unflushed_micros = unflushed_micros + excluded.unflushed_micros, fee_micros = fee_micros + excluded.fee_micros, served_count = served_count + 1",
        0, 0,
      );
      this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", "health", JSON.stringify(this.health));
    }
    const headers = new Headers();
    for (const [name, value] of up.headers) if (!HOP.has(name)) headers.append(name, value);
    headers.set("cn2-price-micros", String(price));
    const status = up.status;
    if (mode === "signal") {
      this.inFlight--;
      return new Response(up.body, { status, headers });
    }
    if (mode === "buffer") {
      // The other alternative for a small non-streamed answer: read it whole, so its end is
      // known without a pipe (SellerKey would keep the pipe for SSE / unknown lengths).
      const bytes = await up.arrayBuffer();
      this.inFlight--;
      return new Response(bytes, { status, headers });
    }
    // "identity": the alternative to SellerKey's JS TransformStream, workerd's native one.
    const { readable, writable } = mode === "identity" ? new IdentityTransformStream() : new TransformStream();
    up.body.pipeTo(writable).then(() => {
      this.inFlight--;
      if (!sqlAfter) return;
      this.sql.exec(
        "INSERT OR REPLACE INTO request_meta (request_id, at, method, route, status, latency_ms, amount_micros, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        requestId, now, method, path, status, latency, 0, "served",
      );
      // Past the cap, drop the oldest in batches of 500 (SellerKey.recordMeta).
      if (++this.metaRows > MAX_BUFFERED_META + 500) {
        this.sql.exec("DELETE FROM request_meta WHERE request_id IN (SELECT request_id FROM request_meta ORDER BY at LIMIT ?)", this.metaRows - MAX_BUFFERED_META);
        this.metaRows = MAX_BUFFERED_META;
      }
    }, () => { this.inFlight--; });
    return new Response(readable, { status, headers });
  }
}

const KEYS = 3;

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const [, layer, ...rest] = url.pathname.split("/");
    const path = "/" + rest.join("/");
    if (layer === "healthz") {
      return new Response(JSON.stringify({ ok: true }), { headers: { "content-type": "application/json" } });
    }
    if (layer === "bare" || layer === "bare-kv") {
      if (layer === "bare-kv") await env.POOLS.get("pool:openai:us:standard", "json");
      const up = await upstreamRequest(env, request.method, path, request.headers, request.body);
      return new Response(up.body, up);
    }
    // DO layers: buffer the body (cn2 does, for failover), copy the headers, pick one of
    // three objects at random (cn2 spreads over three keys).
    if (layer === "do-passthrough") {
      // The incoming request handed on as it is (no body buffer, no header copy).
      const stub = env.PROBE.get(env.PROBE.idFromName("pass:" + Math.floor(Math.random() * KEYS)));
      const res = await stub.fetch(request);
      return new Response(res.body, res);
    }
    if (layer === "do-stream") {
      // The body streamed to the object instead of buffered (cn2 buffers it for failover).
      const stub = env.PROBE.get(env.PROBE.idFromName("stream:" + Math.floor(Math.random() * KEYS)));
      return stub.fetch("https://probe" + path, { method: request.method, headers: { "content-type": "application/json", "x-probe-mode": "plain" }, body: request.body });
    }
    if (layer === "do-rpc") {
      const body = await request.arrayBuffer();
      const stub = env.PROBE.get(env.PROBE.idFromName("rpc:" + Math.floor(Math.random() * KEYS)));
      const res = await stub.serve(path, request.method, [...request.headers], body);
      return new Response(res.body, res);
    }
    if (layer === "do-rpc-plain") {
      const body = await request.arrayBuffer();
      const headerRecord = {};
      for (const name of FORWARD) {
        const v = request.headers.get(name);
        if (v !== null) headerRecord[name] = v;
      }
      const stub = env.PROBE.get(env.PROBE.idFromName("rpcplain:" + Math.floor(Math.random() * KEYS)));
      const res = await stub.servePlain(path, request.method, headerRecord, body);
      return new Response(res.body, { status: res.status, headers: res.headers });
    }
    const mode = { "do": "plain", "do-signal": "signal", "do-stream": "stream", "do-identity": "identity", "do-buffer": "buffer", "do-sqlA": "sqlA", "do-sqlB": "sqlB", "do-sqlB-full": "sqlBfull" }[layer];
    if (!mode) return new Response("unknown probe layer", { status: 404 });
    const body = await request.arrayBuffer();
    const headers = new Headers(request.headers);
    headers.set("x-probe-mode", mode);
    headers.set("x-probe-request-id", "req_" + crypto.randomUUID().replaceAll("-", ""));
    const stub = env.PROBE.get(env.PROBE.idFromName(mode + ":" + Math.floor(Math.random() * KEYS)));
    const res = await stub.fetch("https://probe" + path, { method: request.method, headers, body, signal: request.signal });
    return new Response(res.body, res);
  },
};
`;

export const PROBE_WORKER = (upstreamOpenAiBase: string, credential: string): ExtraWorker => ({
  name: "probe",
  source: SOURCE,
  durableObjects: { PROBE: "Probe" },
  // The same namespace id as cn2's POOLS binding: bare+kv reads cn2's real pool snapshot.
  kvNamespaces: { POOLS: "cn2-pools" },
  bindings: { UPSTREAM: upstreamOpenAiBase, CREDENTIAL: credential },
});

export function profileTargets(probeUrl: string, cn2Url: string, body: string, verify: (b: string) => boolean): Record<string, Target> {
  const post = (layer: string): Target => ({
    url: `${probeUrl}/${layer}/v1/chat/completions`,
    headers: { "content-type": "application/json" },
    body,
    verify,
  });
  const health = (url: string): Target => ({ url, method: "GET", headers: {}, body: "", verify: (b) => b.includes('"ok":true'), local: true });
  return {
    "probe:bare": post("bare"),
    "probe:bare+kv": post("bare-kv"),
    "probe:do": post("do"),
    "probe:do-rpc": post("do-rpc"),
    "probe:do-rpc-plain": post("do-rpc-plain"),
    "probe:do-passthrough": post("do-passthrough"),
    "probe:do-stream": post("do-stream"),
    "probe:do+signal": post("do-signal"),
    "probe:do+stream": post("do-stream"),
    "probe:do+identity": post("do-identity"),
    "probe:do+buffer": post("do-buffer"),
    "probe:do+stream+sqlA": post("do-sqlA"),
    "probe:do+stream+sqlB": post("do-sqlB"),
    "probe:do+stream+sqlB@10k": post("do-sqlB-full"),
    "probe:healthz": health(`${probeUrl}/healthz`),
    "cn2:healthz": health(`${cn2Url}/healthz`),
  };
}
