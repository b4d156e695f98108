// A fake Supabase Auth (GoTrue) Admin API on loopback for the real supabase-js client: the
// one call cn2 makes (auth.admin.deleteUser when a seller closes the account), checked for
// the service-role key in both headers Supabase wants, answered in GoTrue's shapes (the
// deleted user; `{code, error_code, msg}` errors). GET /__fake/deleted lists deleted ids.
import http from "node:http";
import type { AddressInfo } from "node:net";

export const TEST_SUPABASE = { serviceRoleKey: "test-supabase-service-role-key-0123456789" } as const;

export async function startFakeSupabase(opts: { serviceRoleKey: string }): Promise<{ url: string; close(): Promise<void> }> {
  const deleted: string[] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://fake");
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (raw += c));
    req.on("end", () => answer(raw));
    const answer = (raw: string) => {
    if (url.pathname === "/__fake/deleted") return send(200, { deleted });
    const m = url.pathname.match(/^\/auth\/v1\/admin\/users\/([0-9a-f-]{36})$/);
    // supabase-js reads the user before deleting it: any user not deleted yet exists here.
    if (req.method === "GET" && m) {
      if (req.headers.apikey !== opts.serviceRoleKey || req.headers.authorization !== `Bearer ${opts.serviceRoleKey}`) {
        return send(401, { code: 401, error_code: "bad_jwt", msg: "invalid JWT" });
      }
      if (deleted.includes(m[1]!)) return send(404, { code: 404, error_code: "user_not_found", msg: "User not found" });
      const now = new Date().toISOString();
      return send(200, { id: m[1], aud: "authenticated", role: "authenticated", email: null, app_metadata: {}, user_metadata: {}, created_at: now, updated_at: now });
    }
    if (req.method === "DELETE" && m) {
      if (req.headers.apikey !== opts.serviceRoleKey || req.headers.authorization !== `Bearer ${opts.serviceRoleKey}`) {
        return send(401, { code: 401, error_code: "bad_jwt", msg: "invalid JWT" });
      }
      const body = raw ? (JSON.parse(raw) as { should_soft_delete?: boolean }) : {};
      if (body.should_soft_delete) return send(400, { code: 400, error_code: "validation_failed", msg: "soft delete not expected" });
      if (deleted.includes(m[1]!)) return send(404, { code: 404, error_code: "user_not_found", msg: "User not found" });
      deleted.push(m[1]!);
      const now = new Date().toISOString();
      return send(200, { id: m[1], aud: "authenticated", role: "authenticated", email: null, app_metadata: {}, user_metadata: {}, created_at: now, updated_at: now });
    }
    send(404, { code: 404, error_code: "not_found", msg: "not found" });
    };
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
