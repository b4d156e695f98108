import { readFileSync } from "node:fs";
import { defineConfig, type Plugin } from "vitest/config";
import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { TEST_STRIPE } from "./test/fake-stripe.ts";
import { TEST_SUPABASE } from "./test/fake-supabase.ts";
import { TEST_PERSONA } from "./test/test-secrets.ts";
import { ANVIL_TREASURY_KEY, ANVIL_USD_TOKEN } from "./test/anvil.ts";
import { TEST_TINYBIRD } from "./test/fake-tinybird.ts";

/** mppx and stripe ship sourceMappingURL comments without the maps: skip them instead of warning per module. */
const mppxWithoutMaps: Plugin = {
  name: "mppx-without-source-maps",
  enforce: "pre",
  load(id) {
    // Ids may carry Vite's ?v= version query (with the dependency optimizer on).
    if (!/\/node_modules\/(?:mppx\/dist|stripe\/esm)\/.*\.js(?:\?.*)?$/.test(id)) return null;
    return readFileSync(id.replace(/\?.*$/, ""), "utf8").replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n");
  },
};

// Two projects: tests inside workerd (the Worker, its Durable Objects, KV) and plain
// Node tests (tools, CLI, demo upstream). globalSetup starts the demo upstream on
// loopback and generates throwaway vault keys; the Worker reaches the upstream over HTTP.
export default defineConfig({
  test: {
    // Ending a postgres client in workerd (core/postgres.ts) leaves its socket reader rejecting
    // with exactly this (postgres/cf/polyfills.js): harmless, and the only error ignored.
    // Vitest reads this option from the root config only.
    onUnhandledError: (error) => (error.message === "This socket has been closed." ? false : undefined),
    projects: [
      {
        plugins: [
          mppxWithoutMaps,
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              // Postgres: the database test/global-setup.ts started, behind Hyperdrive.
              hyperdrives: { HYPERDRIVE: inject<string>("dbUrl") },
              bindings: {
                // Development, opted into (core/environment.ts): wrangler.toml is production.
                CN2_DEV: "1",
                OPS_TOKEN: "test-ops-token",
                PROXY_TOKEN: "test-proxy-token",
                VAULT_PRIVATE_KEYS: inject<string>("vaultPrivateKeys"),
                UPSTREAM_BASE_URLS: JSON.stringify(inject<Record<string, string>>("upstreamBaseUrls")),
                DEMO_UPSTREAM_URL: inject<string>("demoUpstreamUrl"),
                POOL_CACHE_MS: "0",
                POOL_DEBOUNCE_MS: "0",
                // Premium is earned from a track record (P2); ten calls make one in tests.
                PREMIUM_MIN_CALLS: "10",
                UPSTREAM_TIMEOUT_MS: "2000",
                // Payments: a test HMAC key, the dev faucet on, Stripe faked on loopback.
                MPP_SECRET_KEY: "test-mpp-secret-key-0123456789abcdef0123456789",
                DEV_FAUCET: "1",
                STRIPE_API_BASE: inject<string>("fakeStripeUrl"),
                STRIPE_SECRET_KEY: TEST_STRIPE.secretKey,
                STRIPE_WEBHOOK_SECRET: TEST_STRIPE.webhookSecret,
                // Seller accounts: the dev sign-in with a throwaway key, Supabase's Admin API
                // and Persona faked on loopback, earnings flushed only when a test asks.
                AUTH_DEV_SIGNING_KEY: inject<string>("authDevSigningKey"),
                AUTH_JWKS: inject<string>("authJwks"),
                AUTH_ISSUER: "cn2-test",
                SUPABASE_URL: inject<string>("fakeSupabaseUrl"),
                SUPABASE_SERVICE_ROLE_KEY: TEST_SUPABASE.serviceRoleKey,
                PERSONA_API_BASE: inject<string>("fakePersonaUrl"),
                PERSONA_API_KEY: TEST_PERSONA.apiKey,
                PERSONA_TEMPLATE_ID: TEST_PERSONA.templateId,
                PERSONA_WEBHOOK_SECRET: TEST_PERSONA.webhookSecret,
                EARNINGS_FLUSH_MS: "600000",
                // Seller webhooks: test-only sealing keys (newest first, two live, so key
                // rotation is exercised), loopback http receivers allowed, fast retries.
                WEBHOOK_SECRET_KEYS: JSON.stringify([
                  { kid: "wh-test-2", key: "MyZo8YQdfWuupICmiFD1LAFRY/0jkUVmzLmuRjW9Og0=" },
                  { kid: "wh-test-1", key: "oRALN7ZGI+l5tfKwxkjpMLOaIfsFtCkGm3MSYxf7vTw=" },
                ]),
                DEV_WEBHOOKS_ALLOW_HTTP: "1",
                WEBHOOK_RETRY_BASE_SECONDS: "1",
                WEBHOOK_TIMEOUT_MS: "1500",
                WEBHOOK_RECEIVER_URL: inject<string>("webhookReceiverUrl"),
                // Payouts: a one-cent minimum; USDC from anvil's first dev account on the
                // local Tempo node test/global-setup.ts starts.
                PAYOUT_MIN_MICROS: "10000",
                TEMPO_PAYOUT_CHAIN: "tempoLocalnet",
                TEMPO_RPC_URL: inject<string>("anvilUrl"),
                TEMPO_PAYOUT_TOKEN: ANVIL_USD_TOKEN,
                TEMPO_TREASURY_KEY: ANVIL_TREASURY_KEY,
                // The analytics sink: Tinybird (faked on loopback; it fails or hangs on
                // demand), a one-second timeout and fast retries.
                TINYBIRD_TOKEN: TEST_TINYBIRD.token,
                TINYBIRD_API_BASE: inject<string>("fakeTinybirdUrl"),
                ANALYTICS_TIMEOUT_MS: "1000",
                ANALYTICS_RETRY_BASE_SECONDS: "1",
              },
              // Webhook deliveries give up after 4 attempts here (12 retries in wrangler.toml),
              // so the dead-letter path runs end to end in seconds. Analytics batches get a
              // second each (1 s base, doubling) to ride out a failing or hanging fake sink.
              queueConsumers: {
                "cn2-webhooks": { maxBatchSize: 10, maxBatchTimeout: 1, maxRetries: 3, deadLetterQueue: "cn2-webhooks-dlq" },
                "cn2-analytics": { maxBatchSize: 100, maxBatchTimeout: 1, maxRetries: 10, deadLetterQueue: "cn2-analytics-dlq" },
              },
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["test/worker/**/*.test.ts"],
          // Each test file gets a fresh workerd that imports the Worker's whole module graph;
          // the big dependencies pre-bundled once per run (by Vite's optimizer) load as a
          // few modules instead of hundreds.
          // (Runtime modules stay workerd's own.)
          deps: {
            optimizer: {
              ssr: {
                enabled: true,
                include: [
                  "mppx", "mppx/client", "mppx/server/core", "viem", "viem/accounts", "viem/chains", "viem/tempo", "stripe", "jose", "valibot",
                  "itty-router", "partyserver", "postgres", "@supabase/supabase-js", "fast-check", "openai", "@anthropic-ai/sdk",
                ],
                rolldownOptions: { external: [/^node:/, /^cloudflare:/] },
              },
            },
          },
          globalSetup: ["test/global-setup.ts"],
          // The first paid request in a file loads mppx through vite's module graph (~10 s here).
          testTimeout: 30_000,
          // A file's first beforeEach signs a seller in: the first Worker request also loads its modules.
          hookTimeout: 30_000,
        },
      },
      {
        test: {
          name: "node",
          environment: "node",
          include: ["test/node/**/*.test.ts"],
          // Two files at a time (Vitest's default is one on two cores): each file starts what
          // it needs on ports of its own, and the slow ones mostly wait on npm, wrangler and
          // workerd. A group of its own, as its worker count differs from the others'.
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
        },
      },
      {
        // The seller dashboard in real headless Chromium (Debian's, via playwright-core)
        // against the real Worker under wrangler dev: one marketplace for the run.
        test: {
          name: "browser",
          environment: "node",
          include: ["test/browser/**/*.test.ts"],
          globalSetup: ["test/browser/global-setup.ts"],
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 180_000,
        },
      },
      {
        // Postgres: migrations, row-level security, ledger rules. One migrated database for
        // the run (in-memory PGlite, or a fresh database on DATABASE_URL's server).
        test: {
          name: "db",
          environment: "node",
          include: ["test/db/**/*.test.ts"],
          globalSetup: ["test/db/global-setup.ts"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
