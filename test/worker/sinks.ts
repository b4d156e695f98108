// Every place a promise test must search (test/worker/promises.test.ts): the console of the
// Worker and its objects (they share the test's isolate, so a spy sees their lines), every
// Durable Object of every namespace bound to the Worker (SQLite tables, key-value storage,
// alarm), every KV namespace (keys, metadata, values), every table of every schema in
// Postgres, the messages the Worker's queue handler receives, and the rows the analytics
// sink (Tinybird) ingested. The bindings are found
// by their shape, not listed by hand, so a store added later is searched too.
import { env } from "cloudflare:workers";
import { listDurableObjectIds, runInDurableObject } from "cloudflare:test";
import { vi } from "vitest";
import worker from "../../worker/index.ts";
import { ownerDb } from "./helpers.ts";

const bindings = env as unknown as Record<string, unknown>;
const CONSOLE = ["log", "info", "warn", "error", "debug", "trace"] as const;

/** Capture every console line (all levels) until `stop()`; the lines are also kept out of the test output. */
export function captureConsole(): { lines: string[]; text(): string; stop(): void } {
  const lines: string[] = [];
  const spies = CONSOLE.map((level) =>
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => void lines.push(args.map((a) => (typeof a === "string" ? a : safeJson(a))).join(" "))),
  );
  return { lines, text: () => lines.join("\n"), stop: () => spies.forEach((s) => s.mockRestore()) };
}

/**
 * Capture every message batch the Worker's queue handler receives (seller webhook events
 * and deliveries, dead letters): the handler still runs, the bodies are recorded first.
 */
export function captureQueues(): { messages: string[]; stop(): void } {
  const messages: string[] = [];
  const handler = worker as unknown as { queue: (batch: MessageBatch<unknown>, env: unknown, ctx: ExecutionContext) => Promise<void> };
  const original = handler.queue;
  const spy = vi.spyOn(handler, "queue").mockImplementation(async (batch, e, ctx) => {
    for (const m of batch.messages) messages.push(`${batch.queue} ${safeJson(m.body)}`);
    return original.call(handler, batch, e, ctx);
  });
  return { messages, stop: () => spy.mockRestore() };
}

const safeJson = (value: unknown) => {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
};

const isObjectNamespace = (v: unknown): v is DurableObjectNamespace =>
  typeof v === "object" && v !== null && typeof (v as DurableObjectNamespace).idFromName === "function" && typeof (v as DurableObjectNamespace).get === "function";
const isKv = (v: unknown): v is KVNamespace =>
  typeof v === "object" && v !== null && typeof (v as KVNamespace).list === "function" && typeof (v as KVNamespace).getWithMetadata === "function";

/** The Worker's own bindings (the test runner adds `__VITEST_POOL_WORKERS_*` ones of its own). */
const own = () => Object.entries(bindings).filter(([name]) => !name.startsWith("__"));
/** The Worker's Durable Object namespaces and KV namespaces, by binding name. */
export const objectNamespaces = () => own().filter((entry): entry is [string, DurableObjectNamespace] => isObjectNamespace(entry[1]));
export const kvNamespaces = () => own().filter((entry): entry is [string, KVNamespace] => isKv(entry[1]));

/** One object's whole storage as text: every SQLite table's rows, every key-value entry, the alarm. */
export function dumpObject(stub: DurableObjectStub): Promise<string> {
  return runInDurableObject(stub, async (_instance, state) => {
    const tables = state.storage.sql
      .exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'sqlite_%'")
      .toArray();
    const rows = tables.map((t) => ({ [t.name]: state.storage.sql.exec(`SELECT * FROM "${t.name}"`).toArray() }));
    const kv = [...(await state.storage.list()).entries()];
    return safeJson({ rows, kv, alarm: await state.storage.getAlarm() });
  });
}

