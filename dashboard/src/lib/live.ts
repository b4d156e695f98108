// The live feed: one partysocket to the seller's own room (GET /api/live/<seller id>,
// same origin, so the browser sends the session cookie and our Origin). partysocket
// reconnects by itself; every (re)connection starts with a snapshot, so the page's state
// is replaced, never patched from a stale base. Every message is parsed with the schema
// the room and the key objects share (schema/room.ts).
import { useState } from "react";
import usePartySocket from "partysocket/react";
import * as v from "valibot";
import { LIVE_PATH, RoomMessageSchema, type KeyLive } from "../../../schema/room.ts";

export type LiveStatus = "connecting" | "live" | "reconnecting";

export function useLiveKeys(sellerId: string | undefined) {
  const [keys, setKeys] = useState<ReadonlyMap<string, KeyLive>>(new Map());
  const [status, setStatus] = useState<LiveStatus>("connecting");
  usePartySocket({
    host: location.host,
    protocol: location.protocol === "https:" ? "wss" : "ws",
    basePath: `${LIVE_PATH.slice(1)}/${sellerId ?? "none"}`,
    enabled: sellerId !== undefined,
    onOpen: () => setStatus("live"),
    onClose: () => setStatus("reconnecting"),
    onMessage(event: MessageEvent) {
      const parsed = v.safeParse(RoomMessageSchema, safeJson(event.data));
      if (!parsed.success) return; // a message this page does not know: ignore, never guess
      const m = parsed.output;
      setKeys((prev) => {
        if (m.type === "snapshot") return new Map(m.keys.map((k) => [k.keyId, k]));
        const next = new Map(prev);
        if (m.type === "key") next.set(m.key.keyId, m.key);
        else next.delete(m.keyId);
        return next;
      });
    },
  });
  return { keys, status };
}

function safeJson(data: unknown): unknown {
  try {
    return typeof data === "string" ? JSON.parse(data) : null;
  } catch {
    return null;
  }
}
