// GET /api/live/:room: the dashboard's WebSocket to the seller's live room (S8). The Worker
// decides who may connect, before any upgrade reaches a Durable Object: a valid seller
// session (cookie or bearer) whose seller id is the room asked for, an open account, and a
// browser Origin that is ours (a cross-site page cannot ride the seller's cookie into the
// room: cross-site WebSocket hijacking). Only then is the upgrade forwarded, to that one
// room; no other Durable Object binding is reachable this way.
import type { IRequest } from "itty-router";
import { ROOM_SELLER_HEADER, roomStub } from "../../objects/seller-room/stub.ts";
import type { Env } from "../../core/env.ts";
import { ApiError } from "../../core/http.ts";
import { sellerRoute } from "./profile.ts";

/** Cheap refusals first: not a WebSocket upgrade, or a foreign Origin. No session work yet. */
function precheck(request: Request) {
  if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") throw new ApiError("invalid_request", "this endpoint is a WebSocket: send Upgrade: websocket");
  const origin = request.headers.get("origin");
  if (origin !== new URL(request.url).origin) throw new ApiError("forbidden", "live updates are served to this site's own pages only (Origin mismatch)");
}

const connect = sellerRoute(async (c) => {
  const room = (c.request as IRequest).params.room;
  if (room !== c.identity.id) throw new ApiError("forbidden", "this is not your room: connect to /api/live/<your seller id>");
  // The room needs neither the cookie nor the bearer: only the checked seller id.
  const headers = new Headers({ upgrade: "websocket", [ROOM_SELLER_HEADER]: c.identity.id });
  for (const name of ["sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions"]) {
    const value = c.request.headers.get(name);
    if (value !== null) headers.set(name, value);
  }
  const url = new URL(c.request.url);
  return roomStub(c.env, c.identity.id).fetch(`https://seller-room${url.pathname}${url.search}`, { headers });
});

export function liveSocket(request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> {
  precheck(request);
  return connect(request, env, ctx);
}
