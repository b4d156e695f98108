// Keys, live: the seller's keys from GET /api/keys (configuration), with the numbers the
// seller's room streams (health, latency, traffic, tiers, track record, last error,
// earnings today) laid over them as they change, without a reload.
import { useEffect, useState } from "react";
import type { KeyLive } from "../../../schema/room.ts";
import { listKeys, pauseKey, removeKey, resumeKey, type KeyView, type Me } from "../lib/api.ts";
import type { LiveStatus } from "../lib/live.ts";
import { Confirm, Empty, ErrorState, Link, Loading, usd, useLoad } from "../lib/ui.tsx";
import { EditKey } from "./EditKey.tsx";

const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
const ago = (at: number) => {
  const s = Math.max(0, Math.round((Date.now() - at) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : new Date(at).toLocaleString();
};

export function Keys({ me, live, status }: { me: Me; live: ReadonlyMap<string, KeyLive>; status: LiveStatus }) {
  const keys = useLoad(listKeys);
  const [editing, setEditing] = useState<string | null>(null);
  const [removing, setRemoving] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<unknown>(null);
  // A key the room knows and the list does not (added from the CLI or another tab): reload the list.
  const unknown = keys.data ? [...live.keys()].some((id) => !keys.data!.some((k) => k.keyId === id)) : false;
  useEffect(() => {
    if (unknown && !keys.loading) keys.reload();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [unknown]);

  const act = async (fn: () => Promise<unknown>) => {
    setBusy(true);
    setActionError(null);
    try {
      await fn();
      keys.reload();
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="keys-title">
      <div className="title-row">
        <h1 id="keys-title">Your keys</h1>
        <p className={`live-status ${status}`} role="status" data-testid="live-status">
          {status === "live" ? "● Live" : status === "connecting" ? "Connecting to live updates…" : "Live updates interrupted: reconnecting…"}
        </p>
        <Link to="/keys/new">Add a key</Link>
      </div>
      {actionError ? <ErrorState error={actionError} /> : null}
      {keys.loading && !keys.data ? <Loading what="your keys" /> : null}
      {keys.error ? <ErrorState error={keys.error} retry={keys.reload} /> : null}
      {keys.data && keys.data.length === 0 ? (
        <Empty>
          <p>You have no keys listed yet.</p>
          <p><Link to="/keys/new">Add your first key</Link>: it is encrypted in this page before it is sent.</p>
        </Empty>
      ) : null}
      {keys.data && keys.data.length > 0 ? (
        <table className="keys" aria-describedby="keys-caption">
          <caption id="keys-caption">Live numbers update by themselves; configuration changes appear after you save them.</caption>
          <thead>
            <tr>
              <th scope="col">Key</th>
              <th scope="col">State</th>
              <th scope="col">Health</th>
              <th scope="col">Latency</th>
              <th scope="col">Requests/min</th>
              <th scope="col">In flight</th>
              <th scope="col">Tier (serving / asked)</th>
              <th scope="col">Last day</th>
              <th scope="col">Last error</th>
              <th scope="col">Earned today</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {keys.data.map((k) => <KeyRow key={k.keyId} view={k} live={live.get(k.keyId)} busy={busy}
              onEdit={() => setEditing(editing === k.keyId ? null : k.keyId)}
              onPause={() => act(() => pauseKey(k.keyId))}
              onResume={() => act(() => resumeKey(k.keyId))}
              onRemove={() => setRemoving(k.keyId)} />)}
          </tbody>
        </table>
      ) : null}
      {editing && keys.data?.find((k) => k.keyId === editing) ? (
        <EditKey key={editing} view={keys.data.find((k) => k.keyId === editing)!} onSaved={() => { setEditing(null); keys.reload(); }} onCancel={() => setEditing(null)} />
      ) : null}
      <Confirm open={removing !== null} title={`Remove key ${removing ?? ""}?`} confirmLabel="Remove the key"
        onCancel={() => setRemoving(null)}
        onConfirm={() => { const id = removing!; setRemoving(null); void act(() => removeKey(id)); }}>
        <p>It stops serving at once; its unflushed earnings are written to your ledger first, then its encrypted credential is deleted. This cannot be undone.</p>
      </Confirm>
      <p className="muted">Signed in as {me.email}</p>
    </section>
  );
}

function KeyRow({ view, live, busy, onEdit, onPause, onResume, onRemove }: { view: KeyView; live: KeyLive | undefined; busy: boolean; onEdit: () => void; onPause: () => void; onResume: () => void; onRemove: () => void }) {
  // Live numbers when the room has them, else the API's view (no traffic yet).
  const status = live?.status ?? view.config.status;
  const state = live?.state ?? view.health.state;
  const score = live?.healthScore ?? view.health.score;
  const latency = live?.latencyMs ?? view.health.latencyMs;
  const serving = live?.servingTier ?? view.servingTier ?? "—";
  const asked = live?.askedTier ?? view.config.tier;
  const record = live?.trackRecord ?? view.trackRecord;
  return (
    <tr data-key-id={view.keyId}>
      <th scope="row">
        <code>{view.keyId}</code>
        <br />
        <small>{view.config.provider} · {view.config.region} · {usd(view.config.priceMicros)}/request</small>
      </th>
      <td data-field="state"><span className={`badge ${status === "paused" ? "paused" : state}`}>{status === "paused" ? "paused" : state}</span></td>
      <td data-field="health">{score.toFixed(3)}</td>
      <td data-field="latency">{latency} ms</td>
      <td data-field="rpm">{live ? live.requestsPerMinute : "—"}</td>
      <td data-field="in-flight">{live ? live.inFlight : "—"}</td>
      <td data-field="tier">{serving} / {asked}</td>
      <td data-field="track">{record ? `${record.calls} calls, ${pct(record.successRate)} ok, ${pct(record.uptime)} up` : "—"}</td>
      <td data-field="last-error">{live?.lastError ? <>{live.lastError.reason} <small>({ago(live.lastError.at)})</small></> : "none"}</td>
      <td data-field="earned-today">{live ? usd(live.earningsTodayMicros) : "—"}</td>
      <td className="actions">
        <button type="button" onClick={onEdit} disabled={busy} aria-label={`Edit ${view.keyId}`}>Edit</button>
        {status === "paused"
          ? <button type="button" onClick={onResume} disabled={busy} aria-label={`Resume ${view.keyId}`}>Resume</button>
          : <button type="button" onClick={onPause} disabled={busy} aria-label={`Pause ${view.keyId}`}>Pause</button>}
        <button type="button" className="danger" onClick={onRemove} disabled={busy} aria-label={`Remove ${view.keyId}`}>Remove</button>
      </td>
    </tr>
  );
}
