// tools/database.ts's embedded database: PGlite behind the socket server, as `npm start`, the
// tests and wrangler dev's Hyperdrive local connection use it.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect as netConnect } from "node:net";
import postgres from "postgres";
import { afterAll, describe, expect, inject, it } from "vitest";
import { connect, loadMigrations, migrate, startEmbeddedDb } from "../../tools/database.ts";
import { sharedDb, target } from "./helpers.ts";

// Run against whichever server is under test: PostgreSQL does all this natively; the
// embedded server must match it.
describe(`the ${target() === "pglite" ? "embedded PGlite" : "PostgreSQL"} server`, () => {
  const sql = sharedDb(8);
  afterAll(() => sql.end());

  it("keeps concurrent extended-protocol exchanges of different connections apart", async () => {
    // prepare: false sends Parse/Describe/Flush, waits, then Bind/Execute/Sync: another
    // connection must not run in between (pglite-socket's own queue lets it, and then
    // statements and rows cross connections).
    const clients = Array.from({ length: 4 }, () => postgres(inject("dbUrl"), { max: 2, prepare: false, onnotice: () => {} }));
    try {
      const results = await Promise.all(
        Array.from({ length: 200 }, async (_, i) => {
          const [row] = await clients[i % clients.length]!`select ${i}::int as i, ${`text-${i}`}::text as s`;
          return row!.i === i && row!.s === `text-${i}`;
        }),
      );
      expect(results.every(Boolean)).toBe(true);
    } finally {
      await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    }
  });

  it("rolls back the transaction of a connection that vanished, and lets the others go on", async () => {
    const url = new URL(inject("dbUrl"));
    const victim = connect(url.toString(), { max: 1 });
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => (entered = resolve));
    const abandoned = victim
      .begin(async (tx) => {
        await tx.unsafe("set local role authenticated");
        await tx`create temporary table vanishing (x int)`.catch(() => undefined);
        entered();
        await new Promise(() => {}); // never commits
      })
      .catch(() => "gone");
    await inside;
    const waiting = sql`select current_user as role`;
    await new Promise((r) => setTimeout(r, 100));
    await victim.end({ timeout: 0 });
    expect(await abandoned).toBe("gone");
    const [row] = await waiting;
    expect(row!.role).toBe("postgres");
  });

  it("answers a raw client that connects and leaves without a word", async () => {
    const url = new URL(inject("dbUrl"));
    await new Promise<void>((resolve, reject) => {
      const s = netConnect(Number(url.port), url.hostname, () => s.end(resolve));
      s.on("error", reject);
    });
    const [row] = await sql`select 1 as one`;
    expect(row!.one).toBe(1);
  });
});

describe("embedded PGlite with a data directory", () => {
  it("persists across restarts, migrations stay applied, and one process owns the directory", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "cn2-pglite-"));
    const dataDir = path.join(dir, "pglite");
    try {
      const first = await startEmbeddedDb({ dataDir });
      await expect(startEmbeddedDb({ dataDir })).rejects.toThrow(/already open in this process/);
      let sql = connect(first.url, { max: 1 });
      expect((await migrate(sql)).applied).toHaveLength((await loadMigrations()).length);
      await sql`insert into auth.users (id, email) values ('7a3c5e2b-0d1f-4b6a-8c9e-1f2a3b4c5d6e', 'persist@example.test')`;
      await sql.end();
      await first.close();

      // A lock left by a process that died (as after kill -9) is taken over.
      await writeFile(`${dataDir}.lock`, "2147483646\n");
      const second = await startEmbeddedDb({ dataDir });
      sql = connect(second.url, { max: 1 });
      expect((await migrate(sql)).applied).toEqual([]);
      const [row] = await sql`select email from auth.users where id = '7a3c5e2b-0d1f-4b6a-8c9e-1f2a3b4c5d6e'`;
      expect(row!.email).toBe("persist@example.test");
      await sql.end();
      await second.close();

      // A live process's lock is respected.
      await writeFile(`${dataDir}.lock`, `${process.ppid}\n`);
      await expect(startEmbeddedDb({ dataDir })).rejects.toThrow(new RegExp(`in use by process ${process.ppid}`));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

