// The seller's side of the API (S1-S9): sign-in, the vault's public key, profile, keys,
// payouts, KYC, earnings and data rights. Mounted by worker/router.ts; every /api route
// here needs the seller's session (sellerRoute in profile.ts), except the public key.
import type { IRequest } from "itty-router";
import { json } from "../../core/http.ts";
import { parseVaultPrivateKeys, publicKeysOf } from "../../core/vault.ts";
import type { Env } from "../../core/env.ts";
import * as dataRights from "./data-rights.ts";
import * as earnings from "./earnings.ts";
import * as keys from "./keys.ts";
import * as kyc from "./kyc.ts";
import * as payouts from "./payouts.ts";
import * as profile from "./profile.ts";
import * as signIn from "./sign-in.ts";
import { authConfig } from "./auth-config.ts";
import { liveSocket } from "./live.ts";

/** Payout onboarding (worker/payouts/) loads with its first call. */
const payoutOnboarding = () => import("./payout-onboarding.ts");

/** What sellers encrypt their keys to (S2): the newest vault key first. */
function vaultPublicKey(_req: Request, env: Env) {
  const all = publicKeysOf(parseVaultPrivateKeys(env.VAULT_PRIVATE_KEYS));
  return json({ current: all[0]?.kid ?? null, keys: all });
}

export const sellerRoutes = [
  ["get", "/api/vault/public-key", vaultPublicKey],
  // Sign-in (S1): Bearer JWT or the session cookie (+ CSRF header on writes).
  ["post", "/auth/dev/sign-in", signIn.devSignInPost],
  ["get", "/auth/dev/sign-in", signIn.devSignInLink],
  ["post", "/auth/session", signIn.createSession],
  ["post", "/auth/sign-out", signIn.signOut],
  // What the dashboard's sign-in page needs (Supabase URL and anon key, or the dev sign-in).
  ["get", "/auth/config", authConfig],
  // The dashboard's live feed (S8): authenticated here, then forwarded to the seller's own room.
  ["get", "/api/live/:room", liveSocket],
  ["get", "/api/me", profile.getMe],
  ["patch", "/api/me", profile.patchMe],
  ["post", "/api/stats-opt-out", profile.statsOptOut],
  ["post", "/api/keys", keys.createKey],
  ["get", "/api/keys", keys.listKeys],
  ["get", "/api/keys/:id", keys.getKey],
  ["patch", "/api/keys/:id", keys.patchKey],
  ["delete", "/api/keys/:id", keys.deleteKey],
  ["post", "/api/keys/:id/pause", keys.pauseKey],
  ["post", "/api/keys/:id/resume", keys.resumeKey],
  ["get", "/api/payout", payouts.getPayout],
  ["put", "/api/payout", payouts.putPayout],
  ["delete", "/api/payout", payouts.deletePayout],
  ["post", "/api/payouts", payouts.requestPayout],
  ["post", "/api/payout/stripe/onboard", async (req: IRequest, env: Env, ctx: ExecutionContext) => (await payoutOnboarding()).onboardStripe(req, env, ctx)],
  ["post", "/api/payout/confirm", async (req: IRequest, env: Env, ctx: ExecutionContext) => (await payoutOnboarding()).confirmEvmAddress(req, env, ctx)],
  ["put", "/api/payout/schedule", async (req: IRequest, env: Env, ctx: ExecutionContext) => (await payoutOnboarding()).putSchedule(req, env, ctx)],
  ["post", "/api/kyc/start", kyc.startKyc],
  ["post", "/webhooks/persona", kyc.personaWebhook],
  ["get", "/api/earnings", earnings.getEarnings],
  ["get", "/api/export", dataRights.exportData],
  ["delete", "/api/account", dataRights.deleteAccount],
] as const;
