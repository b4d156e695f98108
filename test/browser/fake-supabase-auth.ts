// A fake of Supabase Auth's (GoTrue's) email one-time-code endpoints on loopback, speaking
// the wire format supabase-js uses, for the dashboard's production sign-in path in the
// browser tests (no local Supabase Auth server exists here: its CLI needs Docker).
//
//   POST /auth/v1/otp      {email, ...}            -> 200 {}; the code is kept for the test
//   POST /auth/v1/verify   {email, token, type}    -> a session: an ES256 access token whose
//                                                     issuer is <url>/auth/v1, like Supabase's
//   POST /auth/v1/logout                           -> 204
//   GET, DELETE /auth/v1/admin/users/:id (service role) -> the auth user; deletes it (account closure)
//   GET  /__fake/otp?email=                        -> {code} (what the email would carry)
// Verifying creates the auth user in the database's auth.users, as Supabase Auth does.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { importJWK, SignJWT } from "jose";
import { connect } from "../../tools/database.ts";
import { generateDevSigningKey } from "../../core/dev-signing-key.ts";

export interface FakeSupabaseAuth {
  url: string;
  anonKey: string;
  serviceRoleKey: string;
  /** Public keys that verify its access tokens. */
  jwks: { keys: unknown[] };
  close(): Promise<void>;
}

export async function startFakeSupabaseAuth(opts: { databaseUrl: string }): Promise<FakeSupabaseAuth> {
  const { privateJwk, jwks } = await generateDevSigningKey("fake-supabase");
  const key = await importJWK(privateJwk, "ES256");
  const anonKey = `fake-anon-${crypto.randomUUID()}`;
  const serviceRoleKey = `fake-service-role-${crypto.randomUUID()}`;
  const codes = new Map<string, string>();
  const sql = connect(opts.databaseUrl, { max: 1 });
  let url = "";

  async function session(email: string) {
    const [user] = await sql<{ id: string }[]>`
      insert into auth.users (id, email) values (${crypto.randomUUID()}, ${email})
      on conflict (email) do update set email = excluded.email returning id`;
    const id = user!.id;
    const now = Math.floor(Date.now() / 1000);
    const accessToken = await new SignJWT({ email, role: "authenticated", app_metadata: { provider: "email" }, user_metadata: {} })
      .setProtectedHeader({ alg: "ES256", kid: privateJwk.kid, typ: "JWT" })
      .setSubject(id).setIssuer(`${url}/auth/v1`).setAudience("authenticated").setIssuedAt(now).setExpirationTime(now + 3600)
      .sign(key);
    return {
      access_token: accessToken, token_type: "bearer", expires_in: 3600, expires_at: now + 3600, refresh_token: `fake-refresh-${crypto.randomUUID()}`,
      user: { id, aud: "authenticated", role: "authenticated", email, app_metadata: { provider: "email" }, user_metadata: {}, created_at: new Date().toISOString() },
    };
  }

  const server = http.createServer((req, res) => {
    const origin = req.headers.origin;
    const cors: Record<string, string> = origin ? { "access-control-allow-origin": origin, "access-control-allow-headers": req.headers["access-control-request-headers"] ?? "*", "access-control-allow-methods": "GET, POST, OPTIONS", vary: "origin" } : {};
    const send = (status: number, body?: unknown) => {
      res.writeHead(status, { ...cors, ...(body === undefined ? {} : { "content-type": "application/json" }) });
      res.end(body === undefined ? undefined : JSON.stringify(body));
    };
    if (req.method === "OPTIONS") return send(204);
    const path = new URL(req.url ?? "/", "http://fake");
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (raw += c));
    req.on("end", () => {
      void (async () => {
        const body = raw ? (JSON.parse(raw) as Record<string, string>) : {};
        if (path.pathname === "/__fake/otp") return send(200, { code: codes.get(path.searchParams.get("email") ?? "") ?? null });
        const admin = path.pathname.match(/^\/auth\/v1\/admin\/users\/([0-9a-f-]{36})$/);
        // supabase-js's auth.admin.deleteUser reads the user first, then deletes it.
        if (req.method === "GET" && admin) {
          if (req.headers.apikey !== serviceRoleKey || req.headers.authorization !== `Bearer ${serviceRoleKey}`) return send(401, { msg: "invalid JWT" });
          const [user] = await sql<{ id: string; email: string | null }[]>`select id, email from auth.users where id = ${admin[1]!}`;
          if (!user) return send(404, { code: 404, error_code: "user_not_found", msg: "User not found" });
          const now = new Date().toISOString();
          return send(200, { id: user.id, aud: "authenticated", role: "authenticated", email: user.email, app_metadata: {}, user_metadata: {}, created_at: now, updated_at: now });
        }
        if (req.method === "DELETE" && admin) {
          if (req.headers.apikey !== serviceRoleKey || req.headers.authorization !== `Bearer ${serviceRoleKey}`) return send(401, { msg: "invalid JWT" });
          const gone = await sql`delete from auth.users where id = ${admin[1]!} returning id`;
          return gone.length ? send(200, {}) : send(404, { msg: "User not found" });
        }
        if (req.headers.apikey !== anonKey) return send(401, { code: 401, error_code: "no_api_key", msg: "No API key found in request" });
        if (req.method === "POST" && path.pathname === "/auth/v1/otp") {
          codes.set(String(body.email).toLowerCase(), String(100000 + (crypto.getRandomValues(new Uint32Array(1))[0]! % 900000)));
          return send(200, {});
        }
        if (req.method === "POST" && path.pathname === "/auth/v1/verify") {
          const email = String(body.email).toLowerCase();
          if (body.type !== "email" || !codes.has(email) || codes.get(email) !== body.token) return send(403, { code: 403, error_code: "otp_expired", msg: "Token has expired or is invalid" });
          codes.delete(email);
          return send(200, await session(email));
        }
        if (req.method === "POST" && path.pathname === "/auth/v1/logout") return send(204);
        send(404, { code: 404, msg: "not found" });
      })().catch((err: unknown) => send(500, { msg: String(err) }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url, anonKey, serviceRoleKey, jwks,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      await sql.end();
    },
  };
}
