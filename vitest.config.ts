import { readFileSync } from "node:fs";
import { defineConfig, type Plugin } from "vitest/config";
import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { TEST_STRIPE } from "./test/fake-stripe.ts";

/** mppx ships sourceMappingURL comments without the maps: skip them instead of warning per module. */
const mppxWithoutMaps: Plugin = {
  name: "mppx-without-source-maps",
  enforce: "pre",
  load(id) {
    if (!/\/node_modules\/mppx\/dist\/.*\.js$/.test(id)) return null;
    return readFileSync(id, "utf8").replace(/\n\/\/# sourceMappingURL=\S+\s*$/, "\n");
  },
};

// Two projects: tests inside workerd (the Worker, its Durable Objects, KV) and plain
// Node tests (tools, CLI, demo upstream). globalSetup starts the demo upstream on
// loopback and generates throwaway vault keys; the Worker reaches the upstream over HTTP.
export default defineConfig({
  test: {
    projects: [
      {
        plugins: [
          mppxWithoutMaps,
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                OPS_TOKEN: "test-ops-token",
                VAULT_PRIVATE_KEYS: inject<string>("vaultPrivateKeys"),
                UPSTREAM_BASE_URLS: JSON.stringify(inject<Record<string, string>>("upstreamBaseUrls")),
                DEMO_UPSTREAM_URL: inject<string>("demoUpstreamUrl"),
                POOL_CACHE_MS: "0",
                POOL_DEBOUNCE_MS: "0",
                UPSTREAM_TIMEOUT_MS: "2000",
                // Payments: a test HMAC key, the dev faucet on, Stripe faked on loopback.
                MPP_SECRET_KEY: "test-mpp-secret-key-0123456789abcdef0123456789",
                DEV_FAUCET: "1",
                STRIPE_API_BASE: inject<string>("fakeStripeUrl"),
                STRIPE_SECRET_KEY: TEST_STRIPE.secretKey,
                STRIPE_WEBHOOK_SECRET: TEST_STRIPE.webhookSecret,
              },
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["test/worker/**/*.test.ts"],
          globalSetup: ["test/global-setup.ts"],
          // The first paid request in a file loads mppx through vite's module graph (~10 s here).
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: "node",
          environment: "node",
          include: ["test/node/**/*.test.ts"],
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
