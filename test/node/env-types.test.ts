// core/env.ts's Env is what `wrangler types` generates from wrangler.toml
// (worker-configuration.d.ts): this fails when wrangler.toml changed and `npm run types`
// was not run, so the Worker's type of its bindings never drifts from its configuration.
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");

it("worker-configuration.d.ts is up to date with wrangler.toml (npm run types)", () => {
  const run = spawnSync("npm", ["run", "--silent", "types", "--", "--check"], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
  expect(`${run.stdout}${run.stderr}`).toMatch(/up to date/);
  expect(run.status).toBe(0);
}, 130_000);
