// Sign in. Locally: the dev sign-in (any email; `npm start` enables it). In production:
// Supabase Auth in the page (an emailed one-time code, or GitHub), then the access token is
// traded for our session cookie at POST /auth/session. supabase-js keeps its own state in
// sessionStorage only for the GitHub round trip (PKCE verifier) and is signed out locally
// once our cookie is set: the only cookie is the essential session cookie (PR26).
import { useEffect, useState, type FormEvent } from "react";
import { api, type AuthConfig } from "../lib/api.ts";
import { ErrorState, Field, Link, Loading, useLoad } from "../lib/ui.tsx";

type Supabase = import("@supabase/supabase-js").SupabaseClient;

async function supabaseClient(config: AuthConfig): Promise<Supabase> {
  const { createClient } = await import("@supabase/supabase-js");
  return createClient(config.supabaseUrl!, config.supabaseAnonKey!, {
    auth: { flowType: "pkce", storage: sessionStorage, persistSession: true, autoRefreshToken: false, detectSessionInUrl: true },
  });
}

async function trade(client: Supabase, accessToken: string) {
  await api("/auth/session", { method: "POST", json: { accessToken } });
  // Our cookie holds the session now; drop supabase-js's copy.
  await client.auth.signOut({ scope: "local" });
}

export function SignIn({ onSignedIn, notice }: { onSignedIn: () => void; notice?: string }) {
  const config = useLoad(() => api<AuthConfig>("/auth/config"));
  const [email, setEmail] = useState("");
  const [code, setCode] = useState("");
  const [sent, setSent] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  // Back from GitHub: supabase-js finds the code in the URL and makes the session.
  useEffect(() => {
    const c = config.data;
    if (!c?.supabaseUrl || !new URLSearchParams(location.search).has("code")) return;
    void (async () => {
      try {
        const client = await supabaseClient(c);
        const { data } = await client.auth.getSession();
        if (data.session) {
          await trade(client, data.session.access_token);
          history.replaceState(null, "", "/");
          onSignedIn();
        }
      } catch (e) {
        setError(e);
      }
    })();
  }, [config.data, onSignedIn]);

  if (config.loading) return <Loading what="sign-in options" />;
  if (config.error) return <ErrorState error={config.error} retry={config.reload} />;
  const c = config.data!;

  const run = (fn: () => Promise<void>) => async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await fn();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="signin-title" className="narrow">
      <h1 id="signin-title">Sign in</h1>
      {notice ? <p role="status" className="notice">{notice}</p> : null}
      {error ? <ErrorState error={error} /> : null}
      {c.devSignIn ? (
        <form onSubmit={run(async () => {
          await api("/auth/dev/sign-in", { method: "POST", json: { email } });
          onSignedIn();
        })}>
          <p>Local development: sign in as any email address (the account is created on first use).</p>
          <Field id="dev-email" label="Email">
            <input id="dev-email" type="email" required autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} />
          </Field>
          <button type="submit" disabled={busy}>Sign in (dev)</button>
        </form>
      ) : null}
      {c.supabaseUrl && c.supabaseAnonKey ? (
        <>
          {!sent ? (
            <form onSubmit={run(async () => {
              const client = await supabaseClient(c);
              const { error: e } = await client.auth.signInWithOtp({ email, options: { shouldCreateUser: true, emailRedirectTo: `${location.origin}/sign-in` } });
              if (e) throw e;
              setSent(true);
            })}>
              <Field id="otp-email" label="Email for a sign-in code" hint="We email you a one-time code (and a sign-in link).">
                <input id="otp-email" type="email" required autoComplete="email" aria-describedby="otp-email-hint" value={email} onChange={(e) => setEmail(e.target.value)} />
              </Field>
              <button type="submit" disabled={busy}>Email me a code</button>
            </form>
          ) : (
            <form onSubmit={run(async () => {
              const client = await supabaseClient(c);
              const { data, error: e } = await client.auth.verifyOtp({ email, token: code.trim(), type: "email" });
              if (e || !data.session) throw e ?? new Error("the code was not accepted; ask for a new one");
              await trade(client, data.session.access_token);
              onSignedIn();
            })}>
              <p role="status">We sent a code to {email}. Enter it here, or open the link in the email.</p>
              <Field id="otp-code" label="One-time code">
                <input id="otp-code" inputMode="numeric" autoComplete="one-time-code" required value={code} onChange={(e) => setCode(e.target.value)} />
              </Field>
              <button type="submit" disabled={busy}>Sign in</button>{" "}
              <button type="button" onClick={() => setSent(false)}>Use another email</button>
            </form>
          )}
          <p>or</p>
          <button type="button" disabled={busy} onClick={() => void (async () => {
            try {
              const client = await supabaseClient(c);
              const { error: e } = await client.auth.signInWithOAuth({ provider: "github", options: { redirectTo: `${location.origin}/sign-in` } });
              if (e) throw e;
            } catch (err) {
              setError(err);
            }
          })()}>Sign in with GitHub</button>
        </>
      ) : null}
      <p>
        Buying or just looking? The <Link to="/stats">marketplace statistics</Link> are public:
        keys on sale, prices, uptime and latency per provider, region and tier.
      </p>
      {!c.devSignIn && !c.supabaseUrl ? (
        <div role="alert" className="state error">
          <p>Sign-in is not configured on this server.</p>
          <p>Operators: set SUPABASE_URL and SUPABASE_ANON_KEY (production), or run <code>npm start</code> locally for the dev sign-in.</p>
        </div>
      ) : null}
    </section>
  );
}
