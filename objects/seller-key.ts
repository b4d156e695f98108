// One seller key = one Durable Object. A single-threaded object is the right atom here:
// it can count requests per minute, in-flight requests and budget spend exactly, with
// no coordination, and it is the only place the decrypted credential ever exists (in
// memory, never in storage). Admission checks run synchronously before the first await,
// so concurrent requests cannot both pass a limit that only one of them fits.
//
// Per-request bookkeeping (admissions, spend, metadata, the health EWMA) is kept in
// memory and written to SQLite in one batched commit at most every PERSIST_MS: a commit
// holds back the object's outgoing messages until it is durable (and locally is an fsync
// on workerd's only thread), so one per request would make every answer wait for it.
// Paid answers (money) and rare state changes (key disabled, cooling, config, events)
// commit at once. What a crash can forget is bounded by the window: docs/operations.md.
import { DurableObject } from "cloudflare:workers";
import * as v from "valibot";
import { PROVIDERS, upstreamBase, type Provider } from "../schema/providers.ts";
import { priceFor, routeAllowed } from "../schema/routes.ts";
import {
  H, KeyConfigPatchSchema, KeyConfigSchema, poolName,
  type Envelope, type ErrorCode, type Home, type KeyConfig, type KeyInspection,
  type KeyView, type PoolMember, type RequestMeta, type Tier,
} from "../schema/wire.ts";
import type { Env } from "../worker/env.ts";
import { ApiError, attempt, errorResponse, splitUrl, type Result } from "../worker/http.ts";
import { buyerResponse, upstreamHeaders, upstreamUrl } from "../worker/forward.ts";
import { decryptCredential, parseVaultPrivateKeys, VaultError } from "../worker/vault.ts";
import { numberSetting, upstreamOverrides } from "../worker/settings.ts";
import { vaultEntryKey, type VaultMetadata } from "../worker/keys.ts";
import { feeBps, split } from "../worker/payments/money.ts";
import { keyHealthNotice } from "../worker/webhooks/events.ts";
import { emitSellerEvent } from "../worker/webhooks/producer.ts";
import * as health from "./health.ts";
import * as track from "./track-record.ts";
import { poolStub } from "./pool-index.ts";
import { EarningsFlusher, toMeta, type FlushOutcome } from "./earnings-flush.ts";
import { LiveFeed, type LiveParts } from "./seller-key-live.ts";

export interface NewKey {
  keyId: string;
  sellerId: string;
  envelope: Envelope;
  config: KeyConfig;
}

interface KeyRecord {
  keyId: string;
  sellerId: string;
  home: Home;
  config: KeyConfig;
  createdAt: number;
}

const MINUTE = 60_000;
const MAX_EVENTS = 200;
/** Metadata rows kept until flushed to Postgres; the oldest go first past this. */
const MAX_BUFFERED_META = 10_000;
/** How often overdue upstream calls are looked for: the first-byte timeout's precision. */
const SWEEP_MS = 100;

interface UpstreamCall {
  deadline: number;
  controller: AbortController;
  timedOut: boolean;
}

