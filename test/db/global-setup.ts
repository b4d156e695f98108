// Runs in Node before the "db" test project: one migrated database shared by its test
// files (each test makes its own sellers with fresh ids, so files do not see each other's
// rows). Without DATABASE_URL it is an in-memory PGlite behind the embedded socket server;
// with DATABASE_URL (CI's PostgreSQL) it is a fresh database created next to that one and
// dropped afterwards.
import type { TestProject } from "vitest/node";
import { connect, migrate, startEmbeddedDb } from "../../tools/database.ts";
import { createScratchDatabase } from "./scratch.ts";

export default async function setup(project: TestProject) {
  if (process.env.DATABASE_URL) {
    const scratch = await createScratchDatabase(process.env.DATABASE_URL, "shared");
    const sql = connect(scratch.url, { max: 1 });
    await migrate(sql).finally(() => sql.end());
    project.provide("dbUrl", scratch.url);
    project.provide("dbTarget", "postgres");
    return () => scratch.drop();
  }
  const db = await startEmbeddedDb();
  const sql = connect(db.url, { max: 1 });
  await migrate(sql).finally(() => sql.end());
  project.provide("dbUrl", db.url);
  project.provide("dbTarget", "pglite");
  return () => db.close();
}

declare module "vitest" {
  export interface ProvidedContext {
    dbUrl: string;
    dbTarget: "pglite" | "postgres";
  }
}
