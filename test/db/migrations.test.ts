// The migration runner and the migrations themselves, each test on an empty database of
// the kind under test (a new in-memory PGlite, or a new database on DATABASE_URL's server).
import { cp, mkdtemp, readFile, appendFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Sql } from "postgres";
import { connect, loadMigrations, migrate, MIGRATIONS_DIR } from "../../tools/database.ts";
import { emptyDatabase, type ScratchDatabase } from "./scratch.ts";

describe("migrations on an empty database", () => {
  let db: ScratchDatabase;
  let sql: Sql;
  beforeAll(async () => {
    db = await emptyDatabase("migrate");
    sql = connect(db.url, { max: 1 });
  });
  afterAll(async () => {
    await sql?.end();
    await db?.drop();
  });

  it("apply from scratch, in order, each recorded once", async () => {
    const files = (await loadMigrations()).map((m) => m.name);
    expect(files[0]).toBe("0000_supabase_bootstrap.sql");
    const result = await migrate(sql);
    expect(result).toEqual({ applied: files, skipped: [] });
    const recorded = await sql`select name from internal.schema_migrations order by name`;
    expect(recorded.map((r) => r.name)).toEqual(files);
    const tables = await sql`select tablename from pg_tables where schemaname = 'public' order by 1`;
    expect(tables.map((t) => t.tablename)).toEqual(expect.arrayContaining([
      "sellers", "keys", "kyc", "payout_preferences", "payouts", "webhook_endpoints", "webhook_signing_secrets",
      "webhook_deliveries", "earnings_ledger", "clawbacks", "request_log", "request_log_hourly", "buyer_accounts", "buyer_account_ids",
    ]));
  });

  it("re-apply as a no-op", async () => {
    const files = (await loadMigrations()).map((m) => m.name);
    expect(await migrate(sql)).toEqual({ applied: [], skipped: files });
    const [count] = await sql`select count(*)::int as n from internal.schema_migrations`;
    expect(count!.n).toBe(files.length);
  });

  it("the bootstrap itself is idempotent: running it again changes nothing", async () => {
    const bootstrap = await readFile(path.join(MIGRATIONS_DIR, "0000_supabase_bootstrap.sql"), "utf8");
    const before = await sql`select proname, md5(prosrc) as src from pg_proc where pronamespace = 'auth'::regnamespace order by 1`;
    await sql.begin((tx) => tx.unsafe(bootstrap));
    const after = await sql`select proname, md5(prosrc) as src from pg_proc where pronamespace = 'auth'::regnamespace order by 1`;
    expect(after).toEqual(before);
    expect(before.map((r) => r.proname)).toEqual(["email", "jwt", "role", "uid"]);
  });

  it("auth.uid(), auth.role() and auth.jwt() read request.jwt.claims as on Supabase", async () => {
    const claims = { sub: "5b0f6f1e-4a8e-4c4e-9a61-0d1f3c1e2a77", role: "authenticated", email: "s@example.test" };
    const [row] = await sql.begin(async (tx) => {
      await tx`select set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
      return tx`select auth.uid()::text as uid, auth.role() as role, auth.email() as email, auth.jwt() ->> 'sub' as sub`;
    });
    expect(row).toEqual({ uid: claims.sub, role: "authenticated", email: claims.email, sub: claims.sub });
    const [none] = await sql`select auth.uid() as uid, auth.jwt() as jwt`;
    expect(none).toEqual({ uid: null, jwt: null });
  });

  it("refuse a migration file changed after it was applied", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "cn2-migrations-"));
    try {
      await cp(MIGRATIONS_DIR, dir, { recursive: true });
      await appendFile(path.join(dir, "0002_keys.sql"), "\n-- an innocent-looking edit\n");
      await expect(migrate(sql, { dir })).rejects.toThrow(/0002_keys\.sql changed after it was applied/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("migrations on a Supabase-shaped database", () => {
  let db: ScratchDatabase;
  let sql: Sql;
  beforeAll(async () => {
    db = await emptyDatabase("supabase");
    sql = connect(db.url, { max: 1 });
  });
  afterAll(async () => {
    await sql?.end();
    await db?.drop();
  });

  it("leave Supabase's own auth schema and functions alone", async () => {
    // What a Supabase project has before our migrations: roles, an auth schema owned by
    // someone else, auth.users with more columns, and its own auth.uid().
    await sql.unsafe(`
      do $$ begin
        if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin noinherit; end if;
        if not exists (select 1 from pg_roles where rolname = 'authenticated') then create role authenticated nologin noinherit; end if;
        if not exists (select 1 from pg_roles where rolname = 'service_role') then create role service_role nologin noinherit bypassrls; end if;
      end $$;
      create schema auth;
      create table auth.users (instance_id uuid, id uuid primary key, aud varchar(255), email varchar(255), raw_app_meta_data jsonb);
      create function auth.uid() returns uuid language sql stable as $$ select '00000000-0000-4000-8000-00000000beef'::uuid $$;
      create function auth.jwt() returns jsonb language sql stable as $$ select '{"supabase": true}'::jsonb $$;
      grant usage on schema auth to anon, authenticated, service_role;`);
    const result = await migrate(sql);
    expect(result.applied).toHaveLength((await loadMigrations()).length);
    const [row] = await sql`select auth.uid()::text as uid, auth.jwt() as jwt`;
    expect(row).toEqual({ uid: "00000000-0000-4000-8000-00000000beef", jwt: { supabase: true } });
    const functions = await sql`select proname from pg_proc where pronamespace = 'auth'::regnamespace order by 1`;
    expect(functions.map((f) => f.proname)).toEqual(["jwt", "uid"]);
    const users = await sql`select column_name from information_schema.columns where table_schema = 'auth' and table_name = 'users' order by 1`;
    expect(users.map((c) => c.column_name)).toEqual(["aud", "email", "id", "instance_id", "raw_app_meta_data"]);
  });
});
