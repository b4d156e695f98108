// The seller dashboard: who is signed in (GET /api/me), the live feed for that seller, and
// one page per path (single-page routing; the Worker serves index.html for unknown paths).
// The public statistics page (/stats) needs no session.
import { StrictMode, useCallback, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { api, ApiFailure, getMe, type Me } from "./lib/api.ts";
import { useLiveKeys } from "./lib/live.ts";
import { ErrorState, Link, Loading, navigate } from "./lib/ui.tsx";
import { AddKey } from "./pages/AddKey.tsx";
import { EarningsPage } from "./pages/Earnings.tsx";
import { Keys } from "./pages/Keys.tsx";
import { Payouts } from "./pages/Payouts.tsx";
import { Privacy } from "./pages/Privacy.tsx";
import { SignIn } from "./pages/SignIn.tsx";
import { Stats } from "./pages/Stats.tsx";
import { Webhooks } from "./pages/Webhooks.tsx";
import "./styles.css";

const NAV = [
  { to: "/", label: "Keys" },
  { to: "/keys/new", label: "Add a key" },
  { to: "/earnings", label: "Earnings" },
  { to: "/payouts", label: "Payouts" },
  { to: "/webhooks", label: "Webhooks" },
  { to: "/privacy", label: "Privacy" },
  { to: "/stats", label: "Statistics" },
];
/** What someone not signed in can open. */
const PUBLIC_NAV = [
  { to: "/stats", label: "Statistics" },
  { to: "/sign-in", label: "Sign in" },
];

function usePath() {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const on = () => setPath(location.pathname);
    addEventListener("popstate", on);
    return () => removeEventListener("popstate", on);
  }, []);
  return path;
}

function App() {
  const path = usePath();
  const [me, setMe] = useState<{ seller?: Me; error?: unknown; loading: boolean }>({ loading: true });
  const [notice, setNotice] = useState<string | undefined>();
  const load = useCallback(() => {
    setMe((m) => ({ ...m, loading: true }));
    getMe().then((seller) => setMe({ seller, loading: false }), (error: unknown) => setMe({ error, loading: false }));
  }, []);
  useEffect(load, [load]);
  const { keys: live, status } = useLiveKeys(me.seller?.id);

  // Move focus to the new page's heading, so keyboard and screen-reader users land there.
  useEffect(() => {
    const h1 = document.querySelector<HTMLElement>("main h1");
    if (h1) {
      h1.tabIndex = -1;
      h1.focus({ preventScroll: true });
    }
  }, [path, me.seller]);

  const signedOut = me.error instanceof ApiFailure && (me.error.status === 401 || me.error.status === 410);
  let page;
  if (path === "/stats") page = <Stats />;
  else if (me.loading && !me.seller) page = <Loading what="your account" />;
  else if (signedOut || path === "/sign-in" || !me.seller) {
    page = signedOut || path === "/sign-in" || !me.error
      ? <SignIn notice={notice} onSignedIn={() => { setNotice(undefined); navigate("/"); load(); }} />
      : <ErrorState error={me.error} retry={load} />;
  } else {
    const seller = me.seller;
    page =
      path === "/keys/new" ? <AddKey me={seller} /> :
      path === "/earnings" ? <EarningsPage live={live} /> :
      path === "/payouts" ? <Payouts /> :
      path === "/webhooks" ? <Webhooks /> :
      path === "/privacy" ? <Privacy me={seller} onChanged={load} onClosed={() => { setNotice("Your account is closed and you are signed out."); setMe({ loading: false, error: new ApiFailure(401, "unauthorized", "signed out") }); navigate("/sign-in"); }} /> :
      path === "/" ? <Keys me={seller} live={live} status={status} /> :
      <section><h1>Page not found</h1><p>There is nothing at {path}. <Link to="/">Go to your keys</Link>.</p></section>;
  }

  return (
    <>
      <a className="skip" href="#main">Skip to content</a>
      <header>
        <span className="brand">cn2 · seller</span>
        {me.seller || !me.loading ? (
          <nav aria-label="Main">
            <ul>{(me.seller ? NAV : PUBLIC_NAV).map((n) => <li key={n.to}><Link to={n.to} current={path === n.to}>{n.label}</Link></li>)}</ul>
          </nav>
        ) : null}
        {me.seller ? (
          <button type="button" onClick={() => void api("/auth/sign-out", { method: "POST" }).finally(() => { setMe({ loading: false, error: new ApiFailure(401, "unauthorized", "signed out") }); navigate("/sign-in"); })}>Sign out</button>
        ) : null}
      </header>
      <main id="main">{page}</main>
    </>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
