// Reaching a seller's SellerRoom without the class: the Worker forwards the dashboard's
// socket to it (worker/seller/live.ts), the key objects push to it (objects/seller-key/live.ts).
import type { Env } from "../../core/env.ts";

/** Set by the Worker on a forwarded upgrade: the seller it authenticated (the room checks it). */
export const ROOM_SELLER_HEADER = "cn2-room-seller";

/** One room per seller, named by the seller id. */
export const roomStub = (env: Pick<Env, "SELLER_ROOM">, sellerId: string) => env.SELLER_ROOM.get(env.SELLER_ROOM.idFromName(sellerId));
