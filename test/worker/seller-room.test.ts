// The live seller room (S8): who may connect (checked by the Worker before any upgrade
// reaches a room), snapshot then changes, coalescing (at most one message per key per
// second, counted), and a key object that keeps serving while its room throws or hangs.
// Real WebSockets through the Worker's entry to the SellerRoom Durable Object.
import { env } from "cloudflare:workers";
import { evictDurableObject } from "cloudflare:test";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import * as v from "valibot";
import { SellerRoom } from "../../objects/seller-room/seller-room.ts";
import { RoomMessageSchema, type KeyLive, type RoomMessage } from "../../schema/room.ts";
import { addKey, as, chat, removeAllKeys, signIn, worker, type TestSeller } from "./helpers.ts";

const ORIGIN = "https://cn2.test";
const roomNs = (env as unknown as { SELLER_ROOM: DurableObjectNamespace }).SELLER_ROOM;
const roomOf = (sellerId: string) => roomNs.get(roomNs.idFromName(sellerId));

function liveRequest(room: string, headers: Record<string, string>) {
  return worker().fetch(`${ORIGIN}/api/live/${room}`, { headers: { upgrade: "websocket", ...headers } });
}
const cookieOf = (seller: TestSeller) => `__Host-cn2_session=${seller.token}`;

interface Live {
  messages: RoomMessage[];
  /** Resolves with the first message (from the start) that matches. */
  until(match: (m: RoomMessage) => boolean, what: string): Promise<RoomMessage>;
  close(): void;
}

async function openLive(seller: TestSeller): Promise<Live> {
  const res = await liveRequest(seller.id, { origin: ORIGIN, cookie: cookieOf(seller) });
  expect(res.status).toBe(101);
  const ws = res.webSocket!;
  const messages: RoomMessage[] = [];
  const waiters: (() => void)[] = [];
  ws.accept();
  ws.addEventListener("message", (event) => {
    // Every message must match the one schema the page parses with.
    messages.push(v.parse(RoomMessageSchema, JSON.parse(event.data as string)));
    for (const w of waiters.splice(0)) w();
  });
  return {
    messages,
    async until(match, what) {
      for (let i = 0; i < 400; i++) {
        const found = messages.find(match);
        if (found) return found;
        await Promise.race([new Promise<void>((r) => waiters.push(r)), new Promise((r) => setTimeout(r, 50))]);
      }
      throw new Error(`no room message: ${what}; got ${JSON.stringify(messages).slice(0, 500)}`);
    },
    close: () => ws.close(1000, "done"),
  };
}

const keyMessages = (live: Live, keyId: string) =>
  live.messages.filter((m): m is Extract<RoomMessage, { type: "key" }> => m.type === "key" && m.key.keyId === keyId).map((m) => m.key);

describe("SellerRoom: who may connect", () => {
  let owner: TestSeller;
  let other: TestSeller;
  beforeAll(async () => {
    owner = await signIn("room-owner");
    other = await signIn("room-other");
  });

  it("refuses an upgrade without a session (401, no WebSocket)", async () => {
    const res = await liveRequest(owner.id, { origin: ORIGIN });
    expect(res.status).toBe(401);
    expect(res.webSocket).toBeNull();
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unauthorized");
  });

  it("refuses another seller's session for this seller's room (403)", async () => {
    const res = await liveRequest(owner.id, { origin: ORIGIN, cookie: cookieOf(other) });
    expect(res.status).toBe(403);
    expect(res.webSocket).toBeNull();
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("forbidden");
  });

  it("refuses a foreign Origin, and a missing one, even with the owner's cookie (cross-site WebSocket hijacking)", async () => {
    for (const origin of ["https://evil.example", null]) {
      const res = await liveRequest(owner.id, { cookie: cookieOf(owner), ...(origin ? { origin } : {}) });
      expect(res.status).toBe(403);
      expect(res.webSocket).toBeNull();
    }
  });

  it("refuses a request that is not an upgrade", async () => {
    const res = await worker().fetch(`${ORIGIN}/api/live/${owner.id}`, { headers: { origin: ORIGIN, cookie: cookieOf(owner) } });
    expect(res.status).toBe(400);
  });

  it("refuses a closed account's still-valid session (410)", async () => {
    const closing = await signIn("room-closing");
    const del = await as(closing, "/api/account", { method: "DELETE" });
    expect(del.status).toBe(200);
    const res = await liveRequest(closing.id, { origin: ORIGIN, cookie: cookieOf(closing) });
    expect(res.status).toBe(410);
  });

  it("the room itself refuses an upgrade that did not come through the Worker's check", async () => {
    const res = await roomOf(owner.id).fetch("https://seller-room/api/live/x", { headers: { upgrade: "websocket" } });
    expect(res.status).toBe(403);
  });

  it("accepts the owner's session from our own Origin", async () => {
    const live = await openLive(owner);
    const first = await live.until(() => true, "snapshot");
    expect(first).toEqual({ type: "snapshot", keys: [] });
    live.close();
  });
});

