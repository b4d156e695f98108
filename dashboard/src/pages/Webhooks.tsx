// Seller webhooks (S6): create an endpoint (its signing secret is shown once), rotate the
// secret, remove it, and read the delivery log (attempts, statuses; never payloads).
import { useState, type FormEvent } from "react";
import { WEBHOOK_EVENT_TYPES } from "../../../core/events.ts";
import { api, type Delivery, type Webhook } from "../lib/api.ts";
import { Confirm, Empty, ErrorState, Field, Loading, useLoad } from "../lib/ui.tsx";

export function Webhooks() {
  const hooks = useLoad(async () => (await api<{ webhooks: Webhook[] }>("/api/webhooks")).webhooks);
  const [url, setUrl] = useState("");
  const [events, setEvents] = useState<string[]>([]);
  const [secret, setSecret] = useState<{ id: string; secret: string } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [removing, setRemoving] = useState<string | null>(null);
  const [log, setLog] = useState<string | null>(null);

  const run = async (fn: () => Promise<void>) => {
    setError(null);
    try {
      await fn();
      hooks.reload();
    } catch (err) {
      setError(err);
    }
  };
  const create = (e: FormEvent) => {
    e.preventDefault();
    void run(async () => {
      const r = await api<{ webhook: Webhook; secret: string }>("/api/webhooks", { method: "POST", json: { url: url.trim(), events } });
      setSecret({ id: r.webhook.id, secret: r.secret });
      setUrl("");
    });
  };

  return (
    <section aria-labelledby="webhooks-title">
      <h1 id="webhooks-title">Webhooks</h1>
      {error ? <ErrorState error={error} /> : null}
      {secret ? (
        <div role="status" className="notice">
          <p>Signing secret for endpoint <code>{secret.id}</code>, shown once: copy it into your receiver now.</p>
          <p><code data-testid="webhook-secret">{secret.secret}</code></p>
          <button type="button" onClick={() => setSecret(null)}>I have stored it</button>
        </div>
      ) : null}
      <form onSubmit={create} className="panel">
        <h2>Add an endpoint</h2>
        <Field id="wh-url" label="Receiver URL (https)">
          <input id="wh-url" type="url" required value={url} onChange={(e) => setUrl(e.target.value)} />
        </Field>
        <fieldset>
          <legend>Events (none ticked = all)</legend>
          {WEBHOOK_EVENT_TYPES.map((t) => (
            <label key={t} className="check">
              <input type="checkbox" checked={events.includes(t)} onChange={(e) => setEvents(e.target.checked ? [...events, t] : events.filter((x) => x !== t))} /> {t}
            </label>
          ))}
        </fieldset>
        <button type="submit">Add endpoint</button>
      </form>
      {hooks.loading && !hooks.data ? <Loading what="your webhook endpoints" /> : null}
      {hooks.error ? <ErrorState error={hooks.error} retry={hooks.reload} /> : null}
      {hooks.data && hooks.data.length === 0 ? <Empty><p>No endpoints yet. Add one above to hear about key errors, health changes and payouts.</p></Empty> : null}
      {hooks.data && hooks.data.length > 0 ? (
        <table>
          <thead><tr><th scope="col">Endpoint</th><th scope="col">Events</th><th scope="col">Actions</th></tr></thead>
          <tbody>
            {hooks.data.map((h) => (
              <tr key={h.id}>
                <th scope="row">{h.url}<br /><small><code>{h.id}</code></small></th>
                <td>{h.events.length ? h.events.join(", ") : "all"}</td>
                <td className="actions">
                  <button type="button" onClick={() => void run(async () => {
                    const r = await api<{ webhook: Webhook; secret: string }>(`/api/webhooks/${h.id}/rotate`, { method: "POST" });
                    setSecret({ id: h.id, secret: r.secret });
                  })} aria-label={`Rotate the secret of ${h.url}`}>Rotate secret</button>
                  <button type="button" onClick={() => setLog(log === h.id ? null : h.id)} aria-expanded={log === h.id} aria-label={`Delivery log of ${h.url}`}>Delivery log</button>
                  <button type="button" className="danger" onClick={() => setRemoving(h.id)} aria-label={`Remove ${h.url}`}>Remove</button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {log ? <DeliveryLog id={log} /> : null}
      <Confirm open={removing !== null} title="Remove this endpoint?" confirmLabel="Remove the endpoint" onCancel={() => setRemoving(null)}
        onConfirm={() => { const id = removing!; setRemoving(null); void run(async () => { await api(`/api/webhooks/${id}`, { method: "DELETE" }); if (log === id) setLog(null); }); }}>
        <p>Its secret and delivery log are deleted; events stop at once.</p>
      </Confirm>
    </section>
  );
}

function DeliveryLog({ id }: { id: string }) {
  const d = useLoad(async () => (await api<{ deliveries: Delivery[] }>(`/api/webhooks/${id}/deliveries?limit=50`)).deliveries, [id]);
  return (
    <section aria-labelledby="log-title" className="panel">
      <h2 id="log-title">Delivery log</h2>
      <button type="button" onClick={d.reload}>Refresh</button>
      {d.loading && !d.data ? <Loading what="deliveries" /> : null}
      {d.error ? <ErrorState error={d.error} retry={d.reload} /> : null}
      {d.data && d.data.length === 0 ? <Empty><p>No deliveries yet: events are sent when a key changes health or a payout moves.</p></Empty> : null}
      {d.data && d.data.length > 0 ? (
        <table>
          <thead><tr><th scope="col">When</th><th scope="col">Event</th><th scope="col">Attempt</th><th scope="col">Status</th><th scope="col">State</th></tr></thead>
          <tbody>{d.data.map((x) => <tr key={`${x.eventId}-${x.attempt}`}><th scope="row">{new Date(x.createdAt).toLocaleString()}</th><td>{x.eventType}</td><td>{x.attempt}</td><td>{x.statusCode ?? x.error ?? "—"}</td><td>{x.state}</td></tr>)}</tbody>
        </table>
      ) : null}
    </section>
  );
}
