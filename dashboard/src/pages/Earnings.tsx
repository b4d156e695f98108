// Earnings (S7): charts per day and per key from the ledger (GET /api/earnings, every page),
// plus the live part the key objects have not flushed yet (from the room). The ledger total
// is the sum of its entries in integer micro-dollars and is shown beside the balance the
// database computes: they must be equal to the micro-dollar.
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { KeyLive } from "../../../schema/room.ts";
import { allEarnings, type LedgerEntry } from "../lib/api.ts";
import { Empty, ErrorState, Link, Loading, usd, useLoad } from "../lib/ui.tsx";

const DAY = 86_400;
const dayOf = (iso: string) => Math.floor(Date.parse(iso) / 1000 / DAY) * DAY;

/** Net micro-dollars per UTC day (all keys) and per key per day. */
export function aggregate(history: LedgerEntry[]) {
  const days = [...new Set(history.map((e) => dayOf(e.periodStart)))].sort((a, b) => a - b);
  const keyIds = [...new Set(history.map((e) => e.keyId))].sort();
  const perDay = new Map<number, number>();
  const perKey = new Map<string, Map<number, number>>();
  const keyTotals = new Map<string, { net: number; requests: number }>();
  for (const e of history) {
    const d = dayOf(e.periodStart);
    perDay.set(d, (perDay.get(d) ?? 0) + e.netMicros);
    const m = perKey.get(e.keyId) ?? new Map<number, number>();
    m.set(d, (m.get(d) ?? 0) + e.netMicros);
    perKey.set(e.keyId, m);
    const t = keyTotals.get(e.keyId) ?? { net: 0, requests: 0 };
    keyTotals.set(e.keyId, { net: t.net + e.netMicros, requests: t.requests + e.requestCount });
  }
  return { days, keyIds, perDay, perKey, keyTotals, total: history.reduce((n, e) => n + e.netMicros, 0) };
}

/** Axis labels in dollars, with as many decimals as small amounts need. */
const axisUsd = (micros: number) => {
  const d = micros / 1e6;
  return `$${d === 0 ? "0" : d < 0.01 ? d.toFixed(4) : d.toFixed(2)}`;
};
const bars = uPlot.paths.bars!({ size: [0.6, 48] });

const PALETTE = ["#1f6feb", "#b35900", "#1a7f37", "#8250df", "#cf222e", "#0a7ea4"];

function Chart({ title, data, series }: { title: string; data: uPlot.AlignedData; series: uPlot.Series[] }) {
  const ref = useRef<HTMLDivElement>(null);
  // Rebuilt only when the numbers change (live updates re-render the page every second).
  const fingerprint = JSON.stringify([data, series.map((s) => s.label)]);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const xs = data[0] as number[];
    const plot = new uPlot({
      width: Math.max(320, el.clientWidth),
      height: 240,
      title,
      series: [{ value: (_u, v) => (v == null ? "" : new Date(v * 1000).toISOString().slice(0, 10)) }, ...series],
      // Ledger entries are summed per UTC day: ticks on whole days, labelled by date.
      axes: [{ incrs: [DAY, 7 * DAY, 30 * DAY], values: (_u, ticks) => ticks.map((t) => new Date(t * 1000).toISOString().slice(5, 10)) }, { values: (_u, ticks) => ticks.map(axisUsd), size: 80 }],
      // A day or two of data would otherwise stretch over years: pad the days shown.
      scales: { x: { time: true, range: () => [xs[0]! - 3 * DAY, xs[xs.length - 1]! + DAY] }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.15 : 1] } },
    }, data, el);
    return () => plot.destroy();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [title, fingerprint]);
  return <div ref={ref} className="chart" role="img" aria-label={`${title} (the table below has the same numbers)`} />;
}

export function EarningsPage({ live }: { live: ReadonlyMap<string, KeyLive> }) {
  const earnings = useLoad(allEarnings);
  if (earnings.loading && !earnings.data) return <Loading what="your earnings" />;
  if (earnings.error) return <ErrorState error={earnings.error} retry={earnings.reload} />;
  const e = earnings.data!;
  const a = aggregate(e.history);
  const unflushed = [...live.values()].reduce((n, k) => n + k.unflushedMicros, 0);
  const today = [...live.values()].reduce((n, k) => n + k.earningsTodayMicros, 0);
  const matches = a.total === e.balance.earnedMicros;
  return (
    <section aria-labelledby="earnings-title">
      <div className="title-row">
        <h1 id="earnings-title">Earnings</h1>
        <button type="button" onClick={earnings.reload}>Refresh ledger</button>
      </div>
      <dl className="totals">
        <div><dt>Ledger total (sum of entries)</dt><dd data-testid="ledger-total">{usd(a.total)}</dd></div>
        <div><dt>Balance: earned</dt><dd data-testid="balance-earned">{usd(e.balance.earnedMicros)}</dd></div>
        <div><dt>Withdrawn</dt><dd>{usd(e.balance.withdrawnMicros)}</dd></div>
        <div><dt>Available</dt><dd>{usd(e.balance.availableMicros)}</dd></div>
        <div><dt>Not yet in the ledger (live)</dt><dd data-testid="live-unflushed">{usd(unflushed)}</dd></div>
        <div><dt>Earned today (live, all keys)</dt><dd data-testid="live-today">{usd(today)}</dd></div>
      </dl>
      {!matches ? <p role="alert" className="state error">The ledger entries ({usd(a.total)}) and the balance ({usd(e.balance.earnedMicros)}) differ. Refresh; if it stays, contact support with this page.</p> : null}
      <p className="muted">Key objects write earnings to the ledger about every 30 seconds; the live figures cover what is not written yet.</p>
      {e.history.length === 0 ? (
        <Empty>
          <p>No earnings in the ledger yet.</p>
          <p>Earnings appear once buyers use your keys. <Link to="/">See your keys</Link> or <Link to="/keys/new">add one</Link>.</p>
        </Empty>
      ) : (
        <>
          <Chart title="Net earnings per day" data={[a.days, a.days.map((d) => a.perDay.get(d) ?? 0)]} series={[{ label: "all keys", stroke: PALETTE[0], fill: "rgba(31, 111, 235, 0.35)", paths: bars, width: 1, value: (_u, v) => (v == null ? "" : usd(v)) }]} />
          <Chart
            title="Net earnings per key per day"
            data={[a.days, ...a.keyIds.map((k) => a.days.map((d) => a.perKey.get(k)?.get(d) ?? 0))]}
            series={a.keyIds.map((k, i) => ({ label: k, stroke: PALETTE[i % PALETTE.length], width: 2, points: { show: true, size: 8 }, value: (_u: uPlot, v: number | null) => (v == null ? "" : usd(v)) }))}
          />
          <table>
            <caption>Per key, from the ledger</caption>
            <thead><tr><th scope="col">Key</th><th scope="col">Requests</th><th scope="col">Net</th></tr></thead>
            <tbody>
              {a.keyIds.map((k) => <tr key={k}><th scope="row"><code>{k}</code></th><td>{a.keyTotals.get(k)!.requests}</td><td>{usd(a.keyTotals.get(k)!.net)}</td></tr>)}
            </tbody>
          </table>
          <table>
            <caption>Per day (UTC), from the ledger</caption>
            <thead><tr><th scope="col">Day</th><th scope="col">Net</th></tr></thead>
            <tbody>
              {a.days.map((d) => <tr key={d}><th scope="row">{new Date(d * 1000).toISOString().slice(0, 10)}</th><td>{usd(a.perDay.get(d)!)}</td></tr>)}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