describe("SellerRoom: snapshot, then changes", () => {
  let seller: TestSeller;
  beforeAll(async () => {
    seller = await signIn("room-live");
  });
  afterAll(removeAllKeys);

  it("a new connection gets a snapshot of the seller's keys first, then each change, then removal", async () => {
    const { keyId } = await addKey({ seller, config: { priceMicros: 1000 } });
    // Key creation pushes the key to the room (within a second).
    const before = await openLive(seller);
    await before.until((m) => (m.type === "snapshot" && m.keys.some((k) => k.keyId === keyId)) || (m.type === "key" && m.key.keyId === keyId), "the new key");
    before.close();

    const live = await openLive(seller);
    const first = await live.until(() => true, "first message");
    expect(first.type).toBe("snapshot");
    const snap = (first as Extract<RoomMessage, { type: "snapshot" }>).keys.find((k) => k.keyId === keyId)!;
    expect(snap).toMatchObject({ keyId, status: "active", state: "healthy", askedTier: "standard", servingTier: "standard", priceMicros: 1000 });

    for (let i = 0; i < 3; i++) expect((await chat()).status).toBe(200);
    const moved = (await live.until((m) => m.type === "key" && m.key.keyId === keyId && m.key.requestsPerMinute === 3 && m.key.inFlight === 0, "three requests counted")) as { key: KeyLive };
    expect(moved.key.trackRecord.calls).toBeGreaterThanOrEqual(3);
    expect(moved.key.latencyMs).toBeGreaterThanOrEqual(0);

    // A config edit reaches the room too.
    expect((await as(seller, `/api/keys/${keyId}/pause`, { method: "POST" })).status).toBe(200);
    await live.until((m) => m.type === "key" && m.key.keyId === keyId && m.key.status === "paused", "paused");

    expect((await as(seller, `/api/keys/${keyId}`, { method: "DELETE" })).status).toBe(200);
    await live.until((m) => m.type === "removed" && m.keyId === keyId, "removed");
    live.close();
    // The room forgot it: the next connection's snapshot does not list it.
    const after = await openLive(seller);
    const snapAfter = await after.until(() => true, "snapshot");
    expect(snapAfter).toEqual({ type: "snapshot", keys: [] });
    after.close();
  });
});

describe("SellerRoom: hibernation", () => {
  let seller: TestSeller;
  beforeAll(async () => {
    seller = await signIn("room-sleep");
  });
  afterAll(removeAllKeys);

  it("a socket survives the room's hibernation and eviction: changes still arrive, and a new socket's snapshot comes from storage", async () => {
    const { keyId } = await addKey({ seller });
    const live = await openLive(seller);
    await live.until((m) => (m.type === "snapshot" && m.keys.some((k) => k.keyId === keyId)) || (m.type === "key" && m.key.keyId === keyId), "the key");
    // The room's instance is torn down; its socket hibernates instead of closing.
    await evictDurableObject(roomOf(seller.id), { webSockets: "hibernate" });
    const before = live.messages.length;
    for (let i = 0; i < 2; i++) expect((await chat()).status).toBe(200);
    await live.until((m) => live.messages.indexOf(m) >= before && m.type === "key" && m.key.keyId === keyId && m.key.requestsPerMinute === 2, "a change after hibernation");
    await evictDurableObject(roomOf(seller.id), { webSockets: "hibernate" });
    const fresh = await openLive(seller);
    const snap = (await fresh.until(() => true, "snapshot")) as Extract<RoomMessage, { type: "snapshot" }>;
    expect(snap.type).toBe("snapshot");
    expect(snap.keys.find((k) => k.keyId === keyId)?.requestsPerMinute).toBe(2);
    fresh.close();
    live.close();
  });
});

