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
  const upstream = await startDemoUpstream({ port: 0 });
  const stripe = await startFakeStripe(TEST_STRIPE);
  // Seller webhooks are delivered to it over real HTTP (DEV_WEBHOOKS_ALLOW_HTTP=1 in the tests).
  const receiver = await startWebhookReceiver();
  // Postgres for the Worker's Hyperdrive binding: a migrated in-memory PGlite (or a fresh
  // database on DATABASE_URL's server). Durable Object and KV storage are isolated per test
  // file; this database is shared by the run, so suites make sellers with fresh emails.
  const db = await startTestDb();
  // Seller accounts: a throwaway dev sign-in key, Persona and Supabase's Admin API faked.
  const devKey = await generateDevSigningKey("test-dev");
  const persona = await startFakePersona(TEST_PERSONA);
  const supabase = await startFakeSupabase(TEST_SUPABASE);
  // USDC payouts: a real local Tempo node (anvil --network tempo).
  const anvil = await startAnvil();
  // The analytics sink's production destination, faked (it can fail or hang on demand).
  const tinybird = await startFakeTinybird();
  const current = await generateVaultKey("test-2");
  const previous = await generateVaultKey("test-1");
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
