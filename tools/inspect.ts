// Ops inspection (M3) through the ops API: one key object's live state, pool snapshots,
// and the two levers ops need in an incident (disable, drain).
//
//   npm run inspect -- key <keyId> | pool <provider> <region> <tier> | pools [provider]
//   npm run inspect -- disable <keyId> | drain <keyId>        (add --json for raw JSON only)
//   npm run inspect -- payouts [pending|failed|open|all] | payout retry <payoutId>
//   npm run inspect -- jobs | jobs run <job>                  (the scheduled jobs, M1)
import { PROVIDER_IDS } from "../schema/providers.ts";
import { KeyIdSchema, REGIONS, TIERS, type PoolSnapshot } from "../schema/wire.ts";
import * as v from "valibot";
import { ApiError, CliError, apiClient, isMain, pretty, runCli, type ApiClient, type KeyInspection } from "./api-client.ts";

const USAGE = `cn2 ops inspection

  npm run inspect -- key <keyId>                       config (no secret), health, limiter, in-flight, unflushed earnings
  npm run inspect -- pool <provider> <region> <tier>   one routing pool snapshot
  npm run inspect -- pools [provider]                  every non-empty pool
  npm run inspect -- disable <keyId>                   stop routing to a key (state disabled)
  npm run inspect -- drain <keyId>                     pause a key: no new requests, in-flight ones finish
  npm run inspect -- payouts [pending|failed|open|all] seller payouts; default open = pending (requested, sent) and failed
  npm run inspect -- payout retry <payoutId>           retry a failed payout (once: a second retry returns the first)
  npm run inspect -- jobs                              scheduled jobs: crons, last run, status, counts, last error
  npm run inspect -- jobs run <job>                    run a job now (payouts, earnings_flush, rollup, retention)
Options: --json prints the raw JSON only.
Environment: CN2_URL (default http://127.0.0.1:8787), CN2_OPS_TOKEN (default: OPS_TOKEN in .dev.vars).`;

const out = (text: string) => void process.stdout.write(text + "\n");

function keyId(raw: string | undefined): string {
  if (!raw) throw new CliError("a key id is required (k_...)");
  const r = v.safeParse(KeyIdSchema, raw);
  if (!r.success) throw new CliError(r.issues[0].message);
  return r.output;
}

function oneOf(what: string, raw: string | undefined, allowed: readonly string[]): string {
  if (!raw || !allowed.includes(raw)) throw new CliError(`${what} must be one of ${allowed.join(", ")}${raw ? `, got "${raw}"` : ""}`);
  return raw;
}

/** A payout as GET /ops/payouts lists it (worker/payouts/ops.ts). */
export interface OpsPayout {
  id: string;
  sellerId: string | null;
  method: "stripe_connect" | "usdc_tempo";
  destination: string | null;
  amountMicros: number;
  amountUnits: number | null;
  status: "requested" | "sent" | "paid" | "failed" | "canceled";
  externalRef: string | null;
  failureCode: string | null;
  retryOf: string | null;
  requestedAt: string;
  sentAt: string | null;
}

const usd = (micros: number) => `$${(micros / 1_000_000).toFixed(6)}`;

/** One line per payout: what ops act on first (status, age, amount, where, why it failed). */
export function summarizePayouts(payouts: OpsPayout[]): string {
  if (payouts.length === 0) return "no payouts";
  return payouts.map((p) => [
    p.status.padEnd(9), p.id, usd(p.amountMicros).padStart(16), p.method === "stripe_connect" ? "stripe" : "usdc  ",
    p.destination ?? "-", `seller ${p.sellerId ?? "(closed)"}`, `requested ${p.requestedAt}`,
    p.status === "sent" && !p.externalRef ? "NO TRANSFER RECORDED (check Stripe / the chain by memo)" : p.externalRef ?? "",
    p.failureCode ? `failed: ${p.failureCode}` : "", p.retryOf ? `retry of ${p.retryOf}` : "",
  ].filter(Boolean).join("  ")).join("\n");
}

/** A scheduled job as GET /ops/jobs lists it (worker/jobs/ops.ts). */
export interface OpsJob {
  job: string;
  crons: string[];
  purpose: string;
  last: {
    status: "running" | "ok" | "failed";
    startedAt: string;
    finishedAt: string | null;
    counts: Record<string, number | string>;
    error: string | null;
    lastOkAt: string | null;
    watermark: string | null;
    runs: number;
    failures: number;
  } | null;
}

