// Public marketplace statistics (M2, PR20), for anyone, signed in or not: GET /api/stats as
// one table per provider, region and tier, a row per time window. Aggregates only; a cell
// or window with fewer than 3 sellers is shown as hidden, never as numbers.
import { PROVIDERS } from "../../../schema/providers.ts";
import type { MarketStats, Percentiles, StatsCell, StatsWindow } from "../../../schema/stats.ts";
import { getStats } from "../lib/api.ts";
import { Empty, ErrorState, Loading, usd, useLoad } from "../lib/ui.tsx";

const WINDOW_LABELS: Record<StatsWindow["window"], string> = {
  "5m": "Last 5 min",
  "30m": "Last 30 min",
  "1d": "Last day",
  "7d": "Last week",
};

const percent = (x: number | null) => (x === null ? "no data" : `${(x * 100).toFixed(2)}%`);
const count = (x: number | null) => (x === null ? "no data" : x.toLocaleString("en-US"));
const cellName = (c: StatsCell) => `${PROVIDERS[c.provider].name} · ${c.region} · ${c.tier}`;
const cellId = (c: StatsCell) => `cell-${c.provider}-${c.region}-${c.tier}`;
const pick = (p: Percentiles | null, q: keyof Percentiles) => count(p?.[q] ?? null);

/** One row per measure, one column per window: narrow enough for a phone. */
const MEASURES: { field: string; label: string; value: (w: StatsWindow) => string }[] = [
  { field: "requests", label: "Requests", value: (w) => count(w.requests) },
  { field: "success", label: "Success", value: (w) => percent(w.successRate) },
  { field: "uptime", label: "Uptime", value: (w) => percent(w.uptime) },
  ...(["p50", "p90", "p99"] as const).map((q) => ({ field: `latency-${q}`, label: `Latency ${q} (ms)`, value: (w: StatsWindow) => pick(w.latencyMs, q) })),
  ...(["p50", "p90", "p99"] as const).map((q) => ({ field: `ttfb-${q}`, label: `First byte ${q} (ms)`, value: (w: StatsWindow) => pick(w.ttfbMs, q) })),
];

function CellTable({ cell, minSellers }: { cell: StatsCell; minSellers: number }) {
  const id = cellId(cell);
  if (cell.suppressed) {
    return (
      <section aria-labelledby={id} className="panel" data-cell={id}>
        <h3 id={id}>{cellName(cell)}</h3>
        <p className="muted">Hidden: fewer than {minSellers} sellers list keys here, and their figures would describe them.</p>
      </section>
    );
  }
  const price = cell.priceMicros;
  const anyHidden = cell.windows.some((w) => w.suppressed);
  return (
    <section aria-labelledby={id} className="panel" data-cell={id}>
      <h3 id={id}>{cellName(cell)}</h3>
      <dl className="totals">
        <div><dt>Active keys</dt><dd data-field="active-keys">{cell.activeKeys}</dd></div>
        <div><dt>Price per request (min / median / max)</dt><dd data-field="price">{price ? `${usd(price.min)} / ${usd(price.median)} / ${usd(price.max)}` : "no data"}</dd></div>
      </dl>
      {/* Should a screen still be too narrow, the table scrolls in its own region (focusable, for keyboards). */}
      <div className="table-scroll" role="region" aria-labelledby={`${id} ${id}-caption`} tabIndex={0}>
        <table className="stats">
          <caption id={`${id}-caption`}>By time window</caption>
          <thead>
            <tr>
              <th scope="col">Measure</th>
              {cell.windows.map((w) => <th scope="col" key={w.window}>{WINDOW_LABELS[w.window]}</th>)}
            </tr>
          </thead>
          <tbody>
            {MEASURES.map((m) => (
              <tr key={m.field}>
                <th scope="row">{m.label}</th>
                {cell.windows.map((w) => (
                  <td key={w.window} data-window={w.window} data-field={m.field} className={w.suppressed ? "muted" : undefined}>
                    {w.suppressed ? "hidden" : m.value(w)}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {anyHidden ? <p className="muted">Hidden: fewer than {minSellers} sellers served requests in that window.</p> : null}
    </section>
  );
}

export function Stats() {
  const stats = useLoad<MarketStats>(getStats);
  if (stats.loading && !stats.data) return <Loading what="marketplace statistics" />;
  if (stats.error) return <ErrorState error={stats.error} retry={stats.reload} />;
  const s = stats.data!;
  const providers = [...new Set(s.cells.map((c) => c.provider))];
  return (
    <section aria-labelledby="stats-title">
      <div className="title-row">
        <h1 id="stats-title">Marketplace statistics</h1>
        <button type="button" onClick={stats.reload}>Refresh</button>
      </div>
      <p>
        Keys on sale and how they served, per provider, region and tier. Aggregates only: a
        group or a time window with fewer than {s.minSellers} sellers is hidden, and sellers who
        object to statistics are left out of every figure.
      </p>
      <p className="muted">
        As of <time dateTime={s.generatedAt}>{new Date(s.generatedAt).toLocaleString()}</time> (updated every minute).
        Success: answered with a status below 400. Uptime: answers that did not fail for the key or its
        provider (rate-limited calls count on neither side). Latency: to the last byte; time to first
        byte: to the provider's first answer. Prices are per request.
      </p>
      {s.cells.length === 0 ? (
        <Empty><p>No keys are listed yet.</p></Empty>
      ) : (
        providers.map((p) => (
          <section key={p} aria-labelledby={`provider-${p}`}>
            <h2 id={`provider-${p}`}>{PROVIDERS[p].name}</h2>
            {s.cells.filter((c) => c.provider === p).map((c) => <CellTable key={cellId(c)} cell={c} minSellers={s.minSellers} />)}
          </section>
        ))
      )}
    </section>
  );
}
