// B5: buyer spend tracking in KV `SPEND`, one entry per buyer id per UTC day, expiring
// after 90 days (M1). Written by the buyer's wallet object (debounced, see BuyerWallet),
// read here. Keys hold only the hashed buyer id and the day; values only amounts.
import type { Env } from "../../core/env.ts";

export const SPEND_TTL_SECONDS = 90 * 86_400;

export interface SpendDay {
  /** YYYY-MM-DD, UTC. */
  day: string;
  spentMicros: number;
  refundedMicros: number;
  requests: number;
}

export const spendKey = (buyerId: string, day: string) => `spend:${buyerId}:${day}`;

/** A buyer's tracked spend, oldest day first (at most the last 90 days exist). */
export async function readSpend(env: Pick<Env, "SPEND">, buyerId: string): Promise<SpendDay[]> {
  const out: SpendDay[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.SPEND.list({ prefix: `spend:${buyerId}:`, cursor });
    for (const k of page.keys) {
      const value = await env.SPEND.get<SpendDay>(k.name, "json");
      if (value) out.push(value);
    }
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
  return out.sort((a, b) => a.day.localeCompare(b.day));
}
