// Builds the seller dashboard (dashboard/, Vite + React) into dashboard/dist, the folder
// wrangler.toml's [assets] serves. Used by `npm start` and the browser tests; `npm run
// build:dashboard` is the same build from the command line.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { build } from "vite";

const ROOT = join(import.meta.dirname, "..");

export async function buildDashboard(): Promise<void> {
  // Vite builds React's production bundle only when NODE_ENV is unset or "production"
  // (vitest sets "test").
  const nodeEnv = process.env.NODE_ENV;
  process.env.NODE_ENV = "production";
  try {
    await build({ configFile: join(ROOT, "dashboard", "vite.config.ts"), logLevel: "warn" });
  } finally {
    if (nodeEnv === undefined) delete process.env.NODE_ENV;
    else process.env.NODE_ENV = nodeEnv;
  }
}

/** Build only when dashboard/dist has no app yet (the bench, the soak and Node tests bundle the Worker). */
export async function ensureDashboardBuilt(): Promise<void> {
  if (!existsSync(join(ROOT, "dashboard", "dist", "index.html"))) await buildDashboard();
}
