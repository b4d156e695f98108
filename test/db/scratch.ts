// Throwaway databases for the db tests: a new database on the server DATABASE_URL points
// at (PostgreSQL), or a new in-memory PGlite when it is unset.
import { randomBytes } from "node:crypto";
import { connect, startEmbeddedDb } from "../../tools/database.ts";

export interface ScratchDatabase {
  url: string;
  target: "pglite" | "postgres";
  drop(): Promise<void>;
}

/** A new, empty database on the server `baseUrl` points at (needs CREATEDB). */
export async function createScratchDatabase(baseUrl: string, label: string): Promise<ScratchDatabase> {
  const name = `cn2_test_${label}_${randomBytes(5).toString("hex")}`;
  const admin = connect(baseUrl, { max: 1 });
  await admin.unsafe(`create database ${name}`);
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    target: "postgres",
    drop: async () => {
      try {
        await admin.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await admin.end();
      }
    },
  };
}

/** An empty database of the kind under test. */
export async function emptyDatabase(label: string): Promise<ScratchDatabase> {
  if (process.env.DATABASE_URL) return createScratchDatabase(process.env.DATABASE_URL, label);
  const db = await startEmbeddedDb();
  return { url: db.url, target: "pglite", drop: () => db.close() };
}
