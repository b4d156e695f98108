// Postgres for cn2 outside production: the migration runner and an embedded database.
//
//   node tools/database.ts migrate   apply schema/sql/*.sql to DATABASE_URL, or (unset) to the
//                              embedded database persisted in .data/pglite
//   node tools/database.ts serve     serve the embedded database on 127.0.0.1 (PGlite behind
//                              pglite-socket), migrated; prints its URL; Ctrl-C stops it
//       --port N (default 54329 or $PGLITE_PORT)   --data DIR (default .data/pglite)   --memory
//
// The embedded database is PGlite (Postgres compiled to WASM, one backend) served over the
// wire protocol by pglite-socket's connection handler, so anything that speaks Postgres —
// the `postgres` driver, psql, Hyperdrive's local connection string in wrangler dev — can
// use it. One backend for many connections means:
//   * one connection at a time: from its first message until its exchange ends (Sync or a
//     simple Query) outside a transaction block; a transaction holds the backend until it
//     ends. BackendScheduler below enforces that. (pglite-socket's own multiplexer switches
//     connections between any two messages, which lets concurrent extended-protocol
//     queries bind each other's unnamed statements and portals — seen as `portal "" does
//     not exist` and as rows delivered to the wrong connection under wrangler dev.)
//   * session-level state (a plain `SET`, `set_config(..., false)`, prepared statements) is
//     shared by every connection. Our code sets role and claims transaction-locally only
//     (schema/tables.ts), which is safe here. COPY ... FROM STDIN is not supported.
import { createHash } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { mkdir, readdir, readFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import postgres, { type Options, type Sql } from "postgres";
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketHandler } from "@electric-sql/pglite-socket";

export { asAnon, asSeller, asService } from "../schema/tables.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const MIGRATIONS_DIR = path.join(ROOT, "schema", "sql");
export const DEFAULT_DATA_DIR = path.join(ROOT, ".data", "pglite");
export const DEFAULT_PORT = 54329;

// ---------------------------------------------------------------------------------------
// Connections

/** A `postgres` client with our defaults: notices (migrations' "skipping" chatter) muted. */
export function connect(url: string, options: Options<{}> = {}): Sql {
  return postgres(url, { onnotice: () => {}, ...options });
}

/**
 * The URL for a Hyperdrive local connection: Miniflare insists on a password, which a
 * trust-authenticated server (CI's PostgreSQL, PGlite) ignores, so one is filled in.
 */
export function hyperdriveUrl(url: string): string {
  const u = new URL(url);
  if (!u.password) u.password = "postgres";
  return u.toString();
}

// ---------------------------------------------------------------------------------------
// Migrations

export interface Migration {
  /** File name, e.g. "0001_sellers.sql"; the order is the name's. */
  name: string;
  sql: string;
  /** SHA-256 of the file: an applied migration must never change afterwards. */
  checksum: string;
}

const MIGRATION_NAME = /^\d{4}_[a-z0-9_]+\.sql$/;

export async function loadMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith(".sql")).sort();
  const bad = names.filter((n) => !MIGRATION_NAME.test(n));
  if (bad.length > 0) throw new Error(`migration files must be named NNNN_name.sql: ${bad.join(", ")}`);
  const seen = new Set<string>();
  const migrations: Migration[] = [];
  for (const name of names) {
    const number = name.slice(0, 4);
    if (seen.has(number)) throw new Error(`two migrations numbered ${number}`);
    seen.add(number);
    const sql = await readFile(path.join(dir, name), "utf8");
    migrations.push({ name, sql, checksum: createHash("sha256").update(sql).digest("hex") });
  }
  return migrations;
}

export interface MigrateResult {
  applied: string[];
  skipped: string[];
}

/**
 * Apply schema/sql/*.sql in order. Each file runs once, in its own transaction together
 * with its row in internal.schema_migrations, under an advisory lock so two runners
 * cannot interleave. Re-running is a no-op; a file changed after it was applied is an
 * error (write a new migration instead). Files must not contain transaction control.
 * Run it as the database owner (postgres), never as an API role.
 */
