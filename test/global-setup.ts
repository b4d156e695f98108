// Runs in Node before the workerd test project starts: a real demo upstream on loopback
// and throwaway vault keys, handed to the Worker's bindings through `provide`.
import type { TestProject } from "vitest/node";
import { startDemoUpstream, upstreamBaseUrls } from "../tools/demo-upstream.ts";
import { generateVaultKey } from "../worker/vault.ts";
import { startFakeStripe, TEST_STRIPE } from "./fake-stripe.ts";

export default async function setup(project: TestProject) {
  const upstream = await startDemoUpstream({ port: 0 });
  const stripe = await startFakeStripe(TEST_STRIPE);
  const current = await generateVaultKey("test-2");
  const previous = await generateVaultKey("test-1");
  project.provide("demoUpstreamUrl", upstream.url);
  project.provide("upstreamBaseUrls", upstreamBaseUrls(upstream.url));
  // Newest first, two live at once: rotation is exercised by every run.
  project.provide("vaultPrivateKeys", JSON.stringify([current.privateKey, previous.privateKey]));
  project.provide("fakeStripeUrl", stripe.url);
  return async () => {
    await stripe.close();
    await upstream.close();
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    demoUpstreamUrl: string;
    upstreamBaseUrls: Record<string, string>;
    vaultPrivateKeys: string;
    fakeStripeUrl: string;
  }
}
