// A fake Supabase Auth Admin API on loopback: the one call cn2 makes (delete a user when a
// seller closes the account), checked for the service-role key in both headers Supabase
// wants. GET /__fake/deleted lists the user ids deleted so far.
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
    req.resume();
    if (url.pathname === "/__fake/deleted") return send(200, { deleted });
    const m = url.pathname.match(/^\/auth\/v1\/admin\/users\/([0-9a-f-]{36})$/);
    if (req.method === "DELETE" && m) {
      if (req.headers.apikey !== opts.serviceRoleKey || req.headers.authorization !== `Bearer ${opts.serviceRoleKey}`) {
        return send(401, { msg: "invalid JWT" });
      }
      if (deleted.includes(m[1]!)) return send(404, { msg: "User not found" });
      deleted.push(m[1]!);
      return send(200, {});
    }
    send(404, { msg: "not found" });
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