export async function migrate(sql: Sql<any>, options: { dir?: string; log?: (line: string) => void } = {}): Promise<MigrateResult> {
  const migrations = await loadMigrations(options.dir);
  const log = options.log ?? (() => {});
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext('cn2.schema_migrations'))`;
    await tx.unsafe(`
      create schema if not exists internal;
      create table if not exists internal.schema_migrations (
        name text primary key,
        checksum text not null,
        applied_at timestamptz not null default now()
      );`);
  });

  const result: MigrateResult = { applied: [], skipped: [] };
  for (const m of migrations) {
    const applied = await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtext('cn2.schema_migrations'))`;
      const [done] = await tx<{ checksum: string }[]>`select checksum from internal.schema_migrations where name = ${m.name}`;
      if (done) {
        if (done.checksum !== m.checksum) {
          throw new Error(`migration ${m.name} changed after it was applied (checksum ${done.checksum.slice(0, 12)}… -> ${m.checksum.slice(0, 12)}…): add a new migration instead`);
        }
        return false;
      }
      await tx.unsafe(m.sql);
      await tx`insert into internal.schema_migrations (name, checksum) values (${m.name}, ${m.checksum})`;
      return true;
    });
    (applied ? result.applied : result.skipped).push(m.name);
    if (applied) log(`applied ${m.name}`);
  }
  return result;
}

// ---------------------------------------------------------------------------------------
// Embedded database: PGlite behind pglite-socket

export interface EmbeddedDb {
  /** postgres://postgres:postgres@127.0.0.1:PORT/postgres (PGlite accepts any password). */
  url: string;
  host: string;
  port: number;
  /** null when in memory. */
  dataDir: string | null;
  pglite: PGlite;
  close(): Promise<void>;
}

export interface EmbeddedDbOptions {
  /** Persist here (created if missing); in memory when omitted. */
  dataDir?: string;
  /** 0 or omitted: a free port. */
  port?: number;
  /** Loopback by default; the embedded database has no authentication. */
  host?: string;
  /** Concurrent client connections accepted (each waits its turn on the one backend). */
  maxConnections?: number;
}

const SYNC = new Uint8Array([0x53, 0, 0, 0, 4]);
const STALL_WARNING_MS = 10_000;

/**
 * Gives the single PGlite backend to one connection at a time, for whole protocol
 * exchanges: a connection keeps it from its first message until a Sync ('S'), a simple
 * Query ('Q'), a Terminate ('X') or the startup packet has run with no transaction block
 * open. Between Parse/Describe/Flush and Bind/Execute/Sync (the postgres driver's
 * "describe first" round trip) or inside BEGIN ... COMMIT nobody else runs. Implements the
 * queue interface pglite-socket's PGLiteSocketHandler calls (pinned 0.2.17).
 */
class BackendScheduler {
  readonly #db: PGlite;
  #owner: number | null = null;
  #waiting: { handlerId: number; wake: () => void; fail: (error: Error) => void }[] = [];
  /** Per connection, the last message in flight: a connection's messages run in order. */
  #tails = new Map<number, Promise<number>>();
  #gone = new Set<number>();

  constructor(db: PGlite) {
    this.#db = db;
  }

