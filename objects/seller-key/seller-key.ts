// One seller key = one Durable Object. A single-threaded object is the right atom here:
// it can count requests per minute, in-flight requests and budget spend exactly, with
// no coordination, and it is the only place the decrypted credential ever exists (in
// memory, never in storage). Admission (admission.ts) runs synchronously before the
// first await, so concurrent requests cannot both pass a limit that only one of them fits.
//
// This file is the class: its RPC methods (seller and ops) and fetch(), the proxy path.
// Beside it: admission.ts (the pure admission decision), write-buffer.ts (storage and the
// batched per-request bookkeeping), upstream.ts (first-byte deadline, reading, status
// classes), health.ts and track-record.ts (pure models), earnings-flush.ts (to Postgres),
// stub.ts (where a key's object and ciphertext live).
import { DurableObject } from "cloudflare:workers";
import * as v from "valibot";
import { PROVIDERS, upstreamBase } from "../../schema/providers.ts";
import {
  H, KeyConfigPatchSchema, KeyConfigSchema, poolName,
  type Envelope, type ErrorCode, type Home, type KeyConfig, type KeyInspection,
  type KeyView, type PoolMember, type RequestMeta, type Tier,
} from "../../schema/wire.ts";
import type { Env } from "../../core/env.ts";
import { ApiError, attempt, errorResponse, splitUrl, type Result } from "../../core/http.ts";
import { buyerResponse, upstreamHeaders, upstreamUrl } from "../../core/forward.ts";
import { decryptCredential, parseVaultPrivateKeys, VaultError } from "../../core/vault.ts";
import { numberSetting, upstreamOverrides } from "../../core/settings.ts";
import { feeBps, split } from "../../core/money.ts";
import { emitSellerEvent } from "../../core/emit-event.ts";
import { vaultEntryKey, type VaultMetadata } from "./stub.ts";
import { admit, retryAfterSeconds } from "./admission.ts";
import { periods, WriteBuffer, type KeyDraw } from "./write-buffer.ts";
import { classifyStatus, FirstByteWatch, readWhole } from "./upstream.ts";
import * as health from "./health.ts";
import * as track from "./track-record.ts";
import { poolStub } from "../pool-index/stub.ts";
import { walletStub } from "../buyer-wallet/stub.ts";
import { EarningsFlusher, FLUSH_ROWS, toMeta, type FlushOutcome } from "./earnings-flush.ts";
import { AnalyticsOutbox, type DrainResult } from "./analytics-outbox.ts";
import { LiveFeed, type LiveParts } from "./live.ts";

/** The next flush after one that left rows behind, or after a flush's worth piled up. */
const MORE_FLUSH_MS = 1_000;
/** Tabs per draw report to one wallet (BuyerWallet.reportTabs takes up to 1,000). */
const REPORT_TABS = 200;
/**
 * The flush alarm reports a tab draw to its wallet once it is this old. A living router
 * closes its tab within TAB_MAX_MS (10 s) of opening it, and the close claims every draw:
 * a report before then repeats the close's claims in a commit of its own, one per buyer
 * and key at every flush (with 50 busy buyers, most of the wallets' commits: docs/bench.md,
 * seventh pass). A tab its router never closed is settled TAB_SETTLE_GRACE_MS (5 min) after
 * it expired, long after these reports arrive. Removal and explicit flushes report all.
 */
