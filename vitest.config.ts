import { defineConfig } from "vitest/config";
import { cloudflareTest } from "@cloudflare/vitest-plugin";

// Two projects: tests inside workerd (the Worker, its Durable Objects, KV) and plain
// Node tests (tools, CLI, demo upstream). globalSetup starts the demo upstream on
// loopback and generates throwaway vault keys; the Worker reaches the upstream over HTTP.
export default defineConfig({
  test: {
    projects: [
      {
        plugins: [
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
              },
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["test/worker/**/*.test.ts"],
          globalSetup: ["test/global-setup.ts"],
        },
      },
      {
        test: {
          name: "node",
          environment: "node",
          include: ["test/node/**/*.test.ts"],
        },
      },
    ],
  },
});
