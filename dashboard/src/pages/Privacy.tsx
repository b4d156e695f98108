// Privacy and data rights (S9, PR25): see and correct what we hold, export it (JSON, CSV),
// object to marketplace statistics, close the account.
import { useState, type FormEvent } from "react";
import { api, type Me } from "../lib/api.ts";
import { Confirm, ErrorState, Field } from "../lib/ui.tsx";

export function Privacy({ me, onChanged, onClosed }: { me: Me; onChanged: () => void; onClosed: () => void }) {
  const [name, setName] = useState(me.displayName ?? "");
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [closing, setClosing] = useState(false);
  const [typed, setTyped] = useState("");

  const run = async (fn: () => Promise<void>) => {
    setError(null);
    setNotice(null);
    try {
      await fn();
    } catch (err) {
      setError(err);
    }
  };
  const save = (e: FormEvent) => {
    e.preventDefault();
    void run(async () => {
      await api("/api/me", { method: "PATCH", json: { displayName: name.trim() === "" ? null : name.trim() } });
      setNotice("Saved.");
      onChanged();
    });
  };

  return (
    <section aria-labelledby="privacy-title">
      <h1 id="privacy-title">Privacy and your data</h1>
      {error ? <ErrorState error={error} /> : null}
      {notice ? <p role="status" className="notice">{notice}</p> : null}

      <h2>What we hold about you</h2>
      <dl className="totals">
        <div><dt>Email</dt><dd>{me.email ?? "—"} <small>(managed by sign-in)</small></dd></div>
        <div><dt>Display name</dt><dd>{me.displayName ?? "—"}</dd></div>
        <div><dt>GitHub account id</dt><dd>{me.githubId ?? "—"}</dd></div>
        <div><dt>Verification</dt><dd>{me.kyc.status}</dd></div>
        <div><dt>Account created</dt><dd>{new Date(me.createdAt).toLocaleDateString()}</dd></div>
      </dl>

      <form onSubmit={save}>
        <h2>Correct your display name</h2>
        <Field id="display-name" label="Display name (blank = none)">
          <input id="display-name" maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />
        </Field>
        <button type="submit">Save display name</button>
      </form>

      <h2>Marketplace statistics</h2>
      <label className="check">
        <input type="checkbox" checked={me.statsOptOut} onChange={(e) => void run(async () => {
          await api("/api/stats-opt-out", { method: "POST", json: { optOut: e.target.checked } });
          setNotice(e.target.checked ? "Your keys are left out of public statistics." : "Your keys count in public statistics again.");
          onChanged();
        })} /> Leave my keys out of public marketplace statistics
      </label>

      <h2>Export your data</h2>
      <ul>
        <li><a href="/api/export?format=json" download="cn2-export.json">Everything as JSON</a></li>
        <li><a href="/api/export?format=csv&amp;data=earnings" download="cn2-earnings.csv">Earnings as CSV</a></li>
        <li><a href="/api/export?format=csv&amp;data=keys" download="cn2-keys.csv">Key configurations as CSV</a></li>
        <li><a href="/api/export?format=csv&amp;data=payouts" download="cn2-payouts.csv">Payouts as CSV</a></li>
      </ul>

      <h2>Close your account</h2>
      <p>Your keys stop serving and are deleted with their encrypted credentials, as are your payout settings, verification status, webhooks and personal details. Earnings records are kept for 7 years without your name or email, as the law requires.</p>
      <button type="button" className="danger" onClick={() => { setTyped(""); setClosing(true); }}>Close my account…</button>
      <Confirm open={closing} title="Close your account?" confirmLabel="Close my account for good" confirmDisabled={typed.trim().toLowerCase() !== (me.email ?? "").toLowerCase()}
        onCancel={() => setClosing(false)}
        onConfirm={() => void run(async () => {
          await api("/api/account", { method: "DELETE" });
          setClosing(false);
          onClosed();
        })}>
        <Field id="close-confirm" label={`Type your email (${me.email ?? ""}) to confirm`}>
          <input id="close-confirm" type="email" autoComplete="off" value={typed} onChange={(e) => setTyped(e.target.value)} />
        </Field>
      </Confirm>
    </section>
  );
}
