// SellerRoom (S8): one partyserver room per seller (room name = seller id), the live feed of
// the seller dashboard. Key objects push what changed (`push`, an RPC); the room keeps the
// latest state of each key in its SQLite storage, so a new or reconnecting socket gets a
// whole snapshot first, then every change, even after the room hibernated or was evicted.
//
// The room is never on the public internet: the Worker checks the seller session and the
// Origin (worker/live.ts) and forwards only the upgrade for the seller's own room, with the
// seller id in a header the room checks again against its own name.
import { Server, type Connection, type ConnectionContext } from "partyserver";
import * as v from "valibot";
import { RoomUpdateSchema, type KeyLive, type RoomMessage } from "../../schema/room.ts";
import type { Env } from "../../core/env.ts";
import { ROOM_SELLER_HEADER } from "./stub.ts";

/** Set by the Worker after it authenticated the seller; the room refuses any other. */

export class SellerRoom extends Server<Env> {
  static override options = { hibernate: true };
  #tableReady = false;

  /** Latest state per key; created on first use, so `push` needs no onStart. */
  #table(): SqlStorage {
    const sql = this.ctx.storage.sql;
    if (!this.#tableReady) {
      sql.exec("CREATE TABLE IF NOT EXISTS live_keys (key_id TEXT PRIMARY KEY, json TEXT NOT NULL)");
      this.#tableReady = true;
    }
    return sql;
  }

  /**
   * A key object's change: stored, then sent to every connection. Independent of onStart
   * (RPC skips partyserver's start-up); the input is parsed, never trusted.
   */
  async push(update: unknown): Promise<void> {
    const parsed = v.safeParse(RoomUpdateSchema, update);
    if (!parsed.success) throw new Error(`invalid room update: ${parsed.issues[0]?.message ?? "bad input"}`);
    const u = parsed.output;
    if (u.type === "key") this.#table().exec("INSERT OR REPLACE INTO live_keys (key_id, json) VALUES (?, ?)", u.key.keyId, JSON.stringify(u.key));
    else this.#table().exec("DELETE FROM live_keys WHERE key_id = ?", u.keyId);
    this.broadcast(JSON.stringify(u satisfies RoomMessage));
  }

  /** The keys the room knows now (tests, ops). */
  snapshot(): KeyLive[] {
    return this.#table().exec<{ json: string }>("SELECT json FROM live_keys ORDER BY key_id").toArray().map((r) => JSON.parse(r.json) as KeyLive);
  }

  /** Connections now open (tests, the bench). */
  connectionCount(): number {
    return [...this.getConnections()].length;
  }

  override async fetch(request: Request): Promise<Response> {
    // Second check behind the Worker's: only an upgrade the Worker made for this very seller.
    if (request.headers.get(ROOM_SELLER_HEADER) !== this.name) return new Response("forbidden", { status: 403 });
    return super.fetch(request);
  }

  override onConnect(connection: Connection, _ctx: ConnectionContext): void {
    const message: RoomMessage = { type: "snapshot", keys: this.snapshot() };
    connection.send(JSON.stringify(message));
  }

  /** The feed is one-way; anything a page sends is ignored. */
  override onMessage(): void {}
}