export class SellerKey extends DurableObject<Env> {
  private record: KeyRecord | null = null;
  private health: health.Health = health.initialHealth();
  /** The last day's calls, failures and downtime (P2): premium is earned from it. */
  private track: track.TrackRecord = track.emptyTrackRecord();
  /** The pool tier this key serves in: its config's, except premium until earned. */
  private servingTier: Tier = "standard";
  /** The decrypted credential: memory only, gone when the object is evicted. */
  private credential: string | null = null;
  private inFlight = 0;
  private probeInFlight = false;
  private readonly sql: SqlStorage;
  // Hot-path mirrors of SQLite state, so admission reads no rows. SQLite stays the
  // record (an evicted object reloads from it); memory only saves the reads.
  /** Admission times inside the last minute, oldest first (from `hitsStart`). */
  private hits: number[] = [];
  private hitsStart = 0;
  private readonly spendCache = new Map<string, number>();
  // Written by the next batched commit (persist()).
  private pendingHits: number[] = [];
  /** Limiter rows at or before this time can be deleted (expired). */
  private hitsExpiredAt = 0;
  private readonly pendingSpend = new Map<string, number>();
  private readonly pendingEarnings = { sellerMicros: 0, feeMicros: 0, served: 0 };
  private pendingMeta: RequestMeta[] = [];
  /** Outcome changes (stream cuts) of rows that may already be written. */
  private readonly pendingOutcomes = new Map<string, RequestMeta["outcome"]>();
  private healthDirty = false;
  private trackDirty = false;
  private persistPending = false;
  private persistTimer: ReturnType<typeof setTimeout> | undefined;
  private metaRows = 0;
  // Earnings + metadata flush to Postgres (objects/earnings-flush.ts), from an alarm.
  private readonly flusher: EarningsFlusher;
  private flushAlarmSet = false;
  private flushRetryMs = 0;
  /** Upstream calls waiting for their first byte; one sweep aborts the overdue ones. */
  private readonly waiting = new Set<UpstreamCall>();
  private sweeper: ReturnType<typeof setInterval> | undefined;
  /** Pushes to the seller's live room, coalesced and off the request path (seller-key-live.ts). */
  private readonly live: LiveFeed;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS hits (at INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS hits_at ON hits (at);
      CREATE TABLE IF NOT EXISTS spend (period TEXT PRIMARY KEY, micros INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS earnings (id INTEGER PRIMARY KEY CHECK (id = 1), unflushed_micros INTEGER NOT NULL, fee_micros INTEGER NOT NULL, served_count INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS request_meta (request_id TEXT PRIMARY KEY, at INTEGER NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, status INTEGER NOT NULL, latency_ms INTEGER NOT NULL, amount_micros INTEGER NOT NULL, outcome TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
    `);
    this.record = this.readMeta<KeyRecord>("record");
    this.health = this.readMeta<health.Health>("health") ?? health.initialHealth();
    this.track = this.readMeta<track.TrackRecord>("track") ?? track.emptyTrackRecord();
    this.servingTier = this.readMeta<Tier>("servingTier") ?? this.tierFor(this.record?.config.tier ?? "standard", "standard", Date.now());
    const since = Date.now() - MINUTE;
    this.sql.exec("DELETE FROM hits WHERE at <= ?", since);
    this.hits = this.sql.exec<{ at: number }>("SELECT at FROM hits ORDER BY at").toArray().map((r) => r.at);
    this.metaRows = this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM request_meta").one().n;
    this.flusher = new EarningsFlusher(ctx.storage);
    this.live = new LiveFeed(ctx, env, () => this.liveParts());
  }

  // ---- seller / ops RPC -------------------------------------------------------------

  // Public methods that can refuse return Result (see worker/http.ts).
  create(input: NewKey, home: Home): Promise<Result<KeyView>> {
    return attempt(() => this.createKey(input, home));
  }
  describe(): Promise<Result<KeyView>> {
    return attempt(() => this.view());
  }
  inspect(): Promise<Result<KeyInspection>> {
    return attempt(() => this.inspection());
  }
  configure(patch: unknown): Promise<Result<KeyView>> {
    return attempt(() => this.applyConfig(patch));
  }
  /** Operator action: stop serving until the seller re-enables the key. */
  disable(reason: string): Promise<Result<KeyInspection>> {
    return attempt(async () => {
      this.requireRecord();
      this.setHealth(health.disabled(this.health, reason), "key.disabled", reason);
      await this.publish(null);
      return this.inspection();
    });
  }
  /** Operator action: no new requests; in-flight ones finish. */
  drain(): Promise<Result<KeyInspection>> {
    return attempt(async () => {
      await this.applyConfig({ status: "paused" });
      return this.inspection();
    });
  }

  /** Flush unflushed earnings and metadata to Postgres now (account closure, tests). */
  flushEarnings(): Promise<Result<FlushOutcome>> {
    return attempt(() => this.flushAll());
  }
  /**
   * Before removal: stop taking requests, let in-flight ones finish, flush everything to
   * Postgres. If the flush fails the key goes back to its status and the refusal says so:
   * a key is never removed with earnings that did not reach the ledger.
   */
  retire(): Promise<Result<FlushOutcome | null>> {
    return attempt(async () => {
      const r = this.record;
      if (!r) return null;
      const wasActive = r.config.status !== "paused";
      if (wasActive) await this.applyConfig({ status: "paused" });
      for (let waited = 0; this.inFlight > 0 && waited < 10_000; waited += 50) await new Promise((done) => setTimeout(done, 50));
      try {
        return await this.flushAll();
      } catch (error) {
        if (wasActive) await this.applyConfig({ status: "active" }).catch(() => {});
        throw error;
      }
    });
  }

  /** The flush alarm: set after a request; on failure retried with backoff, indefinitely. */
  override async alarm(): Promise<void> {
    this.flushAlarmSet = false;
    if (!this.record) return;
    this.live.changed(); // requests/min has decayed since the traffic: the room hears it
    try {
      const outcome = await this.flushOnce();
      this.flushRetryMs = 0;
      if (outcome.more) this.scheduleFlush(1_000);
    } catch (error) {
      this.flushRetryMs = Math.min(Math.max(this.flushRetryMs * 2, 5_000), 3_600_000);
      console.error(JSON.stringify({ evt: "earnings_flush_failed", keyId: this.record.keyId, error: error instanceof ApiError ? error.code : error instanceof Error ? error.name : "unknown", retryInMs: this.flushRetryMs }));
      this.scheduleFlush(this.flushRetryMs, true);
    }
  }

  private async flushOnce(): Promise<FlushOutcome> {
    const r = this.requireRecord();
    this.persist();
    try {
      return await this.flusher.flush(this.env, { keyId: r.keyId, sellerId: r.sellerId, provider: r.config.provider, createdAt: r.createdAt });
    } catch (error) {
      if (error instanceof ApiError) throw error;
      const state = (error as { code?: unknown }).code;
      throw new ApiError("db_unavailable", `earnings could not be flushed to the ledger${typeof state === "string" ? ` (${state})` : ""}; try again`);
    } finally {
      this.metaRows = this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM request_meta").one().n;
    }
  }

  /** Flush until nothing is left; the last outcome (with the total rows) is returned. */
  private async flushAll(): Promise<FlushOutcome> {
    let outcome = await this.flushOnce();
    let rows = outcome.metadataRows;
    let amount = outcome.amountMicros;
    while (outcome.more) {
      outcome = await this.flushOnce();
      rows += outcome.metadataRows;
      amount += outcome.amountMicros;
    }
    return { ...outcome, metadataRows: rows, amountMicros: amount };
  }

  /** Ask for the flush alarm once per period (a memory flag spares the storage call per request). */
  private scheduleFlush(delayMs = numberSetting(this.env.EARNINGS_FLUSH_MS, 30_000), force = false) {
    if (this.flushAlarmSet && !force) return;
    this.flushAlarmSet = true;
    this.ctx.storage.setAlarm(Date.now() + delayMs).catch(() => {
      this.flushAlarmSet = false;
    });
  }

  /** Checks the envelope decrypts for this key id and seller, then stores the ciphertext in KV. */
  private async createKey(input: NewKey, home: Home): Promise<KeyView> {
    if (this.record) throw new ApiError("key_exists", `key ${input.keyId} already exists`);
    const credential = await this.decrypt(input.envelope, input.sellerId, input.keyId);
    const meta: VaultMetadata = { sellerId: input.sellerId, home };
    await this.env.VAULT.put(vaultEntryKey(input.keyId), JSON.stringify(input.envelope), { metadata: meta });
    this.record = { keyId: input.keyId, sellerId: input.sellerId, home, config: input.config, createdAt: Date.now() };
    this.writeMeta("record", this.record);
    this.servingTier = this.tierFor(input.config.tier, "standard", Date.now());
    this.writeMeta("servingTier", this.servingTier);
    this.credential = credential;
    this.event("key.created", `${input.config.provider} ${input.config.region} ${input.config.tier}`);
    await this.publish(null);
    this.live.changed();
    return this.view();
  }

  private view(): KeyView {
    const r = this.requireRecord();
    const h = this.health;
    const t = track.summarize(this.track, Date.now(), r.createdAt);
    return {
      keyId: r.keyId, sellerId: r.sellerId, home: r.home, config: r.config, createdAt: r.createdAt,
      health: { state: h.state, score: round3(health.score(h)), latencyMs: Math.round(h.latencyMs), coolingUntil: h.coolingUntil, reason: h.reason },
      servingTier: this.servingTier,
      trackRecord: { calls: t.calls, successRate: round3(t.successRate), uptime: round3(t.uptime), observedMs: t.observedMs },
    };
  }

  /** What the live feed sends, read when a push is due (at most once a second). */
  private liveParts(): LiveParts | null {
    const r = this.record;
    if (!r) return null;
    const v = this.view();
    const stored = this.sql.exec<{ u: number }>("SELECT unflushed_micros AS u FROM earnings WHERE id = 1").toArray()[0]?.u ?? 0;
    return {
      keyId: r.keyId, sellerId: r.sellerId, config: r.config, state: v.health.state, healthScore: v.health.score, latencyMs: v.health.latencyMs,
      requestsPerMinute: this.hitsInWindow(Date.now()), inFlight: this.inFlight, servingTier: this.servingTier,
      trackRecord: { calls: v.trackRecord!.calls, successRate: v.trackRecord!.successRate, uptime: v.trackRecord!.uptime },
      unflushedMicros: stored + this.pendingEarnings.sellerMicros,
    };
  }

  private inspection(): KeyInspection {
    const r = this.requireRecord();
    this.persist();
    const now = Date.now();
    const earnings = this.sql.exec<{ unflushed_micros: number; fee_micros: number; served_count: number }>("SELECT unflushed_micros, fee_micros, served_count FROM earnings WHERE id = 1").toArray()[0];
    return {
      ...this.view(),
      limiter: { windowCount: this.hitsInWindow(now), requestsPerMinute: r.config.requestsPerMinute },
      inFlight: this.inFlight,
      maxConcurrent: r.config.maxConcurrent,
      spend: { dayMicros: this.spent(dayPeriod(now)), monthMicros: this.spent(monthPeriod(now)) },
      earnings: { unflushedMicros: earnings?.unflushed_micros ?? 0, feeMicros: earnings?.fee_micros ?? 0, servedCount: earnings?.served_count ?? 0 },
      bufferedMetadata: this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM request_meta").one().n,
      credentialLoaded: this.credential !== null,
      events: this.sql.exec<{ at: number; kind: string; detail: string }>("SELECT at, kind, detail FROM events ORDER BY id DESC LIMIT 50").toArray(),
    };
  }

  /** Apply a config edit; it takes effect on the very next request (S3). */
  private async applyConfig(patch: unknown): Promise<KeyView> {
    const r = this.requireRecord();
    const parsed = v.safeParse(KeyConfigPatchSchema, patch);
    if (!parsed.success) throw new ApiError("invalid_request", `invalid config: ${parsed.issues[0]?.message ?? "bad input"}`);
    const config = v.parse(KeyConfigSchema, { ...r.config, ...parsed.output });
    const beforePool = this.poolName();
    this.record = { ...r, config };
    this.writeMeta("record", this.record);
    const tier = this.tierFor(config.tier, this.servingTier, Date.now());
    if (tier !== this.servingTier) {
      this.servingTier = tier;
      this.writeMeta("servingTier", tier);
    }
    // Setting status to active is how a seller re-enables a key after fixing it.
    if (parsed.output.status === "active" && this.health.state === "disabled") this.setHealth(health.reenabled(this.health), "key.recovered", "re-enabled by seller");
    this.event("key.configured", Object.keys(parsed.output).join(","));
    await this.publish(beforePool);
    this.live.changed();
    return this.view();
  }

  /** Remove everywhere: KV ciphertext, pool membership, this object's storage. */
  async remove(): Promise<void> {
    const r = this.record;
    if (r) {
      this.live.removed(r.sellerId, r.keyId);
      await this.env.VAULT.delete(vaultEntryKey(r.keyId));
      await this.leavePool(this.poolName(), r.keyId);
    }
    this.credential = null;
    this.record = null;
    this.health = health.initialHealth();
    this.track = track.emptyTrackRecord();
    this.servingTier = "standard";
    this.hits = [];
    this.hitsStart = 0;
    this.spendCache.clear();
    this.discardPending();
    this.metaRows = 0;
    this.flushAlarmSet = false;
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
  }

  /** Metadata rows not yet flushed (oldest first); the flush job consumes them. */
  bufferedMeta(limit = 1000): RequestMeta[] {
    this.persist();
    return this.sql.exec<Record<string, string | number>>("SELECT * FROM request_meta ORDER BY at LIMIT ?", limit).toArray().map(toMeta);
  }

  // ---- the proxy path ----------------------------------------------------------------

  /** Serve one buyer request. The router sends the buyer's method, path, query and body. */
  override async fetch(request: Request): Promise<Response> {
    const requestId = request.headers.get(H.requestId) ?? "";
    const r = this.record;
    if (!r) return refusal("key_not_found", "no such key", requestId);
    const { config } = r;
    const provider = PROVIDERS[config.provider];
    const { pathname: path, search } = splitUrl(request.url);
    const method = request.method;
    const now = Date.now();

    // Admission: synchronous, so it is exact under concurrency.
    if (config.status === "paused") return refusal("key_paused", "key is paused by its seller", requestId);
    const admit = health.admits(this.health, now);
    if (admit === "no" || (admit === "probe" && this.probeInFlight)) {
      return this.health.state === "disabled"
        ? refusal("key_disabled", "key is disabled", requestId)
        : refusal("key_cooling", "key is cooling down", requestId, retryAfterSeconds(this.health.coolingUntil - now));
    }
    const routes = config.allowedRoutes.length > 0 ? config.allowedRoutes : provider.defaultRoutes;
    if (!routeAllowed(routes, method, path)) return refusal("route_not_allowed", `${method} ${path} is not allowed on this key`, requestId);
    if (this.inFlight >= config.maxConcurrent) return refusal("concurrency_limit", `key serves at most ${config.maxConcurrent} requests at once`, requestId);
    const inWindow = this.hitsInWindow(now);
    if (inWindow >= config.requestsPerMinute) {
      const oldest = this.hits[this.hitsStart]!;
      return refusal("rate_limited", `key allows ${config.requestsPerMinute} requests per minute`, requestId, retryAfterSeconds(oldest + MINUTE - now));
    }
    const price = priceFor(config, method, path);
    // The router picked this key from a snapshot; if the seller has raised the price
    // since, what the buyer paid no longer covers it: let the router try another key.
    const paid = paidMicros(request);
    if (paid > 0 && price > paid) return refusal("price_above_paid", `key now costs ${price}, above the ${paid} paid`, requestId);
    const day = dayPeriod(now);
    const month = monthPeriod(now);
    if (config.dailyBudgetMicros !== null && this.spent(day) + price > config.dailyBudgetMicros) return refusal("budget_exhausted", "key's daily budget is spent", requestId);
    if (config.monthlyBudgetMicros !== null && this.spent(month) + price > config.monthlyBudgetMicros) return refusal("budget_exhausted", "key's monthly budget is spent", requestId);

    // Admitted: count it and reserve the budget; released if nothing is served.
    this.hits.push(now);
    this.pendingHits.push(now);
    this.addSpend(day, price);
    this.addSpend(month, price);
    this.inFlight++;
    this.live.changed();
    const isProbe = admit === "probe";
    if (isProbe) this.probeInFlight = true;
    let released = false;
    const release = (served: boolean) => {
      if (released) return;
      released = true;
      this.inFlight--;
      this.live.changed();
      if (isProbe) this.probeInFlight = false;
      if (!served) {
        this.addSpend(day, -price);
        this.addSpend(month, -price);
      }
    };
    const record = (status: number, latencyMs: number, outcome: RequestMeta["outcome"], amount: number) =>
      this.recordMeta({ requestId, at: now, method, route: path, status, latencyMs, amountMicros: amount, outcome });

    let credential: string;
    try {
      credential = this.credential ?? (await this.loadCredential(r));
    } catch (err) {
      release(false);
      const code: ErrorCode = err instanceof VaultError && err.code === "vault_key_unknown" ? "key_disabled" : "decrypt_failed";
      this.setHealth(health.disabled(this.health, "credential_undecryptable"), "key.disabled", "credential could not be decrypted");
      return refusal(code, "key credential unavailable", requestId);
    }

    // The first-byte timeout is ours (one sweep per object, not a timer per request);
    // the buyer's disconnect is request.signal. Either aborts the upstream call.
    const timeoutMs = numberSetting(this.env.UPSTREAM_TIMEOUT_MS, 60_000) || 60_000;
    const started = Date.now();
    const call = { deadline: started + timeoutMs, controller: new AbortController(), timedOut: false };
    const buyerLeft = () => call.controller.abort();
    if (request.signal.aborted) call.controller.abort();
    else request.signal.addEventListener("abort", buyerLeft, { once: true });
    this.watchFirstByte(call);
    let upstream: Response;
    try {
      upstream = await fetch(upstreamUrl(upstreamBase(provider, upstreamOverrides(this.env)), path, search, provider), {
        method,
        headers: upstreamHeaders(provider, request.headers, credential),
        body: method === "GET" || method === "HEAD" ? undefined : request.body,
        signal: call.controller.signal,
      });
    } catch {
      this.waiting.delete(call);
      release(false);
      const latency = Date.now() - started;
      if (request.signal.aborted) {
        record(499, latency, "client_abort", 0);
        return refusal("upstream_error", "buyer went away", requestId);
      }
      const kind = call.timedOut ? "timeout" : "network";
      this.noteCall(false);
      this.failure(kind, isProbe);
      record(kind === "timeout" ? 504 : 502, latency, "upstream_error", 0);
      return kind === "timeout"
        ? refusal("upstream_timeout", `upstream did not answer within ${timeoutMs} ms`, requestId)
        : refusal("upstream_error", "upstream could not be reached", requestId);
    }
    this.waiting.delete(call);
    const latency = Date.now() - started;
    const status = upstream.status;

    if (status === 401 || status === 403 || status === 429 || status >= 500) {
      await upstream.body?.cancel();
      release(false);
      record(status, latency, "upstream_error", 0);
      this.noteCall(false);
      if (status === 429) {
        this.setHealth(health.onRateLimited(this.health, upstream.headers.get("retry-after"), Date.now()), "key.cooling", "upstream 429");
        return refusal("rate_limited", "upstream rate limited this key", requestId, retryAfterSeconds(this.health.coolingUntil - Date.now()));
      }
      if (status < 500) {
        this.setHealth(health.disabled(this.health, `upstream_${status}`), "key.disabled", `upstream answered ${status}: the credential was refused`);
        return refusal("key_disabled", `upstream refused the key's credential (${status})`, requestId);
      }
      this.failure("server_error", isProbe);
      return refusal("upstream_error", `upstream answered ${status}`, requestId);
    }

    // A small answer of known length is read whole: its end is then known without a
    // pipe, and if it is cut nothing has reached the buyer, so another key can serve.
    let whole: ArrayBuffer | null = null;
    if (upstream.body && readWhole(upstream.headers)) {
      try {
        whole = await upstream.arrayBuffer();
      } catch {
        release(false);
        if (request.signal.aborted) {
          record(499, latency, "client_abort", 0);
          return refusal("upstream_error", "buyer went away", requestId);
        }
        this.noteCall(false);
        this.failure("stream_cut", isProbe);
        record(502, latency, "upstream_error", 0);
        return refusal("upstream_error", "upstream answer was cut", requestId);
      }
    }

    // Served: the key works, whatever the buyer asked (a 400 is the buyer's own error).
    // Only a successful answer is charged (the router refunds the rest), so only it earns,
    // and it earns as soon as its status is known: the router settles at the same moment.
    const served = status < 400;
    const charged = served ? paid : 0;
    if (served) this.earn(charged, price);
    else release(false);
    this.noteCall(true);
    this.setHealth(health.onSuccess(this.health, latency), this.health.state === "cooling" ? "key.recovered" : null, "probe succeeded");
    const ours = { [H.price]: String(price), [H.requestId]: requestId };
    // Recorded now, in the same batch as the earnings; a cut stream amends the outcome.
    const row = record(status, latency, "served", charged);
    // Money is never left to the batch: a paid answer's earnings and its metadata row (the
    // dispute trail) commit before the answer goes out (the output gate holds it until then).
    if (charged > 0) this.persist();
    if (whole !== null || !upstream.body) {
      release(served);
      return buyerResponse(provider, upstream, whole, ours);
    }
    // Stream through untouched; the pipe's outcome tells a clean end from a cut. workerd's
    // native byte pipe: cheaper than a JS TransformStream (bench --profile, do+identity).
    const { readable, writable } = new IdentityTransformStream();
    upstream.body.pipeTo(writable).then(
      () => release(served),
      () => {
        const buyerLeft = request.signal.aborted;
        // A stream cut after bytes were sent stays charged; the metadata row is the dispute trail.
        release(served);
        row.outcome = buyerLeft ? "client_abort" : "stream_cut";
        this.pendingOutcomes.set(requestId, row.outcome);
        this.markDirty();
        if (!buyerLeft) {
          track.recordLateFailure(this.track, Date.now());
          this.trackDirty = true;
          this.failure("stream_cut", false);
          this.event("request.stream_cut", requestId);
        }
      },
    );
    return buyerResponse(provider, upstream, readable, ours);
  }

  // ---- internals ---------------------------------------------------------------------

  private watchFirstByte(call: UpstreamCall) {
    this.waiting.add(call);
    this.sweeper ??= setInterval(() => {
      const now = Date.now();
      for (const c of this.waiting) {
        if (now < c.deadline) continue;
        this.waiting.delete(c);
        c.timedOut = true;
        c.controller.abort();
      }
      if (this.waiting.size === 0) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
    }, SWEEP_MS);
  }

  private async loadCredential(r: KeyRecord): Promise<string> {
    const stored = await this.env.VAULT.get(vaultEntryKey(r.keyId));
    if (!stored) throw new VaultError("decrypt_failed", "no ciphertext stored for this key");
    this.credential = await this.decrypt(JSON.parse(stored) as Envelope, r.sellerId, r.keyId);
    return this.credential;
  }

  private async decrypt(envelope: Envelope, sellerId: string, keyId: string): Promise<string> {
    try {
      return await decryptCredential(envelope, parseVaultPrivateKeys(this.env.VAULT_PRIVATE_KEYS), { sellerId, keyId });
    } catch (err) {
      if (err instanceof VaultError) throw new ApiError(err.code === "vault_key_unknown" ? "vault_key_unknown" : "decrypt_failed", err.message);
      throw err;
    }
  }

  private failure(kind: health.FailureKind, wasProbe: boolean) {
    const next = health.onFailure(this.health, kind, Date.now(), wasProbe);
    this.setHealth(next, next.state === "cooling" && this.health.state !== "cooling" ? "key.cooling" : null, kind);
  }

  /** Persist health; publish to the pool when the state or score moved enough to matter. */
  private setHealth(next: health.Health, eventKind: string | null, detail: string) {
    const before = this.health;
    this.health = next;
    if (next.reason && (next.reason !== before.reason || next.consecutiveFailures > before.consecutiveFailures || next.state !== before.state)) this.live.failed(next.reason);
    this.live.changed();
    const now = Date.now();
    if (before.state === "healthy" && next.state !== "healthy") track.wentDown(this.track, now);
    else if (before.state !== "healthy" && next.state === "healthy") track.cameUp(this.track, now);
    this.retier(now);
    // A state change commits at once (a disabled key must stay disabled after a restart);
    // the EWMA moving on every answer waits for the batch.
    if (before.state !== next.state || before.coolingUntil !== next.coolingUntil || eventKind) {
      this.writeMeta("health", next);
      this.healthDirty = false;
      if (before.state !== next.state) {
        this.writeMeta("track", this.track);
        this.trackDirty = false;
      }
    } else {
      this.healthDirty = true;
      this.markDirty();
    }
    if (eventKind) this.event(eventKind, detail);
    // Tell the seller (S6 webhooks): key.disabled / key.health_changed / key.recovered on a state change.
    const notice = eventKind && this.record ? keyHealthNotice(eventKind, this.record.keyId, before, next, detail) : null;
    if (notice) this.ctx.waitUntil(emitSellerEvent(this.env, this.record!.sellerId, notice));
    const moved = before.state !== next.state || before.coolingUntil !== next.coolingUntil || Math.abs(health.score(before) - health.score(next)) > 0.05;
    if (moved) this.ctx.waitUntil(this.publish(null).catch((err) => console.error(JSON.stringify({ evt: "pool_publish_failed", error: String(err) }))));
  }

  /** Tell the pool index where this key stands; leave `beforePool` if region or tier moved it. */
  private async publish(beforePool: string | null): Promise<void> {
    const r = this.record;
    if (!r) return;
    const { config } = r;
    const name = this.poolName();
    if (beforePool && beforePool !== name) await this.leavePool(beforePool, r.keyId);
    if (config.status === "paused") return this.leavePool(name, r.keyId);
    const member: PoolMember = {
      keyId: r.keyId, home: r.home, region: config.region, tier: this.servingTier,
      priceMicros: config.priceMicros, routePrices: config.routePrices,
      health: round3(health.score(this.health)), state: this.health.state,
      coolingUntil: this.health.coolingUntil, latencyMs: Math.round(this.health.latencyMs),
    };
    await poolStub(this.env, name).upsert(name, member);
  }

  private leavePool(name: string, keyId: string) {
    return poolStub(this.env, name).remove(name, keyId);
  }

  /** The pool this key serves in now. */
  private poolName(): string {
    const config = this.requireRecord().config;
    return poolName(config.provider, config.region, this.servingTier);
  }

  /** The tier the record earns for a key asking for `asked` (track-record.ts). */
  private tierFor(asked: Tier, current: Tier, now: number, summary = track.summarize(this.track, now, this.record?.createdAt ?? now)): Tier {
    return track.servingTier(asked, current, summary, numberSetting(this.env.PREMIUM_MIN_CALLS, 200));
  }

  /** Move between premium and standard when the record says so (only premium-asking keys move). */
  private retier(now: number) {
    const r = this.record;
    if (!r || r.config.tier !== "premium") return;
    const t = track.summarize(this.track, now, r.createdAt);
    const next = this.tierFor("premium", this.servingTier, now, t);
    if (next === this.servingTier) return;
    const beforePool = this.poolName();
    const before = this.servingTier;
    this.servingTier = next;
    this.writeMeta("servingTier", next);
    this.event("key.tier_changed", `${before} -> ${next}`);
    this.ctx.waitUntil(emitSellerEvent(this.env, r.sellerId, {
      type: "key.tier_changed",
      keyId: r.keyId,
      data: { tier: next, previousTier: before, askedTier: r.config.tier, trackRecord: { calls: t.calls, successRate: round3(t.successRate), uptime: round3(t.uptime) } },
    }));
    this.ctx.waitUntil(this.publish(beforePool).catch((err) => console.error(JSON.stringify({ evt: "pool_publish_failed", error: String(err) }))));
  }

  /** One upstream call's outcome, for the track record (committed with the next batch). */
  private noteCall(ok: boolean) {
    track.recordCall(this.track, Date.now(), ok);
    this.trackDirty = true;
    this.markDirty();
  }

  /** Requests admitted in the sliding minute before `now`; expired ones are dropped. */
  private hitsInWindow(now: number): number {
    const cutoff = now - MINUTE;
    const before = this.hitsStart;
    while (this.hitsStart < this.hits.length && this.hits[this.hitsStart]! <= cutoff) this.hitsStart++;
    if (this.hitsStart > 1024 && this.hitsStart * 2 > this.hits.length) {
      // Compact the array and the table together, in batches rather than per request.
      this.hits = this.hits.slice(this.hitsStart);
      this.hitsStart = 0;
      this.hitsExpiredAt = cutoff;
    } else if (this.hitsStart !== before && this.hitsStart === this.hits.length) {
      this.hits = [];
      this.hitsStart = 0;
      this.hitsExpiredAt = cutoff;
    }
    return this.hits.length - this.hitsStart;
  }

  private spent(period: string): number {
    let micros = this.spendCache.get(period);
    if (micros === undefined) {
      micros = this.sql.exec<{ micros: number }>("SELECT micros FROM spend WHERE period = ?", period).toArray()[0]?.micros ?? 0;
      this.spendCache.set(period, micros);
    }
    return micros;
  }

  private addSpend(period: string, micros: number) {
    if (micros === 0) return;
    this.spendCache.set(period, this.spent(period) + micros);
    this.pendingSpend.set(period, (this.pendingSpend.get(period) ?? 0) + micros);
    this.markDirty();
  }

  /** Credit a served request: the seller's share of what the buyer paid, and the fee (S7). */
  private earn(paid: number, price: number) {
    const { sellerMicros, feeMicros } = paid > 0 ? split(paid, price, feeBps(this.env)) : { sellerMicros: 0, feeMicros: 0 };
    this.pendingEarnings.sellerMicros += sellerMicros;
    this.pendingEarnings.feeMicros += feeMicros;
    this.pendingEarnings.served++;
    this.live.earned(sellerMicros);
    this.markDirty();
  }

  /** Every request that reached the upstream, served or not: the flush alarm follows from here. */
  private recordMeta(m: RequestMeta): RequestMeta {
    this.pendingMeta.push(m);
    this.markDirty();
    this.scheduleFlush();
    return m;
  }

  /** Something waits in memory: commit it within PERSIST_MS (0: at once, per request). */
  private markDirty() {
    if (this.persistPending) return;
    this.persistPending = true;
    const delay = numberSetting(this.env.PERSIST_MS, 250);
    if (delay <= 0) queueMicrotask(() => this.persist());
    else this.persistTimer = setTimeout(() => this.persist(), delay);
  }

  /**
   * Write everything kept in memory since the last batch: synchronous statements, so they
   * land in one storage commit. Called by the timer, and before anything reads these tables.
   */
  private persist() {
    this.cancelPersist();
    // Rows go in as one JSON array per table: one statement per batch, not one per row.
    if (this.pendingHits.length > 0) {
      this.sql.exec("INSERT INTO hits (at) SELECT value FROM json_each(?)", JSON.stringify(this.pendingHits));
      this.pendingHits = [];
    }
    if (this.hitsExpiredAt > 0) {
      this.sql.exec("DELETE FROM hits WHERE at <= ?", this.hitsExpiredAt);
      this.hitsExpiredAt = 0;
    }
    for (const [period, micros] of this.pendingSpend) {
      if (micros !== 0) this.sql.exec("INSERT INTO spend (period, micros) VALUES (?, ?) ON CONFLICT (period) DO UPDATE SET micros = micros + excluded.micros", period, micros);
    }
    this.pendingSpend.clear();
    const e = this.pendingEarnings;
    if (e.served > 0) {
      this.sql.exec(
        `INSERT INTO earnings (id, unflushed_micros, fee_micros, served_count) VALUES (1, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET unflushed_micros = unflushed_micros + excluded.unflushed_micros, fee_micros = fee_micros + excluded.fee_micros, served_count = served_count + excluded.served_count`,
        e.sellerMicros, e.feeMicros, e.served,
      );
      e.sellerMicros = e.feeMicros = e.served = 0;
    }
    const rows = this.pendingMeta;
    if (rows.length > 0) {
      this.pendingMeta = [];
      this.sql.exec(
        `INSERT OR REPLACE INTO request_meta (request_id, at, method, route, status, latency_ms, amount_micros, outcome)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7 FROM json_each(?)`,
        JSON.stringify(rows.map((m) => [m.requestId, m.at, m.method, m.route, m.status, m.latencyMs, m.amountMicros, m.outcome])),
      );
      this.metaRows += rows.length;
      // Past the cap, drop the oldest rows down to it, in batches rather than per request.
      if (this.metaRows > MAX_BUFFERED_META + 500) {
        // rowid is insertion order, which is time order here: no sort of the table.
        this.sql.exec("DELETE FROM request_meta WHERE rowid IN (SELECT rowid FROM request_meta ORDER BY rowid LIMIT ?)", this.metaRows - MAX_BUFFERED_META);
        this.metaRows = MAX_BUFFERED_META;
      }
    }
    for (const [requestId, outcome] of this.pendingOutcomes) this.sql.exec("UPDATE request_meta SET outcome = ? WHERE request_id = ?", outcome, requestId);
    this.pendingOutcomes.clear();
    if (this.healthDirty) {
      this.writeMeta("health", this.health);
      this.healthDirty = false;
    }
    if (this.trackDirty) {
      this.writeMeta("track", this.track);
      this.trackDirty = false;
    }
  }

  private cancelPersist() {
    clearTimeout(this.persistTimer);
    this.persistTimer = undefined;
    this.persistPending = false;
  }

  private discardPending() {
    this.cancelPersist();
    this.pendingHits = [];
    this.hitsExpiredAt = 0;
    this.pendingSpend.clear();
    this.pendingEarnings.sellerMicros = this.pendingEarnings.feeMicros = this.pendingEarnings.served = 0;
    this.pendingMeta = [];
    this.pendingOutcomes.clear();
    this.healthDirty = false;
    this.trackDirty = false;
  }

  private event(kind: string, detail: string) {
    // Rare state changes only, so operators see them in logs; never credentials or bodies.
    console.log(JSON.stringify({ evt: kind, keyId: this.record?.keyId, detail }));
    this.sql.exec("INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)", Date.now(), kind, detail);
    this.sql.exec("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", MAX_EVENTS);
  }

  private requireRecord(): KeyRecord {
    if (!this.record) throw new ApiError("key_not_found", "no such key");
    return this.record;
  }

  private readMeta<T>(k: string): T | null {
    const row = this.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = ?", k).toArray()[0];
    return row ? (JSON.parse(row.v) as T) : null;
  }

  private writeMeta(k: string, value: unknown) {
    this.sql.exec("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", k, JSON.stringify(value));
  }
}

/** Answers read whole instead of piped: a known, small length, not an event stream. */
const READ_WHOLE_MAX = 64 * 1024;
function readWhole(headers: Headers): boolean {
  const length = headers.get("content-length");
  if (length === null || headers.has("content-encoding")) return false;
  const n = Number(length);
  return n <= READ_WHOLE_MAX && !(headers.get("content-type") ?? "").startsWith("text/event-stream");
}

/** What the router says the buyer paid; it always sets the header, so a buyer cannot. */
function paidMicros(request: Request): number {
  const n = Number(request.headers.get(H.paid));
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

function refusal(code: ErrorCode, message: string, requestId: string, retryAfter?: number): Response {
  const headers: Record<string, string> = { [H.refusal]: code };
  if (retryAfter !== undefined) headers["retry-after"] = String(retryAfter);
  return errorResponse(code, message, { requestId, headers });
}

const retryAfterSeconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));
const round3 = (x: number) => Math.round(x * 1000) / 1000;
// Budget periods (UTC day and month), computed once per day rather than per request.
let periodCache = { from: 0, until: 0, day: "", month: "" };
function periods(now: number) {
  if (now < periodCache.from || now >= periodCache.until) {
    const iso = new Date(now).toISOString();
    const from = Date.parse(iso.slice(0, 10));
    periodCache = { from, until: from + 86_400_000, day: `d:${iso.slice(0, 10)}`, month: `m:${iso.slice(0, 7)}` };
  }
  return periodCache;
}
const dayPeriod = (now: number) => periods(now).day;
const monthPeriod = (now: number) => periods(now).month;