export const REPORT_AFTER_MS = 30_000;

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
  /** Storage and the batched per-request bookkeeping (write-buffer.ts). */
  private readonly buffer: WriteBuffer;
  // Earnings + metadata flush to Postgres (objects/seller-key/earnings-flush.ts), from an alarm.
  private readonly flusher: EarningsFlusher;
  private flushAlarmSet = false;
  /** The flush was brought forward for rows piling up (recordMeta); cleared when the alarm runs. */
  private flushSoon = false;
  private flushRetryMs = 0;
  // Flushed metadata on its way to the analytics queue (analytics-outbox.ts), drained after each flush.
  private readonly outbox: AnalyticsOutbox;
  private sinkRetryMs = 0;
  /** Upstream calls waiting for their first byte (upstream.ts). */
  private readonly firstByte = new FirstByteWatch();
  /** Pushes to the seller's live room, coalesced and off the request path (live.ts). */
  private readonly live: LiveFeed;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.buffer = new WriteBuffer(ctx.storage.sql, () => this.env.PERSIST_MS, () => ({ health: this.health, track: this.track }));
    this.record = this.buffer.readMeta<KeyRecord>("record");
    this.health = this.buffer.readMeta<health.Health>("health") ?? health.initialHealth();
    this.track = this.buffer.readMeta<track.TrackRecord>("track") ?? track.emptyTrackRecord();
    this.servingTier = this.buffer.readMeta<Tier>("servingTier") ?? this.tierFor(this.record?.config.tier ?? "standard", "standard", Date.now());
    this.outbox = new AnalyticsOutbox(ctx.storage);
    this.flusher = new EarningsFlusher(ctx.storage, (metaThrough, held) => this.outbox.keep(metaThrough, held));
    this.live = new LiveFeed(ctx, env, () => this.liveParts());
  }

  // ---- seller / ops RPC -------------------------------------------------------------

  // Public methods that can refuse return Result (see core/http.ts).
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

  /**
   * Operator action: reset this object as a crash or an eviction would (memory gone,
   * storage kept; in-flight requests fail and the router fails over or refunds). For a
   * stuck key, and for the soak's fault injection (bench/soak.ts). The call itself fails.
   */
  restart(): void {
    this.ctx.abort("restarted by operator");
  }

  /**
   * B6, from the router: this request's answer broke off before its first byte reached the
   * router (an upstream that failed right after its headers, this object restarted while
   * answering), so nothing reached the buyer, who is refunded. Reverse what it earned, from
   * storage (so also after a restart), as long as the earnings flush has not taken it yet;
   * `voided: false` means there was nothing to reverse, and the charge stands.
   */
  undelivered(requestId: string): Promise<Result<{ voided: boolean }>> {
    return attempt(async () => {
      const reversed = this.buffer.voidEarning(this.ctx.storage, requestId);
      if (reversed) {
        this.live.earned(-reversed.sellerMicros);
        this.event("request.undelivered", requestId);
      }
      return { voided: reversed !== null };
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

  /**
   * The flush alarm: set after a request; on failure retried with backoff, indefinitely.
   * Then the analytics outbox is drained (it never fails the flush); rows it could not
   * enqueue bring the alarm back, with their own backoff.
   */
  override async alarm(): Promise<void> {
    this.flushAlarmSet = false;
    this.flushSoon = false;
    if (!this.record) return;
    this.live.changed(); // requests/min has decayed since the traffic: the room hears it
    let failed = false;
    let more = false;
    try {
      more = (await this.flushOnce()).more;
      this.flushRetryMs = 0;
    } catch (error) {
      failed = true;
      this.flushRetryMs = Math.min(Math.max(this.flushRetryMs * 2, 5_000), 3_600_000);
      console.error(JSON.stringify({ evt: "earnings_flush_failed", keyId: this.record.keyId, error: error instanceof ApiError ? error.code : error instanceof Error ? error.name : "unknown", retryInMs: this.flushRetryMs }));
    }
    // Draws the flush made final go to their wallets, whether or not Postgres took the flush,
    // once REPORT_AFTER_MS old (their routers' closes have claimed them by then).
    if (!(await this.reportDraws(REPORT_AFTER_MS))) failed = true;
    const sinkLeft = (await this.drainAnalytics()).left > 0;
    this.sinkRetryMs = sinkLeft ? Math.min(Math.max(this.sinkRetryMs * 2, 5_000), 3_600_000) : 0;
    if (failed) this.scheduleFlush(sinkLeft ? Math.min(this.flushRetryMs, this.sinkRetryMs) : this.flushRetryMs, true);
    else if (more) this.scheduleFlush(MORE_FLUSH_MS);
    else if (sinkLeft) this.scheduleFlush(this.sinkRetryMs);
    // Draws too young to report: the alarm comes back for them, traffic or not.
    else if (this.buffer.unreportedDraws() > 0) this.scheduleFlush(REPORT_AFTER_MS);
  }

  /**
   * Report the tab draws no longer reversible and at least `minAgeMs` old to the wallets
   * they were drawn from (a router that never closed its tab is settled on them). Never
   * throws; true when none of those is left.
   */
  private async reportDraws(minAgeMs = 0): Promise<boolean> {
    const before = Date.now() - minAgeMs;
    for (let round = 0; round < 20; round++) {
      const groups = this.buffer.drawsToReport(before);
      if (groups.length === 0) return true;
      // One call per buyer, whatever number of tabs it drew on (one commit in its wallet).
      const byBuyer = new Map<string, typeof groups>();
      for (const g of groups) {
        const mine = byBuyer.get(g.buyerId);
        if (mine) mine.push(g);
        else byBuyer.set(g.buyerId, [g]);
      }
      for (const [buyerId, all] of byBuyer) for (let i = 0; i < all.length; i += REPORT_TABS) {
        const tabs = all.slice(i, i + REPORT_TABS);
        try {
          const result = await walletStub(this.env, buyerId).reportTabs(tabs.map((g) => ({ tabId: g.tabId, draws: g.draws })));
          if (!result.ok) throw new Error(result.code);
        } catch (error) {
          console.error(JSON.stringify({ evt: "draw_report_failed", keyId: this.record?.keyId, tabs: tabs.length, error: error instanceof Error ? error.message.slice(0, 40) : "unknown" }));
          return false;
        }
        this.buffer.reported(tabs.flatMap((g) => g.draws.map((d) => d.requestId)));
      }
    }
    return this.buffer.drawsToReport(before).length === 0;
  }

  /** Enqueue the flushed rows waiting for the analytics sink. Never throws. */
  private drainAnalytics(): Promise<DrainResult> {
    const r = this.record;
    if (!r) return Promise.resolve({ sent: 0, left: 0 });
    return this.outbox.drain(this.env, { keyId: r.keyId, provider: r.config.provider });
  }

  private async flushOnce(): Promise<FlushOutcome> {
    const r = this.requireRecord();
    this.buffer.persist();
    try {
      return await this.flusher.flush(this.env, { keyId: r.keyId, sellerId: r.sellerId, provider: r.config.provider, createdAt: r.createdAt }, () => this.buffer.heldIds());
    } catch (error) {
      if (error instanceof ApiError) throw error;
      const state = (error as { code?: unknown }).code;
      throw new ApiError("db_unavailable", `earnings could not be flushed to the ledger${typeof state === "string" ? ` (${state})` : ""}; try again`);
    } finally {
      this.buffer.recountMeta();
    }
  }

  /** Flush until nothing is left, then drain the analytics outbox; the last outcome (with the total rows) is returned. */
  private async flushAll(): Promise<FlushOutcome> {
    let outcome = await this.flushOnce();
    let rows = outcome.metadataRows;
    let amount = outcome.amountMicros;
    while (outcome.more) {
      outcome = await this.flushOnce();
      rows += outcome.metadataRows;
      amount += outcome.amountMicros;
    }
    // Removal follows a retire: no draw may be lost with this object's storage.
    if (!(await this.reportDraws())) throw new ApiError("wallet_unavailable", "tab draws could not be reported to their wallets; try again");
    const sink = await this.drainAnalytics();
    // Rows the queue did not take wait for the next alarm.
    if (sink.left > 0) this.scheduleFlush(5_000);
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
    this.buffer.writeMeta("record", this.record);
    this.servingTier = this.tierFor(input.config.tier, "standard", Date.now());
    this.buffer.writeMeta("servingTier", this.servingTier);
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
    return {
      keyId: r.keyId, sellerId: r.sellerId, config: r.config, state: v.health.state, healthScore: v.health.score, latencyMs: v.health.latencyMs,
      requestsPerMinute: this.buffer.hitsInWindow(Date.now()), inFlight: this.inFlight, servingTier: this.servingTier,
      trackRecord: { calls: v.trackRecord!.calls, successRate: v.trackRecord!.successRate, uptime: v.trackRecord!.uptime },
      unflushedMicros: this.buffer.unflushedSellerMicros(),
    };
  }

  private inspection(): KeyInspection {
    const r = this.requireRecord();
    this.buffer.persist();
    const now = Date.now();
    const earnings = this.buffer.earnings();
    const { day, month } = periods(now);
    return {
      ...this.view(),
      limiter: { windowCount: this.buffer.hitsInWindow(now), requestsPerMinute: r.config.requestsPerMinute },
      inFlight: this.inFlight,
      maxConcurrent: r.config.maxConcurrent,
      spend: { dayMicros: this.buffer.spent(day), monthMicros: this.buffer.spent(month) },
      earnings: { unflushedMicros: earnings?.unflushed_micros ?? 0, feeMicros: earnings?.fee_micros ?? 0, servedCount: earnings?.served_count ?? 0 },
      bufferedMetadata: this.buffer.countMeta(),
      analyticsOutbox: this.outbox.size(),
      credentialLoaded: this.credential !== null,
      events: this.buffer.events(),
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
    this.buffer.writeMeta("record", this.record);
    const tier = this.tierFor(config.tier, this.servingTier, Date.now());
    if (tier !== this.servingTier) {
      this.servingTier = tier;
      this.buffer.writeMeta("servingTier", tier);
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
    this.flushAlarmSet = false;
    this.flushSoon = false;
    await this.ctx.storage.deleteAlarm();
    await this.buffer.clear(this.ctx.storage);
  }

  /** Metadata rows not yet flushed (oldest first); the flush job consumes them. */
  bufferedMeta(limit = 1000): RequestMeta[] {
    this.buffer.persist();
    return this.ctx.storage.sql.exec<Record<string, string | number>>("SELECT * FROM request_meta ORDER BY at LIMIT ?", limit).toArray().map(toMeta);
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
    const paid = paidMicros(request);
    const draw = paid > 0 ? tabDraw(request, paid, requestId, now) : undefined;
    const { day, month } = periods(now);

    // Admission: synchronous, so it is exact under concurrency.
    const buffer = this.buffer;
    const inWindow = buffer.hitsInWindow(now);
    const verdict = admit({
      config, defaultRoutes: provider.defaultRoutes, health: this.health, probeInFlight: this.probeInFlight,
      inFlight: this.inFlight, inWindow, oldestHit: buffer.oldestHit(), spentDay: buffer.spent(day),
      spentMonth: buffer.spent(month), paid, method, path, now,
    });
    if (!verdict.ok) return refusal(verdict.code, verdict.message, requestId, verdict.retryAfterSeconds);
    const { price, probe: isProbe } = verdict;

    // Admitted: count it and reserve the budget; released if nothing is served.
    buffer.hit(now);
    buffer.addSpend(day, price);
    buffer.addSpend(month, price);
    this.inFlight++;
    this.live.changed();
    if (isProbe) this.probeInFlight = true;
    /** A paid request's earning, draw and metadata row were booked as its upstream call left. */
    let booked = false;
    let released = false;
    const release = (served: boolean) => {
      if (released) return;
      released = true;
      this.inFlight--;
      this.live.changed();
      if (isProbe) this.probeInFlight = false;
      if (!served) {
        buffer.addSpend(day, -price);
        buffer.addSpend(month, -price);
        // Not served after all: the booking is reversed, in a commit the refusal waits for
        // (the output gate), so no refund leaves while the earning still stands.
        if (booked) this.unbook(requestId);
      }
    };
    // latencyMs: to the upstream's first byte; durationMs: to the answer's last byte, once known.
    const record = (status: number, latencyMs: number, outcome: RequestMeta["outcome"], amount: number, durationMs: number | null = null) =>
      // A booked request's later rows replace its booking's row (one row in storage).
      this.recordMeta({ requestId, at: now, method, route: path, status, latencyMs, durationMs, amountMicros: amount, outcome }, booked);

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
    const call = this.firstByte.start(timeoutMs, request.signal);
    let upstream: Response;
    let bookedCommit: Promise<void> | null = null;
    let bookedDone = false;
    try {
      const answer = fetch(upstreamUrl(upstreamBase(provider, upstreamOverrides(this.env)), path, search, provider), {
        method,
        headers: upstreamHeaders(provider, request.headers, credential),
        body: method === "GET" || method === "HEAD" ? undefined : request.body,
        signal: call.controller.signal,
      });
      if (paid > 0) {
        // Booked as the call leaves, not once it answers: the commit then runs while the
        // provider works, instead of holding the answer after it (in production a
        // replicated write). After fetch(), so that the output gate does not hold the call.
        // The row says what is known now (status 0 until the answer's row replaces it); a
        // failed call reverses all of it (release), and the flush leaves it alone meanwhile.
        this.earn(paid, price, requestId, draw);
        record(0, 0, "served", paid);
        buffer.hold(requestId);
        booked = true;
        bookedCommit = buffer.committed();
        bookedCommit.then(() => void (bookedDone = true), () => {});
      }
      upstream = await answer;
    } catch {
      this.firstByte.done(call);
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
    this.firstByte.done(call);
    const latency = Date.now() - started;
    const status = upstream.status;

    const kind = classifyStatus(status);
    if (kind !== "served") {
      await upstream.body?.cancel();
      release(false);
      record(status, latency, "upstream_error", 0);
      this.noteCall(false);
      if (kind === "rate_limited") {
        this.setHealth(health.onRateLimited(this.health, upstream.headers.get("retry-after"), Date.now()), "key.cooling", "upstream 429");
        return refusal("rate_limited", "upstream rate limited this key", requestId, retryAfterSeconds(this.health.coolingUntil - Date.now()));
      }
      if (kind === "credential_refused") {
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
    // Only a successful answer is charged (the router refunds the rest), so only it keeps
    // its booking; an unpaid (operator) answer counts as served now.
    const served = status < 400;
    const charged = served ? paid : 0;
    if (!served) release(false);
    else if (booked) buffer.settle(requestId);
    else this.earn(0, price, requestId);
    this.noteCall(true);
    this.setHealth(health.onSuccess(this.health, latency), this.health.state === "cooling" ? "key.recovered" : null, "probe succeeded");
    const ours = { [H.price]: String(price), [H.requestId]: requestId };
    // Recorded now, in the same batch as the earnings; a cut stream amends the outcome. An
    // answer read whole (or without a body) is complete: its time to the last byte is known.
    const row = record(status, latency, "served", charged, whole !== null || !upstream.body ? Date.now() - started : null);
    // Money is never left to the batch: a paid answer's booking (earnings, tab draw, and
    // its metadata row, the dispute trail) is committed before the answer goes out (the
    // group commit, then the output gate); one still waiting for others is written now. A
    // storage failure throws here: the router sees the key object fail and refunds.
    if (charged > 0 && bookedCommit !== null) {
      if (!bookedDone) buffer.commitNow();
      await bookedCommit;
    }
    if (whole !== null || !upstream.body) {
      release(served);
      return buyerResponse(provider, upstream, whole, ours);
    }
    // Stream through untouched; the pipe's outcome tells a clean end from a cut. workerd's
    // native byte pipe: cheaper than a JS TransformStream (bench --profile, do+identity).
    const { readable, writable } = new IdentityTransformStream();
    upstream.body.pipeTo(writable).then(
      () => {
        release(served);
        // The stream ended cleanly: its row again, now with the time to the last byte.
        this.recordMeta({ ...row, durationMs: Date.now() - started });
      },
      () => {
        const buyerLeft = request.signal.aborted;
        // A stream cut after bytes were sent stays charged; the metadata row is the dispute trail.
        release(served);
        row.outcome = buyerLeft ? "client_abort" : "stream_cut";
        buffer.amendOutcome(requestId, row.outcome);
        if (!buyerLeft) {
          track.recordLateFailure(this.track, Date.now());
          buffer.changed("track");
          this.failure("stream_cut", false);
          this.event("request.stream_cut", requestId);
        }
      },
    );
    return buyerResponse(provider, upstream, readable, ours);
  }

  // ---- internals ---------------------------------------------------------------------

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
      this.buffer.writeMeta("health", next);
      if (before.state !== next.state) this.buffer.writeMeta("track", this.track);
    } else {
      this.buffer.changed("health");
    }
    if (eventKind) this.event(eventKind, detail);
    // Tell the seller (S6 webhooks): key.disabled / key.health_changed / key.recovered on a state change.
    const notice = eventKind && this.record ? health.keyHealthNotice(eventKind, this.record.keyId, before, next, detail) : null;
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
    this.buffer.writeMeta("servingTier", next);
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
    this.buffer.changed("track");
  }

  /** Reverse a booked request that was not served (its refusal waits for the commit). */
  private unbook(requestId: string) {
    const reversed = this.buffer.voidEarning(this.ctx.storage, requestId);
    if (reversed) this.live.earned(-reversed.sellerMicros);
  }

  /** Credit a served request: the seller's share of what the buyer paid, and the fee (S7). */
  private earn(paid: number, price: number, requestId: string, draw?: KeyDraw) {
    const { sellerMicros, feeMicros } = paid > 0 ? split(paid, price, feeBps(this.env)) : { sellerMicros: 0, feeMicros: 0 };
    this.buffer.earn(sellerMicros, feeMicros, requestId, paid > 0 ? draw : undefined);
    this.live.earned(sellerMicros);
  }

  /** Every request that reached the upstream, served or not: the flush alarm follows from here. */
  private recordMeta(m: RequestMeta, replaces = false): RequestMeta {
    this.buffer.recordMeta(m, replaces);
    // A busy key fills a flush's worth of rows long before EARNINGS_FLUSH_MS: its flush is
    // brought forward, so that its rows reach Postgres rather than the cap (MAX_BUFFERED_META
    // drops the oldest). At the pace of a flush that leaves more behind (a second), which
    // keeps paid earnings reversible (B6) as long as before. Not while flushes fail: their
    // backoff stands, and the cap with it.
    if (!this.flushSoon && this.flushRetryMs === 0 && this.buffer.bufferedMetaRows() >= FLUSH_ROWS) {
      this.flushSoon = true;
      this.scheduleFlush(MORE_FLUSH_MS, true);
    } else this.scheduleFlush();
    return m;
  }

  private event(kind: string, detail: string) {
    this.buffer.event(kind, detail, this.record?.keyId);
  }

  private requireRecord(): KeyRecord {
    if (!this.record) throw new ApiError("key_not_found", "no such key");
    return this.record;
  }
}

/** What the router says the buyer paid; it always sets the header, so a buyer cannot. */
function paidMicros(request: Request): number {
  const n = Number(request.headers.get(H.paid));
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/** The tab this paid request was drawn on, as the router says (H.tab); undefined when none. */
function tabDraw(request: Request, paid: number, requestId: string, at: number): KeyDraw | undefined {
  const [tabId, buyerId, proofId, expires] = (request.headers.get(H.tab) ?? "").split(" ");
  const expiresAt = Number(expires);
  if (!tabId || !buyerId || !proofId || !Number.isSafeInteger(expiresAt)) return undefined;
  return { tabId, buyerId, draw: { proofId, requestId, amountMicros: paid, at, expiresAt } };
}

function refusal(code: ErrorCode, message: string, requestId: string, retryAfter?: number): Response {
  const headers: Record<string, string> = { [H.refusal]: code };
  if (retryAfter !== undefined) headers["retry-after"] = String(retryAfter);
  return errorResponse(code, message, { requestId, headers });
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