/** Two lines per job: what ran when and how it ended, then its counts (and why it failed). */
export function summarizeJobs(jobs: OpsJob[]): string {
  return jobs.map((j) => {
    const head = `${j.job.padEnd(15)}${(j.crons.join(", ") || "no cron").padEnd(14)}`;
    const l = j.last;
    if (!l) return `${head}never ran\n  ${j.purpose}`;
    const took = l.finishedAt ? ` in ${Date.parse(l.finishedAt) - Date.parse(l.startedAt)} ms` : "";
    const status = l.status === "running" ? `RUNNING since ${l.startedAt}` : `${l.status === "ok" ? "ok" : "FAILED"}  ${l.startedAt}${took}`;
    const ok = l.status !== "ok" ? `  last ok ${l.lastOkAt ?? "never"}` : "";
    const counts = Object.entries(l.counts).map(([k, v]) => `${k}=${v}`).join(" ") || "-";
    return `${head}${status}${ok}  runs ${l.runs}, failed ${l.failures}\n  ${counts}${l.error ? `\n  error: ${l.error}` : ""}`;
  }).join("\n");
}

const PAYOUT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const ms = (n: unknown) => (typeof n === "number" ? `${Math.round(n)} ms` : "?");
const when = (t: unknown) => (typeof t === "number" && t > 0 ? new Date(t).toISOString() : "-");

/** A few readable lines above the JSON, for the fields ops look at first. */
export function summarizeKey(k: KeyInspection): string {
  const c = k.config ?? ({} as KeyInspection["config"]);
  const h = k.health ?? ({} as KeyInspection["health"]);
  const lines = [
    `key       ${k.keyId}  seller ${k.sellerId}  ${c.provider} ${c.region} ${c.tier}  status ${c.status}${k.home ? `  home ${k.home}` : ""}`,
    `price     ${c.priceMicros} µ$/request${c.routePrices?.length ? ` (+${c.routePrices.length} route prices)` : ""}`,
    `health    ${h.state}  score ${typeof h.score === "number" ? h.score.toFixed(3) : "?"}  latency ${ms(h.latencyMs)}  cooling until ${when(h.coolingUntil)}${h.reason ? `  (${h.reason})` : ""}`,
    `tier      serving ${k.servingTier ?? "?"} (asked ${c.tier})${k.trackRecord ? `  last day: ${k.trackRecord.calls} calls, ${(k.trackRecord.successRate * 100).toFixed(1)} % ok, ${(k.trackRecord.uptime * 100).toFixed(2)} % up` : ""}`,
    `limiter   ${k.limiter?.windowCount ?? "?"}/${k.limiter?.requestsPerMinute ?? c.requestsPerMinute} requests this minute`,
    `in flight ${k.inFlight ?? "?"}/${k.maxConcurrent ?? c.maxConcurrent}`,
    `spend     ${k.spend?.dayMicros ?? "?"} µ$ today (cap ${c.dailyBudgetMicros ?? "none"}), ${k.spend?.monthMicros ?? "?"} µ$ this month (cap ${c.monthlyBudgetMicros ?? "none"})`,
    `earnings  ${k.earnings?.unflushedMicros ?? "?"} µ$ not yet flushed, ${k.earnings?.servedCount ?? "?"} served`,
    `credential ${k.credentialLoaded ? "decrypted in memory" : "not loaded"}`,
  ];
  if (typeof k.analyticsOutbox === "number") lines.splice(lines.length - 1, 0, `analytics ${k.analyticsOutbox} flushed row(s) waiting for the analytics queue`);
  return lines.join("\n");
}

