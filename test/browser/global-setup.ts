// One marketplace for the browser test run (starting wrangler dev costs seconds).
import type { TestProject } from "vitest/node";
import { startStack } from "./stack.ts";

export default async function setup(project: TestProject) {
  const stack = await startStack();
  project.provide("browserStack", { url: stack.url, opsToken: stack.opsToken, proxyToken: stack.proxyToken, demoUrl: stack.demoUrl, databaseUrl: stack.databaseUrl, supabaseUrl: stack.supabaseUrl });
  return () => stack.stop();
}

declare module "vitest" {
  export interface ProvidedContext {
    browserStack: { url: string; opsToken: string; proxyToken: string; demoUrl: string; databaseUrl: string; supabaseUrl: string };
  }
}
