// Choosing a key (P2, B3): filter the pool snapshots to keys this buyer may use, then
// power of two choices on cost (price, health, local load) for the first attempt and
// the rest by cost for failover. Pure functions: the property tests drive them directly.
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
