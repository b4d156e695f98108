// B6 over real HTTP, where the soak found it: workerd sends a response's headers with its
// first body bytes, and a body that fails while they are being sent takes them with it,
// so the buyer sees the connection close before any header ("fetch failed: other side
// closed") although it was charged. The router's worker/proxy/started.ts (loaded here as
// it is, into a bare Worker in workerd through Miniflare, with a Durable Object standing
// for the key object) must get the headers and a byte out before any failure can reach
// the response. The key object is restarted (ctx.abort, as POST /ops/keys/:id/restart
// does) the moment its answer's first bytes are in the router's hands: the window the
// soak hit under load, which a test cannot reach from outside the Worker.
import { readFileSync } from "node:fs";
import { stripTypeScriptTypes } from "node:module";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadMiniflare } from "../../bench/workerd.ts";
import { REPO_ROOT } from "../../tools/api-client.ts";

const FIRST_EVENT = 'data: {"first":true}\n\n';

const probe = `
import { DurableObject } from "cloudflare:workers";

/** Stands for a SellerKey: answers 200 with its first event, keeps the stream open, and can be restarted. */
export class Key extends DurableObject {
  async fetch() {
    const { readable, writable } = new IdentityTransformStream();
    this.writer = writable.getWriter();
    this.writer.write(new TextEncoder().encode(${JSON.stringify(FIRST_EVENT)})).catch(() => {});
    return new Response(readable, { headers: { "content-type": "text/event-stream" } });
  }
  restart() {
    this.ctx.abort("restarted by operator");
  }
}

export default {
  async fetch(request, env) {
    const key = env.KEY.get(env.KEY.newUniqueId());
    const started = await startedAnswer(await key.fetch("https://key/v1/chat/completions"));
    if (started === null) return new Response("undelivered", { status: 502 });
    // The key object restarts as its answer leaves the router.
    key.restart().catch(() => {});
    return started;
  },
};
`;

let mf: { ready: Promise<URL>; unsafeGetDirectURL(name: string): Promise<URL>; dispose(): Promise<void> } | undefined;
let url: string;

beforeAll(async () => {
  const started = stripTypeScriptTypes(readFileSync(join(REPO_ROOT, "worker", "proxy", "started.ts"), "utf8"), { mode: "strip" });
  const { mod } = await loadMiniflare();
  const wrangler = JSON.parse(readFileSync(join(REPO_ROOT, "wrangler.toml"), "utf8").match(/^compatibility_date\s*=\s*("[^"]+")/m)![1]!) as string;
  const instance = new mod.Miniflare(mod.convertV4MiniflareOptions({
    host: "127.0.0.1",
    port: 0,
    handleStructuredLogs: () => {}, // the restarts' "uncaught exception" lines are expected
    workers: [{
      name: "first-bytes",
      modules: [{ type: "ESModule", path: join(REPO_ROOT, "first-bytes-probe.js"), contents: `${started}\n${probe}` }],
      compatibilityDate: wrangler,
      durableObjects: { KEY: { className: "Key", useSQLite: true } },
      unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    }],
  })) as unknown as NonNullable<typeof mf>;
  mf = instance;
  await instance.ready;
  url = (await instance.unsafeGetDirectURL("first-bytes")).href;
}, 120_000);

afterAll(async () => {
  await mf?.dispose();
});

describe("B6: the headers and the first bytes are out before a failure can reach the response", () => {
  it("a key object restarted as its answer's first bytes leave the router: the buyer gets the headers and bytes every time (50 tries), then the cut", async () => {
    const outcomes: string[] = [];
    for (let i = 0; i < 50; i++) {
      let res: Response;
      try {
        res = await fetch(url);
      } catch (err) {
        outcomes.push(`no headers (${err instanceof Error ? String(err.cause ?? err.message) : String(err)})`);
        continue;
      }
      let text = "";
      let cut = false;
      try {
        for await (const chunk of res.body!) text += Buffer.from(chunk as Uint8Array).toString("utf8");
      } catch {
        cut = true;
      }
      outcomes.push(`${res.status} ${text.length > 0 && FIRST_EVENT.startsWith(text) ? "first bytes" : `unexpected ${JSON.stringify(text)}`}${cut ? " then cut" : ""}`);
    }
    expect(outcomes.filter((o) => o !== "200 first bytes then cut"), outcomes.join(" | ")).toEqual([]);
  }, 120_000);
});
