// Choosing a key (P2, B3): filter the pool snapshots to keys this buyer may use, then
// power of two choices on cost (price, health, local load) for the first attempt and
// the rest by cost for failover. Pure functions: the property tests drive them directly.
//
// Routing stays flat as the market grows (issue 14): RouteCandidates does the filtering
// and sorting once per pool snapshot (the router keeps it until the snapshot is refreshed
// or a cooling key's pause ends), and a request then costs a binary search for its price
// limit, two random picks and a bounded failover list, whatever the number of keys.
import { REGIONS, type PoolMember, type PoolSnapshot, type Region } from "../../schema/wire.ts";
import { priceFor } from "../../schema/routes.ts";

/** EU member states (ISO 3166-1 alpha-2; Greece also as EL). */
export const EU_COUNTRIES: ReadonlySet<string> = new Set([
  "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "EL", "HU", "IE", "IT",
  "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
]);

export const isEuCountry = (country: string | null | undefined) => !!country && EU_COUNTRIES.has(country.toUpperCase());

/** An EU buyer is served by EU keys only; everyone else by any region. */
export const buyerRegions = (country: string | null | undefined): readonly Region[] => (isEuCountry(country) ? ["eu"] : REGIONS);

export interface Candidate extends PoolMember {
  /** The price of this request's route on this key. */
  price: number;
}

export interface Constraints {
  method: string;
  path: string;
  regions: readonly Region[];
  maxPrice: number | null;
  now: number;
}

export function eligible(snapshots: readonly PoolSnapshot[], c: Constraints): Candidate[] {
  const out: Candidate[] = [];
  for (const snap of snapshots) {
    for (const m of snap.members) {
      // Checked per member, not per snapshot: a key's own region decides, always.
      if (!c.regions.includes(m.region)) continue;
      if (m.state === "disabled" || (m.state === "cooling" && m.coolingUntil > c.now)) continue;
      const price = priceFor(m, c.method, c.path);
      if (c.maxPrice !== null && price > c.maxPrice) continue;
      out.push({ ...m, price });
    }
  }
  return out;
}

/** Lower is better: price, inflated by local load and by poor health. */
export const cost = (c: Candidate, load: number) => ((c.price + 1) * (1 + 0.25 * load)) / Math.max(c.health, 0.05);

/** The order in which to try keys: a power-of-two-choices pick first, then by cost. */
export function attemptOrder(cands: readonly Candidate[], load: (keyId: string) => number, random: () => number, max: number): Candidate[] {
  if (cands.length === 0) return [];
  const byCost = [...cands].sort((a, b) => cost(a, load(a.keyId)) - cost(b, load(b.keyId)));
  if (cands.length === 1) return byCost;
  const i = Math.floor(random() * cands.length);
  let j = Math.floor(random() * (cands.length - 1));
  if (j >= i) j++;
  const a = cands[i]!;
  const b = cands[j]!;
  const first = cost(a, load(a.keyId)) <= cost(b, load(b.keyId)) ? a : b;
  return [first, ...byCost.filter((c) => c !== first)].slice(0, max);
}

/** Up to this many candidates, attemptOrder's exact ordering is cheap enough per request. */
const SMALL = 32;
/** Failover candidates considered beyond SMALL: the statically cheapest this many. */
const FAILOVER_POOL = 16;

/** The eligible keys of one kind of request, prepared once for many requests. */
export class RouteCandidates {
  /** Cheapest first: the keys within a price limit are a prefix. */
  readonly byPrice: Candidate[];
  /** By cost without load (price and health): where failover looks first. */
  private readonly byStatic: Candidate[];
  /** Until when this holds: the next moment a cooling key may be tried again. */
  readonly until: number;

  constructor(snapshots: readonly PoolSnapshot[], c: Omit<Constraints, "maxPrice">) {
    this.byPrice = eligible(snapshots, { ...c, maxPrice: null }).sort((a, b) => a.price - b.price);
    this.byStatic = [...this.byPrice].sort((a, b) => cost(a, 0) - cost(b, 0));
    let until = Infinity;
    for (const snap of snapshots) {
      for (const m of snap.members) if (m.state === "cooling" && m.coolingUntil > c.now && c.regions.includes(m.region)) until = Math.min(until, m.coolingUntil);
    }
    this.until = until;
  }

  /** The keys priced at or below `limit` (null: all), cheapest first. */
  within(limit: number | null): Candidate[] {
    if (limit === null) return this.byPrice;
    let lo = 0;
    let hi = this.byPrice.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.byPrice[mid]!.price <= limit) lo = mid + 1;
      else hi = mid;
    }
    return lo === this.byPrice.length ? this.byPrice : this.byPrice.slice(0, lo);
  }

  /** attemptOrder over the keys within `limit`, in bounded time for a pool of any size. */
  order(limit: number | null, load: (keyId: string) => number, random: () => number, max: number): Candidate[] {
    const keys = this.within(limit);
    if (keys.length <= SMALL) return attemptOrder(keys, load, random, max);
    const i = Math.floor(random() * keys.length);
    let j = Math.floor(random() * (keys.length - 1));
    if (j >= i) j++;
    const a = keys[i]!;
    const b = keys[j]!;
    const first = cost(a, load(a.keyId)) <= cost(b, load(b.keyId)) ? a : b;
    const rest: Candidate[] = [];
    for (const k of this.byStatic) {
      if (k === first || (limit !== null && k.price > limit)) continue;
      rest.push(k);
      if (rest.length >= FAILOVER_POOL) break;
    }
    rest.sort((x, y) => cost(x, load(x.keyId)) - cost(y, load(y.keyId)));
    return [first, ...rest].slice(0, max);
  }
}