describe("SellerRoom: coalescing", () => {
  let seller: TestSeller;
  beforeAll(async () => {
    seller = await signIn("room-burst");
  });
  afterAll(removeAllKeys);

  it("1,000 requests give at most one message per key per second, and the last one counts them all", async () => {
    const keys = [
      (await addKey({ seller, config: { requestsPerMinute: 100_000, maxConcurrent: 1000 } })).keyId,
      (await addKey({ seller, config: { requestsPerMinute: 100_000, maxConcurrent: 1000 } })).keyId,
    ];
    const live = await openLive(seller);
    await live.until((m) => m.type === "snapshot", "snapshot");
    const started = Date.now();
    let ok = 0;
    for (let batch = 0; batch < 20; batch++) {
      const answers = await Promise.all(Array.from({ length: 50 }, () => chat()));
      for (const a of answers) {
        if (a.status === 200) ok++;
        await a.arrayBuffer();
      }
    }
    expect(ok).toBe(1000);
    // Wait until the room has heard the final state of both keys: together they served 1,000.
    const finalOf = (keyId: string) => keyMessages(live, keyId).at(-1);
    for (let i = 0; i < 200; i++) {
      const last = keys.map(finalOf);
      if (last.every((k) => k && k.inFlight === 0) && last.reduce((n, k) => n + (k?.requestsPerMinute ?? 0), 0) === 1000) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const elapsedSeconds = (Date.now() - started) / 1000;
    let total = 0;
    for (const keyId of keys) {
      const msgs = keyMessages(live, keyId);
      total += msgs.at(-1)!.requestsPerMinute;
      expect(msgs.at(-1)!.inFlight).toBe(0);
      // Counted, not timed: no more messages than whole seconds that passed (+1 for the first),
      // and the sender's own timestamps are at least a second apart.
      expect(msgs.length).toBeGreaterThan(0);
      expect(msgs.length).toBeLessThanOrEqual(Math.floor(elapsedSeconds) + 1);
      for (let i = 1; i < msgs.length; i++) expect(msgs[i]!.updatedAt - msgs[i - 1]!.updatedAt).toBeGreaterThanOrEqual(1000);
      // Only on change: no two consecutive messages are the same state.
      for (let i = 1; i < msgs.length; i++) expect({ ...msgs[i]!, updatedAt: 0 }).not.toEqual({ ...msgs[i - 1]!, updatedAt: 0 });
    }
    expect(total).toBe(1000);
    live.close();
  });
});

describe("SellerRoom: a failing room never fails a proxy request", () => {
  let seller: TestSeller;
  beforeAll(async () => {
    seller = await signIn("room-down");
  });
  afterAll(removeAllKeys);

  /**
   * Swap the room's push for the length of `body`. The room class runs in this isolate
   * (the plugin loads the Worker's modules here), so the key objects' RPCs reach the swap.
   */
  async function withRoom(push: (update: unknown) => Promise<void>, body: () => Promise<void>) {
    const spy = vi.spyOn(SellerRoom.prototype, "push").mockImplementation(push);
    try {
      await body();
    } finally {
      spy.mockRestore();
    }
  }

  it("keeps serving while its room throws on every push, and the pushes were really tried", async () => {
    let tried = 0;
    await withRoom(async () => {
      tried++;
      throw new Error("room is down");
    }, async () => {
      const { keyId } = await addKey({ seller });
      for (let i = 0; i < 30; i++) {
        const res = await chat();
        expect(res.status).toBe(200);
        await res.arrayBuffer();
        if (i % 10 === 9) await new Promise((r) => setTimeout(r, 1100)); // let pushes fall due
      }
      for (let i = 0; i < 100 && tried < 2; i++) await new Promise((r) => setTimeout(r, 50));
      expect(tried).toBeGreaterThanOrEqual(2);
      const res = await as(seller, `/api/keys/${keyId}`);
      expect(((await res.json()) as { key: { health: { state: string } } }).key.health.state).toBe("healthy");
    });
  });

  it("keeps serving while its room hangs on a push that never answers", async () => {
    let tried = 0;
    await withRoom(() => {
      tried++;
      return new Promise<void>(() => {});
    }, async () => {
      await addKey({ seller });
      for (let i = 0; i < 20; i++) {
        const res = await chat();
        expect(res.status).toBe(200);
        await res.arrayBuffer();
      }
      for (let i = 0; i < 100 && tried < 1; i++) await new Promise((r) => setTimeout(r, 50));
      expect(tried).toBeGreaterThanOrEqual(1);
    });
  });
});
