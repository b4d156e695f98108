// Money is integer micro-dollars end to end. What a buyer paid is split into what the
// serving seller earns and the marketplace fee, exactly: no float, no lost micro-dollar.

/**
 * The seller earns the key's price minus the fee (feeBps basis points of that price,
 * rounded down, so rounding favours the seller); everything else the buyer paid, the fee
 * plus any difference between the quote paid and a cheaper serving key, is the fee.
 * Always sellerMicros + feeMicros === paidMicros.
 */
export function split(paidMicros: number, keyPriceMicros: number, feeBps: number): { sellerMicros: number; feeMicros: number } {
  for (const [name, n] of [["paidMicros", paidMicros], ["keyPriceMicros", keyPriceMicros]] as const) {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${name} must be a non-negative whole number of micro-dollars`);
  }
  if (!Number.isInteger(feeBps) || feeBps < 0 || feeBps > 10_000) throw new RangeError("feeBps must be a whole number from 0 to 10000");
  if (keyPriceMicros > paidMicros) throw new RangeError("a key priced above what the buyer paid cannot serve the request");
  // BigInt: price * bps can pass 2^53 for large prices.
  const fee = Number((BigInt(keyPriceMicros) * BigInt(feeBps)) / 10_000n);
  const sellerMicros = keyPriceMicros - fee;
  return { sellerMicros, feeMicros: paidMicros - sellerMicros };
}

/** MARKETPLACE_FEE_BPS, validated; a bad value fails loudly rather than charging wrongly. */
export function feeBps(env: { MARKETPLACE_FEE_BPS?: string }): number {
  const raw = env.MARKETPLACE_FEE_BPS ?? "0";
  const n = Number(raw);
  if (raw === "" || !Number.isInteger(n) || n < 0 || n > 10_000) throw new Error("MARKETPLACE_FEE_BPS must be a whole number from 0 to 10000");
  return n;
}
