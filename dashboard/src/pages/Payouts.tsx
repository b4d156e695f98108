// Payouts and KYC (S4, S5): the payout preference (Stripe Connect account or a USDC address
// on Tempo), the identity check's status (Persona; payouts stay locked until approved), and
// payout requests with their history.
import { useState, type FormEvent } from "react";
import { api, type Earnings, type PayoutInfo } from "../lib/api.ts";
import { Empty, ErrorState, Field, Loading, usd, useLoad } from "../lib/ui.tsx";

export function Payouts() {
  const info = useLoad(() => api<PayoutInfo>("/api/payout"));
  const earnings = useLoad(() => api<Earnings>("/api/earnings?limit=1"));
  const [method, setMethod] = useState("stripe_connect");
  const [destination, setDestination] = useState("");
  const [amount, setAmount] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [kycUrl, setKycUrl] = useState<string | null>(null);

  const run = (fn: () => Promise<void>) => async (e?: FormEvent) => {
    e?.preventDefault();
    setError(null);
    setNotice(null);
    try {
      await fn();
      info.reload();
      earnings.reload();
    } catch (err) {
      setError(err);
    }
  };

  if (info.loading && !info.data) return <Loading what="payout settings" />;
  if (info.error) return <ErrorState error={info.error} retry={info.reload} />;
  const p = info.data!;
  return (
    <section aria-labelledby="payouts-title">
      <h1 id="payouts-title">Payouts and verification</h1>
      {error ? <ErrorState error={error} /> : null}
      {notice ? <p role="status" className="notice">{notice}</p> : null}

      <h2>Identity verification</h2>
      <p>Status: <strong data-testid="kyc-status">{p.kyc}</strong>{p.payoutsLocked ? " · payouts are locked until you are verified" : ""}</p>
      {p.kyc !== "approved" ? (
        <button type="button" onClick={() => void run(async () => {
          const r = await api<{ status: string; url: string | null }>("/api/kyc/start", { method: "POST" });
          setKycUrl(r.url);
        })()}>Start verification</button>
      ) : null}
      {kycUrl ? <p><a href={kycUrl} rel="noopener noreferrer" target="_blank">Continue verification with Persona (opens a new tab)</a></p> : null}

      <h2>Payout method</h2>
      {p.preference ? (
        <p data-testid="payout-preference">{p.preference.method === "stripe_connect" ? `Stripe account ${p.preference.stripeAccountId}` : `USDC on Tempo to ${p.preference.evmAddress}`}</p>
      ) : <Empty><p>No payout method yet. Add a Stripe Connect account or a USDC address below.</p></Empty>}
      <form onSubmit={run(async () => {
        const body = method === "stripe_connect" ? { method, stripeAccountId: destination.trim() } : { method, evmAddress: destination.trim() };
        await api("/api/payout", { method: "PUT", json: body });
        setDestination("");
        setNotice("Payout method saved.");
      })}>
        <Field id="payout-method" label="Method">
          <select id="payout-method" value={method} onChange={(e) => setMethod(e.target.value)}>
            <option value="stripe_connect">Stripe Connect account</option>
            <option value="usdc_tempo">USDC on Tempo</option>
          </select>
        </Field>
        <Field id="payout-destination" label={method === "stripe_connect" ? "Stripe account id (acct_…)" : "Wallet address (0x…)"}>
          <input id="payout-destination" required value={destination} onChange={(e) => setDestination(e.target.value)} spellCheck={false} />
        </Field>
        <button type="submit">Save payout method</button>
      </form>

      <h2>Request a payout</h2>
      {earnings.data ? <p>Available: <strong>{usd(earnings.data.balance.availableMicros)}</strong></p> : earnings.error ? <ErrorState error={earnings.error} retry={earnings.reload} /> : <Loading what="your balance" />}
      <form onSubmit={run(async () => {
        const micros = Math.round(Number(amount) * 1_000_000);
        if (!Number.isSafeInteger(micros) || micros <= 0) throw new Error("enter an amount in dollars, e.g. 12.50");
        await api("/api/payouts", { method: "POST", json: { amountMicros: micros } });
        setAmount("");
        setNotice("Payout requested.");
      })}>
        <Field id="payout-amount" label="Amount (USD)">
          <input id="payout-amount" type="number" min="0.000001" step="0.000001" required value={amount} onChange={(e) => setAmount(e.target.value)} />
        </Field>
        <button type="submit" disabled={p.payoutsLocked}>Request payout</button>
        {p.payoutsLocked ? <p className="muted">Verify your identity first (above).</p> : null}
      </form>

      <h2>Payout history</h2>
      {earnings.data && earnings.data.payouts.length === 0 ? <Empty><p>No payouts yet.</p></Empty> : null}
      {earnings.data && earnings.data.payouts.length > 0 ? (
        <table>
          <thead><tr><th scope="col">Id</th><th scope="col">Method</th><th scope="col">Amount</th><th scope="col">Status</th></tr></thead>
          <tbody>{earnings.data.payouts.map((x) => <tr key={x.id}><th scope="row"><code>{x.id}</code></th><td>{x.method}</td><td>{usd(x.amountMicros)}</td><td>{x.status}</td></tr>)}</tbody>
        </table>
      ) : null}
    </section>
  );
}
