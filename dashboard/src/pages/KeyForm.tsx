// The fields of a key's configuration (S3), shared by "add a key" and "edit": price,
// per-route prices, limits, budgets, allowed routes, region and tier. Values are checked
// with the same valibot schema the API uses, so the page says what is wrong before sending.
import * as v from "valibot";
import { KeyConfigPatchSchema, REGIONS, TIERS, type KeyConfig } from "../../../schema/wire.ts";
import { Field } from "../lib/ui.tsx";

export interface FormValues {
  priceMicros: string;
  requestsPerMinute: string;
  maxConcurrent: string;
  dailyBudgetMicros: string;
  monthlyBudgetMicros: string;
  allowedRoutes: string;
  routePrices: string;
  region: string;
  tier: string;
}

export const formOf = (c: Partial<KeyConfig>): FormValues => ({
  priceMicros: String(c.priceMicros ?? 2000),
  requestsPerMinute: String(c.requestsPerMinute ?? 600),
  maxConcurrent: String(c.maxConcurrent ?? 8),
  dailyBudgetMicros: c.dailyBudgetMicros == null ? "" : String(c.dailyBudgetMicros),
  monthlyBudgetMicros: c.monthlyBudgetMicros == null ? "" : String(c.monthlyBudgetMicros),
  allowedRoutes: (c.allowedRoutes ?? []).join("\n"),
  routePrices: (c.routePrices ?? []).map((r) => `${r.route} = ${r.priceMicros}`).join("\n"),
  region: c.region ?? "us",
  tier: c.tier ?? "standard",
});

const num = (s: string) => (s.trim() === "" ? NaN : Number(s));
const lines = (s: string) => s.split("\n").map((l) => l.trim()).filter(Boolean);

/** The form as a config patch, or the first problem in words. */
export function patchOf(f: FormValues): { ok: true; patch: v.InferOutput<typeof KeyConfigPatchSchema> } | { ok: false; message: string } {
  const routePrices: { route: string; priceMicros: number }[] = [];
  for (const line of lines(f.routePrices)) {
    const eq = line.lastIndexOf("=");
    if (eq < 0) return { ok: false, message: `route price "${line}" must look like "POST /v1/chat/completions = 3000"` };
    routePrices.push({ route: line.slice(0, eq).trim(), priceMicros: num(line.slice(eq + 1)) });
  }
  const candidate = {
    priceMicros: num(f.priceMicros),
    requestsPerMinute: num(f.requestsPerMinute),
    maxConcurrent: num(f.maxConcurrent),
    dailyBudgetMicros: f.dailyBudgetMicros.trim() === "" ? null : num(f.dailyBudgetMicros),
    monthlyBudgetMicros: f.monthlyBudgetMicros.trim() === "" ? null : num(f.monthlyBudgetMicros),
    allowedRoutes: lines(f.allowedRoutes),
    routePrices,
    region: f.region,
    tier: f.tier,
  };
  const parsed = v.safeParse(KeyConfigPatchSchema, candidate);
  if (!parsed.success) {
    const issue = parsed.issues[0]!;
    return { ok: false, message: `${v.getDotPath(issue) ?? "value"}: ${issue.message}` };
  }
  return { ok: true, patch: parsed.output };
}

export function KeyFields({ values, set, prefix, regionLocked }: { values: FormValues; set: (f: FormValues) => void; prefix: string; regionLocked?: boolean }) {
  const on = (k: keyof FormValues) => (e: { target: { value: string } }) => set({ ...values, [k]: e.target.value });
  const id = (k: string) => `${prefix}-${k}`;
  return (
    <>
      <Field id={id("price")} label="Price per request (micro-dollars)" hint="1,000,000 micro-dollars = $1. Buyers pay this; the marketplace fee is taken from it.">
        <input id={id("price")} type="number" min={1} step={1} required inputMode="numeric" aria-describedby={`${id("price")}-hint`} value={values.priceMicros} onChange={on("priceMicros")} />
      </Field>
      <Field id={id("route-prices")} label="Prices per route (optional)" hint='One per line, e.g. "POST /v1/embeddings = 500". The first matching line wins.'>
        <textarea id={id("route-prices")} rows={2} aria-describedby={`${id("route-prices")}-hint`} value={values.routePrices} onChange={on("routePrices")} />
      </Field>
      <Field id={id("rpm")} label="Requests per minute">
        <input id={id("rpm")} type="number" min={1} step={1} required value={values.requestsPerMinute} onChange={on("requestsPerMinute")} />
      </Field>
      <Field id={id("concurrent")} label="Concurrent requests">
        <input id={id("concurrent")} type="number" min={1} step={1} required value={values.maxConcurrent} onChange={on("maxConcurrent")} />
      </Field>
      <Field id={id("daily")} label="Daily budget (micro-dollars, blank = none)" hint="Upstream spend this key may take per UTC day.">
        <input id={id("daily")} type="number" min={0} step={1} aria-describedby={`${id("daily")}-hint`} value={values.dailyBudgetMicros} onChange={on("dailyBudgetMicros")} />
      </Field>
      <Field id={id("monthly")} label="Monthly budget (micro-dollars, blank = none)">
        <input id={id("monthly")} type="number" min={0} step={1} value={values.monthlyBudgetMicros} onChange={on("monthlyBudgetMicros")} />
      </Field>
      <Field id={id("routes")} label="Allowed routes (blank = the provider's defaults)" hint='One per line, e.g. "POST /v1/chat/completions".'>
        <textarea id={id("routes")} rows={3} aria-describedby={`${id("routes")}-hint`} value={values.allowedRoutes} onChange={on("allowedRoutes")} />
      </Field>
      <Field id={id("region")} label="Region" hint={regionLocked ? "EU is possible only for keys created in the EU." : undefined}>
        <select id={id("region")} value={values.region} onChange={on("region")}>
          {REGIONS.map((r) => <option key={r} value={r}>{r}</option>)}
        </select>
      </Field>
      <Field id={id("tier")} label="Tier" hint="Premium is earned by a good track record; until then the key serves in standard.">
        <select id={id("tier")} value={values.tier} onChange={on("tier")}>
          {TIERS.map((t) => <option key={t} value={t}>{t}</option>)}
        </select>
      </Field>
    </>
  );
}
