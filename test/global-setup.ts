// Runs in Node before the workerd test project starts: a real demo upstream on loopback
// and throwaway vault keys, handed to the Worker's bindings through `provide`.
import type { TestProject } from "vitest/node";
import { startDemoUpstream, upstreamBaseUrls } from "../tools/demo-upstream.ts";
import { generateVaultKey } from "../core/vault.ts";
import { startFakeStripe, TEST_STRIPE } from "./fake-stripe.ts";
import { startWebhookReceiver } from "./webhook-receiver.ts";
import { connect, hyperdriveUrl, migrate, startEmbeddedDb } from "../tools/database.ts";
import { startFakePersona } from "../tools/fake-persona.ts";
import { generateDevSigningKey } from "../core/dev-signing-key.ts";
import { startFakeSupabase, TEST_SUPABASE } from "./fake-supabase.ts";
import { TEST_PERSONA } from "./test-secrets.ts";
import { startAnvil } from "./anvil.ts";
import { startFakeTinybird } from "./fake-tinybird.ts";

export default async function setup(project: TestProject) {
  // Independent of each other: started together (anvil and the migrated database take the
  // longest), and on any failure the ones already up are closed before the error is thrown.
  const [upstream, stripe, receiver, db, devKey, persona, supabase, anvil, tinybird, current, previous] = await all([
    startDemoUpstream({ port: 0 }),
    startFakeStripe(TEST_STRIPE),
    // Seller webhooks are delivered to it over real HTTP (DEV_WEBHOOKS_ALLOW_HTTP=1 in the tests).
    startWebhookReceiver(),
    // Postgres for the Worker's Hyperdrive binding: a migrated in-memory PGlite (or a fresh
    // database on DATABASE_URL's server). Durable Object and KV storage are isolated per test
    // file; this database is shared by the run, so suites make sellers with fresh emails.
    startTestDb(),
    // Seller accounts: a throwaway dev sign-in key, Persona and Supabase's Admin API faked.
    generateDevSigningKey("test-dev"),
    startFakePersona(TEST_PERSONA),
    startFakeSupabase(TEST_SUPABASE),
    // USDC payouts: a real local Tempo node (anvil --network tempo).
    startAnvil(),
    // The analytics sink's production destination, faked (it can fail or hang on demand).
    startFakeTinybird(),
    generateVaultKey("test-2"),
    generateVaultKey("test-1"),
  ] as const);
  project.provide("demoUpstreamUrl", upstream.url);
  project.provide("upstreamBaseUrls", upstreamBaseUrls(upstream.url));
  // Newest first, two live at once: rotation is exercised by every run.
  project.provide("vaultPrivateKeys", JSON.stringify([current.privateKey, previous.privateKey]));
  project.provide("fakeStripeUrl", stripe.url);
  project.provide("webhookReceiverUrl", receiver.url);
  project.provide("dbUrl", db.url);
  project.provide("authDevSigningKey", JSON.stringify(devKey.privateJwk));
  project.provide("authJwks", JSON.stringify(devKey.jwks));
  project.provide("fakePersonaUrl", persona.url);
  project.provide("fakeSupabaseUrl", supabase.url);
  project.provide("anvilUrl", anvil.url);
  project.provide("fakeTinybirdUrl", tinybird.url);
  return async () => {
    await tinybird.close();
    await anvil.close();
    await supabase.close();
    await persona.close();
    await db.close();
    await receiver.close();
    await stripe.close();
    await upstream.close();
  };
}

/** Promise.all that, when one rejects, waits for the rest and closes those that started. */
async function all<const T extends readonly unknown[]>(starts: T): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const settled = await Promise.allSettled(starts);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) {
    await Promise.allSettled(
      settled.map((s) => (s.status === "fulfilled" && typeof (s.value as { close?: unknown })?.close === "function" ? (s.value as { close(): Promise<void> }).close() : undefined)),
    );
    throw failed.reason;
  }
  return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as { -readonly [K in keyof T]: Awaited<T[K]> };
}

async function startTestDb(): Promise<{ url: string; close(): Promise<void> }> {
  if (process.env.DATABASE_URL) {
    const { createScratchDatabase } = await import("./db/scratch.ts");
    const scratch = await createScratchDatabase(process.env.DATABASE_URL, "workers");
    const sql = connect(scratch.url, { max: 1 });
    await migrate(sql).finally(() => sql.end());
    return { url: hyperdriveUrl(scratch.url), close: () => scratch.drop() };
  }
  const db = await startEmbeddedDb();
  const sql = connect(db.url, { max: 1 });
  await migrate(sql).finally(() => sql.end());
  return db;
}

declare module "vitest" {
  export interface ProvidedContext {
    demoUpstreamUrl: string;
    upstreamBaseUrls: Record<string, string>;
    vaultPrivateKeys: string;
    fakeStripeUrl: string;
    webhookReceiverUrl: string;
    dbUrl: string;
    authDevSigningKey: string;
    authJwks: string;
    fakePersonaUrl: string;
    fakeSupabaseUrl: string;
    anvilUrl: string;
    fakeTinybirdUrl: string;
  }
}