  enqueue(handlerId: number, message: Uint8Array, onData: (data: Uint8Array) => void): Promise<number> {
    const previous = this.#tails.get(handlerId);
    const run = (previous ? previous.catch(() => 0) : Promise.resolve(0)).then(() => this.#run(handlerId, message, onData));
    this.#tails.set(handlerId, run);
    const forget = () => {
      if (this.#tails.get(handlerId) === run) this.#tails.delete(handlerId);
    };
    run.then(forget, forget);
    return run;
  }

  async #run(handlerId: number, message: Uint8Array, onData: (data: Uint8Array) => void): Promise<number> {
    if (this.#gone.has(handlerId)) throw new Error("Handler disconnected");
    if (this.#owner !== handlerId) await this.#acquire(handlerId);
    let bytes = 0;
    await this.#db.runExclusive(() =>
      this.#db.execProtocolRawStream(message, {
        onRawData: (data) => {
          bytes += data.length;
          onData(data);
        },
      }),
    );
    const kind = message[0];
    const endsExchange = kind === 0 /* startup packet */ || kind === 0x53 /* S */ || kind === 0x51 /* Q */ || kind === 0x58; /* X */
    if (endsExchange && !this.#db.isInTransaction()) this.#release(handlerId);
    return bytes;
  }

  getQueueLength(): number {
    return this.#waiting.length;
  }

  /** First call when a connection goes away: nothing more of it may run. */
  clearQueueForHandler(handlerId: number): void {
    this.#gone.add(handlerId);
    this.#waiting = this.#waiting.filter((w) => {
      if (w.handlerId !== handlerId) return true;
      w.fail(new Error("Handler disconnected"));
      return false;
    });
  }

  /** Second call: end its exchange, roll back its transaction, pass the backend on. */
  async clearTransactionIfNeeded(handlerId: number): Promise<void> {
    await this.#tails.get(handlerId)?.catch(() => 0);
    try {
      if (this.#owner !== handlerId) return;
      await this.#db.runExclusive(() => this.#db.execProtocolRawStream(SYNC, { onRawData: () => {} }));
      if (this.#db.isInTransaction()) await this.#db.exec("rollback");
    } finally {
      this.#release(handlerId);
      this.#gone.delete(handlerId);
    }
  }

  #acquire(handlerId: number): Promise<void> {
    if (this.#owner === null) {
      this.#owner = handlerId;
      return Promise.resolve();
    }
    // Waiting long usually means code that queries on another connection from inside an
    // open transaction: fine on PostgreSQL, a deadlock on one backend. Say so.
    const holder = this.#owner;
    const warning = setTimeout(() => {
      console.warn(`embedded database: a connection has waited ${STALL_WARNING_MS / 1000}s for another connection's open transaction (#${holder}); is something querying outside its transaction while inside it?`);
    }, STALL_WARNING_MS);
    warning.unref();
    return new Promise<void>((wake, fail) => this.#waiting.push({ handlerId, wake, fail })).finally(() => clearTimeout(warning));
  }

  #release(handlerId: number): void {
    if (this.#owner !== handlerId) return;
    const next = this.#waiting.shift();
    this.#owner = next ? next.handlerId : null;
    next?.wake();
  }
}

type QueryQueue = ConstructorParameters<typeof PGLiteSocketHandler>[0]["queryQueue"];

export async function startEmbeddedDb(options: EmbeddedDbOptions = {}): Promise<EmbeddedDb> {
  const host = options.host ?? "127.0.0.1";
  const dataDir = options.dataDir ? path.resolve(options.dataDir) : null;
  let unlock = () => {};
  if (dataDir) {
    await mkdir(path.dirname(dataDir), { recursive: true });
    unlock = lockDataDir(dataDir);
  }
  let pglite: PGlite | undefined;
  try {
    pglite = dataDir ? await PGlite.create(dataDir) : await PGlite.create();
    const db = pglite;
    const scheduler = new BackendScheduler(db) as unknown as QueryQueue;
    const maxConnections = options.maxConnections ?? 64;
    const handlers = new Set<PGLiteSocketHandler>();
    const server: Server = createServer((socket: Socket) => {
      if (handlers.size >= maxConnections) {
        socket.destroy();
        return;
      }
      const handler = new PGLiteSocketHandler({ queryQueue: scheduler, closeOnDetach: true });
      handlers.add(handler);
      const forget = () => handlers.delete(handler);
      handler.addEventListener("close", forget);
      handler.addEventListener("error", forget);
      handler.attach(socket).catch(() => {
        forget();
        socket.destroy();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port ?? 0, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("embedded database: no TCP address");
    const port = address.port;
    let closed: Promise<void> | undefined;
    return {
      url: `postgres://postgres:postgres@${host}:${port}/postgres`,
      host,
      port,
      dataDir,
      pglite: db,
      close: () =>
        (closed ??= (async () => {
          try {
            const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
            await Promise.all([...handlers].map((h) => h.detach(true)));
            await stopped;
            await db.close();
          } finally {
            unlock();
          }
        })()),
    };
  } catch (error) {
    await pglite?.close().catch(() => {});
    unlock();
    throw error;
  }
}

const openDataDirs = new Set<string>();

/**
 * One PGlite per persisted data directory: two instances on one directory corrupt it.
 * A lock file beside the directory holds the owner's pid; a stale one (dead pid) is taken over.
 */
function lockDataDir(dataDir: string): () => void {
  if (openDataDirs.has(dataDir)) throw new Error(`${dataDir} is already open in this process`);
  const lockFile = `${dataDir}.lock`;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(lockFile, `${process.pid}\n`, { flag: "wx" });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw error;
      const pid = Number(readFileSync(lockFile, "utf8").trim());
      if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) {
        throw new Error(`${dataDir} is in use by process ${pid} (lock ${lockFile}): point DATABASE_URL at that server, or stop it first`);
      }
      rmSync(lockFile, { force: true });
    }
  }
  openDataDirs.add(dataDir);
  return () => {
    openDataDirs.delete(dataDir);
    rmSync(lockFile, { force: true });
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

// ---------------------------------------------------------------------------------------
// CLI

const USAGE = `usage:
  node tools/database.ts migrate                      apply schema/sql to $DATABASE_URL, or to the embedded database in .data/pglite
  node tools/database.ts serve [--port N] [--data DIR | --memory]
                                                serve the embedded database (migrated) on 127.0.0.1 until Ctrl-C`;

async function main(argv: string[]): Promise<number> {
  const { positionals, values: flags } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { port: { type: "string" }, data: { type: "string" }, memory: { type: "boolean" }, help: { type: "boolean" } },
  });
  const command = positionals[0];
  const dataDir = flags.memory ? undefined : (flags.data ?? DEFAULT_DATA_DIR);
  const log = (line: string) => console.log(line);

  if (command === "migrate") {
    const external = process.env.DATABASE_URL;
    const embedded = external ? undefined : await startEmbeddedDb({ dataDir });
    const sql = connect(external ?? embedded!.url, { max: 1 });
    try {
      const { applied, skipped } = await migrate(sql, { log });
      console.log(`${external ? "DATABASE_URL" : `embedded ${dataDir ?? "(memory)"}`}: ${applied.length} applied, ${skipped.length} already applied`);
    } finally {
      await sql.end();
      await embedded?.close();
    }
    return 0;
  }

  if (command === "serve") {
    const port = Number(flags.port ?? process.env.PGLITE_PORT ?? DEFAULT_PORT);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad port ${flags.port ?? process.env.PGLITE_PORT}`);
    const db = await startEmbeddedDb({ dataDir, port });
    const sql = connect(db.url, { max: 1 });
    try {
      const { applied } = await migrate(sql, { log });
      console.log(`migrations: ${applied.length} applied`);
    } finally {
      await sql.end();
    }
    console.log(`PGlite ${dataDir ? `(${dataDir})` : "(in memory)"} serving on ${db.url}`);
    console.log(`  DATABASE_URL=${db.url}`);
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve);
      process.once("SIGTERM", resolve);
    });
    await db.close();
    return 0;
  }

  console.error(USAGE);
  return command === undefined || command === "help" || flags.help ? 0 : 2;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(error instanceof Error ? error.message : error);
      process.exit(1);
    },
  );
}
