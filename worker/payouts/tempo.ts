// USDC payouts on Tempo: a TIP-20 `transferWithMemo` from the marketplace treasury with
// viem (its `tempo` chains and `viem/tempo` token actions), then the receipt. The memo is
// the payout id (16 bytes, left-padded to bytes32), so every transfer on chain names the
// payout it paid, and a payout whose send outcome was lost can be found again by memo.
//
// Units: the token has 6 decimals, so one base unit is one micro-dollar of USDC; a
// payout's amount_units is its amount in micro-dollars, exactly.
import { createClient, http, pad, publicActions, type Address, type Chain, type Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { tempo, tempoLocalnet, tempoModerato } from "viem/chains";
import { Abis, Actions } from "viem/tempo";
import type { PayoutRow } from "../../schema/tables.ts";
import type { Env } from "../../core/env.ts";

const CHAINS: Record<string, Chain> = { tempo, tempoModerato, tempoLocalnet };
/** Blocks searched backwards for a transfer by memo when a send's outcome was lost. */
const MEMO_LOOKBACK_BLOCKS = 200_000n;

export interface TempoConfig {
  chain: Chain;
  rpcUrl: string | undefined;
  token: Address;
  treasuryKey: Hex;
}

/** The configuration, or null when USDC payouts are not set up here (a clear 503 upstream). */
export function tempoConfig(env: Env): TempoConfig | null {
  const chain = CHAINS[env.TEMPO_PAYOUT_CHAIN || "tempo"];
  const token = env.TEMPO_PAYOUT_TOKEN ?? "";
  const key = env.TEMPO_TREASURY_KEY ?? "";
  if (!chain || !/^0x[0-9a-fA-F]{40}$/.test(token) || !/^0x[0-9a-fA-F]{64}$/.test(key)) return null;
  return { chain, rpcUrl: env.TEMPO_RPC_URL || undefined, token: token as Address, treasuryKey: key as Hex };
}

/** bytes32 memo of a payout: its UUID's 16 bytes, left-padded. */
export function payoutMemo(payoutId: string): Hex {
  return pad(`0x${payoutId.replaceAll("-", "").toLowerCase()}`, { size: 32 });
}

function treasuryClient(cfg: TempoConfig) {
  return createClient({
    account: privateKeyToAccount(cfg.treasuryKey),
    chain: cfg.chain,
    transport: http(cfg.rpcUrl, { timeout: 20_000, retryCount: 1 }),
  }).extend(publicActions);
}

export type TempoResult =
  | { ok: true; ref: Hex; settled: true; status: "paid" | "failed" }
  | { ok: true; ref: Hex; settled: false }
  | { ok: false; code: string; retryable: boolean };

/**
 * Send a payout and wait for its receipt. `onBroadcast` runs with the hash as soon as the
 * transaction is out, before waiting, so the hash is stored even if the wait is cut short.
 * Refusals before broadcast (simulation revert, e.g. an empty treasury) fail the payout;
 * a lost answer to the broadcast is not a failure (the transaction may be out): the
 * payout stays sent and the reconciler looks for its memo.
 */
export async function sendTempoTransfer(env: Env, payout: PayoutRow, onBroadcast: (hash: Hex) => Promise<void>): Promise<TempoResult> {
  const cfg = tempoConfig(env);
  if (!cfg) return { ok: false, code: "tempo_not_configured", retryable: true };
  if (!payout.destination || payout.amount_units === null) return { ok: false, code: "no_destination", retryable: false };
  const client = treasuryClient(cfg);
  let hash: Hex;
  try {
    hash = await Actions.token.transfer(client, {
      token: cfg.token,
      to: payout.destination as Address,
      amount: BigInt(payout.amount_units),
      memo: payoutMemo(payout.id),
    });
  } catch (err) {
    const name = err instanceof Error ? err.name : "unknown";
    // Reverted in simulation / refused by the node: nothing was broadcast.
    const refused = /ContractFunctionExecutionError|ContractFunctionRevertedError|EstimateGasExecutionError|InsufficientFundsError|ExecutionRevertedError/.test(name);
    console.error(JSON.stringify({ evt: "payout_tempo_send_error", payoutId: payout.id, error: name }));
    return refused ? { ok: false, code: "tempo.transfer_refused", retryable: false } : { ok: false, code: "tempo.unreachable", retryable: true };
  }
  await onBroadcast(hash);
  return settle(client, hash);
}

async function settle(client: ReturnType<typeof treasuryClient>, hash: Hex): Promise<TempoResult> {
  try {
    const receipt = await client.waitForTransactionReceipt({ hash, timeout: 60_000 });
    return { ok: true, ref: hash, settled: true, status: receipt.status === "success" ? "paid" : "failed" };
  } catch {
    return { ok: true, ref: hash, settled: false };
  }
}

/**
 * A payout left sent: its receipt if it has a hash; else a transfer with its memo from
 * the treasury to its destination in recent blocks. Null: nothing known yet.
 */
export async function reconcileTempo(env: Env, payout: PayoutRow): Promise<{ ref: Hex; status: "paid" | "failed" } | null> {
  const cfg = tempoConfig(env);
  if (!cfg || !payout.destination) return null;
  const client = treasuryClient(cfg);
  if (payout.external_ref && /^0x[0-9a-f]{64}$/i.test(payout.external_ref)) {
    const receipt = await client.getTransactionReceipt({ hash: payout.external_ref as Hex }).catch(() => null);
    return receipt ? { ref: payout.external_ref as Hex, status: receipt.status === "success" ? "paid" : "failed" } : null;
  }
  const latest = await client.getBlockNumber();
  const logs = await client.getContractEvents({
    address: cfg.token,
    abi: Abis.tip20,
    eventName: "TransferWithMemo",
    args: { from: client.account.address, to: payout.destination as Address, memo: payoutMemo(payout.id) },
    fromBlock: latest > MEMO_LOOKBACK_BLOCKS ? latest - MEMO_LOOKBACK_BLOCKS : 0n,
    toBlock: latest,
  });
  const found = logs.find((l) => l.transactionHash);
  return found ? { ref: found.transactionHash!, status: "paid" } : null;
}