/** Every object this test file created, in every namespace: `NAMESPACE/<id>` -> its storage as text. */
export async function dumpAllObjects(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, ns] of objectNamespaces()) {
    for (const id of await listDurableObjectIds(ns)) out[`${name}/${id.toString()}`] = await dumpObject(ns.get(id));
  }
  return out;
}

/** Every KV namespace: `BINDING` -> every key with its metadata, expiration and value, as text. */
export async function dumpAllKv(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, ns] of kvNamespaces()) {
    const entries: unknown[] = [];
    let cursor: string | undefined;
    do {
      const page: KVNamespaceListResult<unknown> = await ns.list(cursor ? { cursor } : {});
      for (const k of page.keys) entries.push(k, await ns.get(k.name));
      cursor = page.list_complete ? undefined : page.cursor;
    } while (cursor);
    out[name] = safeJson(entries);
  }
  return out;
}

/** Every base table of every schema in Postgres but the catalogs, as `schema.table`. */
export function postgresTables(): Promise<string[]> {
  return ownerDb(async (sql) => {
    const rows = await sql<{ name: string }[]>`
      select format('%I.%I', table_schema, table_name) as name from information_schema.tables
       where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema') order by 1`;
    return rows.map((r) => r.name);
  });
}

/**
 * Which Postgres tables hold any of `needles` anywhere in a row (the row as text, case
 * insensitive): `[{table, needle}]`. The database is shared by the run, so needles must be
 * this test's own.
 */
export function postgresHolding(needles: readonly string[]): Promise<{ table: string; needle: string }[]> {
  const patterns = needles.map((n) => `%${n.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
  return ownerDb(async (sql) => {
    const found: { table: string; needle: string }[] = [];
    const tables = await sql<{ name: string }[]>`
      select format('%I.%I', table_schema, table_name) as name from information_schema.tables
       where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema') order by 1`;
    for (const { name } of tables) {
      const rows = await sql.unsafe<{ row: string }[]>(`select t::text as row from ${name} t where t::text ilike any($1::text[]) limit 100`, [patterns]);
      for (const needle of needles) if (rows.some((r) => r.row.toLowerCase().includes(needle.toLowerCase()))) found.push({ table: name, needle });
    }
    return found;
  });
}

/** `{sink: text}` -> the `[sink, needle]` pairs where a needle occurs (case insensitive). */
export function occurrences(sinks: Record<string, string>, needles: readonly string[]): [string, string][] {
  const hits: [string, string][] = [];
  for (const [sink, text] of Object.entries(sinks)) {
    const lower = text.toLowerCase();
    for (const needle of needles) if (lower.includes(needle.toLowerCase())) hits.push([sink, needle]);
  }
  return hits;
}

/**
 * What the analytics sink (Tinybird, faked on loopback in the tests) ingested, as text,
 * once every one of `requestIds` is there: rows travel from the key objects' alarms through
 * the analytics queue, so they are waited for (bounded by count).
 */
export async function analyticsRows(requestIds: readonly string[]): Promise<string> {
  const e = env as unknown as { TINYBIRD_API_BASE: string; TINYBIRD_DATASOURCE?: string };
  const url = `${e.TINYBIRD_API_BASE}/__fake/rows?name=${encodeURIComponent(e.TINYBIRD_DATASOURCE || "cn2_requests")}`;
  let text = "";
  for (let i = 0; i < 200; i++) {
    text = await (await fetch(url)).text();
    if (requestIds.every((id) => text.includes(id))) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the analytics sink never received ${requestIds.filter((id) => !text.includes(id)).join(", ")}`);
}

/** A response as text for searching: status, every header (all Set-Cookie lines too) and the body. */
export async function responseText(res: Response): Promise<string> {
  const headers = [...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n");
  const body = await res.text().catch((err: unknown) => `<body failed: ${String(err)}>`);
  return `${res.status}\n${headers}\n${res.headers.getSetCookie().join("\n")}\n\n${body}`;
}
