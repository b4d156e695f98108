// The key object's side of the live dashboard (S8): what the seller's room hears from one
// SellerKey. The key calls `changed()` whenever something a seller watches may have moved
// (admission, an answer, health, config); this feed coalesces those into at most one push
// per second, sends only when the KeyLive differs from the last one sent, and sends from a
// timer through ctx.waitUntil, never from the request itself: a slow, throwing or absent
// room costs a proxy request nothing (it never waits on a push, and a failed push is
// logged and retried by the next change).
//
// Requests/min decays without requests; no long timer chases it (a pending timer keeps an
// object from being evicted): the key's flush alarm, which runs EARNINGS_FLUSH_MS after
// traffic, calls `changed()` too, so the count a dashboard shows catches up then.
//
// It also keeps the two numbers only it needs: the seller's earnings this UTC day and the
// last error, in a small table of the key object's own storage, written with each push (at
// most once a second, off the request path). A crash may forget up to a second of the
// display's "earned today"; the ledger itself is the key object's earnings flush.
import type { KeyLive, RoomUpdate } from "../../schema/room.ts";
import type { HealthState, KeyConfig, Tier } from "../../schema/wire.ts";
import type { Env } from "../../core/env.ts";
import { roomStub } from "../seller-room/stub.ts";

/** At most one push per key per this many ms. */
export const LIVE_INTERVAL_MS = 1_000;

/** What the key object knows now, read when a push is due (not per request). */
export interface LiveParts {
  keyId: string;
  sellerId: string;
  config: KeyConfig;
  state: HealthState;
  healthScore: number;
  latencyMs: number;
  requestsPerMinute: number;
  inFlight: number;
  servingTier: Tier;
  trackRecord: { calls: number; successRate: number; uptime: number };
  unflushedMicros: number;
}

interface Stored {
  day: string;
  earnedMicros: number;
  lastError: KeyLive["lastError"];
}

const utcDay = (now: number) => new Date(now).toISOString().slice(0, 10);

export class LiveFeed {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastSentAt = 0;
  /** The last KeyLive sent, without updatedAt, to send only on change. */
  #lastSent = "";
  #sending = false;
  #sendingSince = 0;
  #again = false;
  #stored: Stored;
  #dirty = false;

  private readonly ctx: DurableObjectState;
  private readonly env: Pick<Env, "SELLER_ROOM">;
  private readonly read: () => LiveParts | null;

  constructor(ctx: DurableObjectState, env: Pick<Env, "SELLER_ROOM">, read: () => LiveParts | null) {
    this.ctx = ctx;
    this.env = env;
    this.read = read;
    const sql = ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS live (id INTEGER PRIMARY KEY CHECK (id = 1), v TEXT NOT NULL)");
    const row = sql.exec<{ v: string }>("SELECT v FROM live WHERE id = 1").toArray()[0];
    this.#stored = row ? (JSON.parse(row.v) as Stored) : { day: utcDay(Date.now()), earnedMicros: 0, lastError: null };
  }

  /** Something a seller watches may have changed: push within a second, coalesced. */
  changed(): void {
    if (this.#timer !== undefined) return;
    // One push at a time; a push hung for over 10 s no longer holds the next one back.
    if (this.#sending && Date.now() - this.#sendingSince < 10_000) {
      this.#again = true;
      return;
    }
    this.#schedule(Math.max(0, this.#lastSentAt + LIVE_INTERVAL_MS - Date.now()));
  }

  /** The seller's share of a served request (micro-dollars), for "earned today"; negative when one was reversed (B6). */
  earned(sellerMicros: number, now = Date.now()): void {
    if (sellerMicros === 0) return;
    this.#rollDay(now);
    this.#stored.earnedMicros = Math.max(0, this.#stored.earnedMicros + sellerMicros);
    this.#dirty = true;
    this.changed();
  }

  /** A failure the seller should see (the health reason), and when. */
  failed(reason: string, now = Date.now()): void {
    this.#stored.lastError = { reason: reason.slice(0, 200), at: now };
    this.#dirty = true;
    this.changed();
  }

  /** The key is gone: tell the room now (a rare event), and forget the feed's state. */
  removed(sellerId: string, keyId: string): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#lastSent = "";
    this.#stored = { day: utcDay(Date.now()), earnedMicros: 0, lastError: null };
    this.#dirty = false;
    this.#send(sellerId, { type: "removed", keyId });
  }

  #schedule(delayMs: number) {
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#tick();
    }, delayMs);
  }

  #rollDay(now: number) {
    const day = utcDay(now);
    if (this.#stored.day !== day) {
      this.#stored = { ...this.#stored, day, earnedMicros: 0 };
      this.#dirty = true;
    }
  }

  #tick() {
    const parts = this.read();
    if (!parts) return;
    const now = Date.now();
    this.#rollDay(now);
    if (this.#dirty) {
      this.ctx.storage.sql.exec("INSERT OR REPLACE INTO live (id, v) VALUES (1, ?)", JSON.stringify(this.#stored));
      this.#dirty = false;
    }
    const key = this.view(parts, now);
    const { updatedAt: _, ...compared } = key;
    const fingerprint = JSON.stringify(compared);
    if (fingerprint === this.#lastSent) return;
    this.#lastSent = fingerprint;
    this.#lastSentAt = now;
    this.#send(parts.sellerId, { type: "key", key });
  }

  /** The KeyLive for these parts (exported through the class for the room's first snapshot). */
  view(p: LiveParts, now = Date.now()): KeyLive {
    return {
      keyId: p.keyId,
      provider: p.config.provider,
      region: p.config.region,
      status: p.config.status,
      state: p.state,
      healthScore: p.healthScore,
      latencyMs: Math.max(0, Math.round(p.latencyMs)),
      requestsPerMinute: p.requestsPerMinute,
      inFlight: p.inFlight,
      servingTier: p.servingTier,
      askedTier: p.config.tier,
      trackRecord: p.trackRecord,
      lastError: this.#stored.lastError,
      earningsTodayMicros: this.#stored.day === utcDay(now) ? this.#stored.earnedMicros : 0,
      unflushedMicros: p.unflushedMicros,
      priceMicros: p.config.priceMicros,
      updatedAt: now,
    };
  }

  /** One push, in the background; its failure is logged (kind only) and never thrown. */
  #send(sellerId: string, update: RoomUpdate) {
    this.#sending = true;
    this.#sendingSince = Date.now();
    const room = roomStub(this.env, sellerId);
    const done = (async () => {
      try {
        await room.push(update);
      } catch (error) {
        // The room is down or refused: the next change pushes the whole state again.
        this.#lastSent = "";
        console.error(JSON.stringify({ evt: "room_push_failed", keyId: update.type === "key" ? update.key.keyId : update.keyId, error: error instanceof Error ? error.name : "unknown" }));
      } finally {
        this.#sending = false;
        if (this.#again) {
          this.#again = false;
          this.changed();
        }
      }
    })();
    this.ctx.waitUntil(done);
  }
}