export function summarizePool(p: PoolSnapshot): string {
  const head = `pool ${p.provider}:${p.region}:${p.tier}  ${p.members.length} member(s)  updated ${when(p.updatedAt)}`;
  if (p.members.length === 0) return head;
  const rows = [...p.members]
    .sort((a, b) => a.priceMicros - b.priceMicros)
    .map((m) => [m.keyId, String(m.priceMicros), m.health.toFixed(3), m.state, ms(m.latencyMs), when(m.coolingUntil)]);
  const header = ["keyId", "price µ$", "health", "state", "latency", "cooling until"];
  const widths = header.map((_, i) => Math.max(header[i]!.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) => "  " + r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [head, fmt(header), ...rows.map(fmt)].join("\n");
}

async function allPools(client: ApiClient, providers: readonly string[]): Promise<PoolSnapshot[]> {
  const names = providers.flatMap((p) => REGIONS.flatMap((r) => TIERS.map((t) => [p, r, t] as const)));
  const pools = await Promise.all(
    names.map(([p, r, t]) =>
      client.pool(p, r, t).catch((err: unknown) => {
        // A pool nobody has joined yet may simply not exist.
        if (err instanceof ApiError && err.status === 404) return undefined;
        throw err;
      }),
    ),
  );
  return pools.filter((p): p is PoolSnapshot => p !== undefined && p.members?.length > 0);
}

export async function main(argv: string[], client: ApiClient = apiClient()): Promise<void> {
  const json = argv.includes("--json");
  const [command, ...args] = argv.filter((a) => a !== "--json");
  const show = (summary: string, value: unknown) => out(json ? pretty(value) : `${summary}\n\n${pretty(value)}`);

  switch (command) {
    case "key": {
      const key = await client.inspectKey(keyId(args[0]));
      return show(summarizeKey(key), key);
    }
    case "disable": {
      const key = await client.disableKey(keyId(args[0]));
      return show(`disabled ${key.keyId}\n${summarizeKey(key)}`, key);
    }
    case "drain": {
      const id = keyId(args[0]);
      const result = await client.drainKey(id);
      const key = (result as { key?: KeyInspection }).key;
      return show(key ? `draining ${id}\n${summarizeKey(key)}` : `draining ${id}`, result);
    }
    case "pool": {
      const provider = oneOf("provider", args[0], PROVIDER_IDS);
      const region = oneOf("region", args[1], REGIONS);
      const tier = oneOf("tier", args[2] ?? "standard", TIERS);
      const pool = await client.pool(provider, region, tier);
      return show(summarizePool(pool), pool);
    }
    case "pools": {
      const providers = args[0] ? [oneOf("provider", args[0], PROVIDER_IDS)] : PROVIDER_IDS;
      const pools = await allPools(client, providers);
      if (json) return out(pretty(pools));
      return out(pools.length ? pools.map(summarizePool).join("\n\n") : "no pool has members");
    }
    case "payouts": {
      const status = oneOf("status", args[0] ?? "open", ["pending", "failed", "open", "all"]);
      const { payouts } = await client.call<{ payouts: OpsPayout[] }>("GET", `/ops/payouts?status=${status}`);
      return json ? out(pretty(payouts)) : out(summarizePayouts(payouts));
    }
    case "payout": {
      if (args[0] !== "retry") throw new CliError("usage: npm run inspect -- payout retry <payoutId>");
      const id = args[1] ?? "";
      if (!PAYOUT_ID.test(id)) throw new CliError("a payout id is a UUID (see `npm run inspect -- payouts failed`)");
      const result = await client.call<{ retryOf: string; payout: OpsPayout }>("POST", `/ops/payouts/${id}/retry`);
      return show(`retry of ${result.retryOf}\n${summarizePayouts([result.payout])}`, result);
    }
    case "jobs": {
      if (args[0] === "run") {
        const name = oneOf("job", args[1], ["payouts", "earnings_flush", "rollup", "retention"]);
        const { outcome } = await client.call<{ outcome: { job: string; ok: boolean; counts: Record<string, unknown>; error: string | null } }>("POST", `/ops/jobs/${name}/run`);
        return show(`${outcome.job} ${outcome.ok ? "ok" : `FAILED: ${outcome.error}`}`, outcome);
      }
      if (args[0] !== undefined) throw new CliError("usage: npm run inspect -- jobs [run <job>]");
      const { jobs } = await client.call<{ jobs: OpsJob[] }>("GET", "/ops/jobs");
      return json ? out(pretty(jobs)) : out(summarizeJobs(jobs));
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      return out(USAGE);
    default:
      throw new CliError(`unknown command "${command}" (try \`npm run inspect -- help\`)`);
  }
}

if (isMain(import.meta.url)) runCli((argv) => main(argv));
