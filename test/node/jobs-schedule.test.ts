// M1: the Cron Triggers wrangler.toml declares and the jobs worker/jobs/schedule.ts runs for
// each are the same set: a cron without jobs would fire for nothing, a job without a cron
// would never run (and an unknown cron is only logged by the scheduled handler).
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { expect, it } from "vitest";
import { JOBS, SCHEDULE, cronsOf } from "../../worker/jobs/schedule.ts";

/** The `crons` array of wrangler.toml's [triggers] table (a one-line TOML array of strings). */
function wranglerCrons(): string[] {
  const toml = readFileSync(resolve(import.meta.dirname, "../../wrangler.toml"), "utf8");
  const triggers = toml.split(/^\[/m).find((section) => section.startsWith("triggers]"));
  const line = triggers?.match(/^crons\s*=\s*\[(.*)\]\s*$/m)?.[1];
  if (line === undefined) throw new Error("wrangler.toml has no [triggers] crons");
  return [...line.matchAll(/"([^"]+)"/g)].map((m) => m[1]!);
}

it("M1: every cron in wrangler.toml runs jobs, and every job has a cron", () => {
  expect(wranglerCrons().sort()).toEqual(Object.keys(SCHEDULE).sort());
  for (const job of JOBS) expect(cronsOf(job).length, job).toBeGreaterThan(0);
  // The safety-net flush runs before the rollup it feeds, in the same trigger.
  const hourly = Object.values(SCHEDULE).find((jobs) => jobs.includes("rollup"))!;
  expect(hourly.indexOf("earnings_flush")).toBeLessThan(hourly.indexOf("rollup"));
  expect(hourly.indexOf("earnings_flush")).toBeGreaterThanOrEqual(0);
});
