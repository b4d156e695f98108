// GET /auth/config: what the dashboard's sign-in page offers. Public values only: whether
// the dev sign-in is on, the Supabase project URL and its anon (publishable) key, which
// supabase-js in the page needs and which Supabase designs to be public. No secret here.
import type { Env } from "../../core/env.ts";
import { authMode } from "./auth.ts";
import { json } from "../../core/http.ts";

const blank = (value: string | undefined) => (value && value.trim() ? value.trim() : null);

export function authConfig(_request: Request, env: Env): Response {
  const mode = authMode(env);
  const supabaseUrl = blank(env.SUPABASE_URL);
  const supabaseAnonKey = blank(env.SUPABASE_ANON_KEY);
  return json({ devSignIn: mode.dev, supabaseUrl: supabaseUrl && supabaseAnonKey ? supabaseUrl : null, supabaseAnonKey: supabaseUrl ? supabaseAnonKey : null }, 200, { "cache-control": "no-store" });
}
