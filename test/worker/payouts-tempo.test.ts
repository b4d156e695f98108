// USDC payouts on Tempo (issue 12) against a real local node: anvil --network tempo,
// started by test/global-setup.ts, TIP-20 test stablecoin with 6 decimals funded on the
// treasury (anvil's first dev account). Through the Worker's entry: the seller sets and
// confirms an address, asks for a payout, and the address ends up holding exactly the
// paid amount in token units, the transfer carrying the payout id as its memo.
import { env } from "cloudflare:workers";
import { createPublicClient, decodeEventLog, getAddress, http, type Address, type Hex } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { tempoLocalnet } from "viem/chains";
import { Abis, Actions } from "viem/tempo";
import { describe, expect, it } from "vitest";
import type { Env } from "../../core/env.ts";
import { payoutMemo } from "../../worker/payouts/tempo.ts";
import type { PayoutView } from "../../worker/payouts/store.ts";
import { as, ownerDb, signIn, type TestSeller } from "./helpers.ts";

const e = env as unknown as Env;
const chain = createPublicClient({ chain: tempoLocalnet, transport: http(e.TEMPO_RPC_URL) });
const token = e.TEMPO_PAYOUT_TOKEN as Address;
const tokenBalance = async (account: Address) => (await Actions.token.getBalance(chain, { token, account })).amount;

let n = 0;
async function earn(seller: TestSeller, netMicros: number) {
  const keyId = `k_tempotest${(n++).toString().padStart(6, "0")}`;
  await ownerDb((sql) => sql`insert into public.earnings_ledger (flush_id, key_id, seller_id, period_start, period_end, amount_micros, fee_micros, request_count)
    values (${`${keyId}:${seller.id.slice(0, 8)}`}, ${keyId}, ${seller.id}, now(), now(), ${netMicros}, 0, 1)`);
}

async function usdcSeller(label: string, netMicros: number) {
  const seller = await signIn(label);
  await ownerDb((sql) => sql`insert into public.kyc (seller_id, status) values (${seller.id}, 'approved')`);
  const address = privateKeyToAccount(generatePrivateKey()).address;
  expect((await as(seller, "/api/payout", { method: "PUT", json: { method: "usdc_tempo", evmAddress: address } })).status).toBe(200);
  // Scheduled payouts of other suites must not pick this seller up.
  expect((await as(seller, "/api/payout/schedule", { method: "PUT", json: { schedule: "manual" } })).status).toBe(200);
  await earn(seller, netMicros);
  return { seller, address: getAddress(address) };
}

describe("USDC payouts on Tempo (local anvil node)", () => {
  it("the seller's address ends up holding exactly the paid amount in token units, with the payout id as memo", async () => {
    const { seller, address } = await usdcSeller("tempo-paid", 2_500_001);
    // Not confirmed yet: refused before anything is sent.
    const early = await as(seller, "/api/payouts", { method: "POST", json: {} });
    expect(((await early.json()) as { error: { code: string } }).error.code).toBe("payout_method_not_ready");
    expect((await as(seller, "/api/payout/confirm", { method: "POST", json: { evmAddress: address } })).status).toBe(200);

    expect(await tokenBalance(address)).toBe(0n);
    const res = await as(seller, "/api/payouts", { method: "POST", json: {} });
    expect(res.status).toBe(201);
    const { payout } = (await res.json()) as { payout: PayoutView };
    // Micro-dollars are token units (6 decimals): no rounding, no remainder.
    expect(payout).toMatchObject({ method: "usdc_tempo", destination: address, amountMicros: 2_500_001, amountUnits: 2_500_001, status: "paid" });
    expect(payout.externalRef).toMatch(/^0x[0-9a-f]{64}$/);
    expect(await tokenBalance(address)).toBe(2_500_001n);

    // The transaction on chain: a TIP-20 TransferWithMemo to the seller, memo = payout id.
    const receipt = await chain.getTransactionReceipt({ hash: payout.externalRef as Hex });
    expect(receipt.status).toBe("success");
    const memos = receipt.logs
      .filter((l) => l.address.toLowerCase() === token.toLowerCase())
      .map((l) => { try { return decodeEventLog({ abi: Abis.tip20, data: l.data, topics: l.topics }); } catch { return null; } })
      .filter((ev) => ev?.eventName === "TransferWithMemo");
    expect(memos).toHaveLength(1);
    expect(memos[0]!.args).toMatchObject({ to: address, amount: 2_500_001n, memo: payoutMemo(payout.id) });
    expect(payoutMemo(payout.id)).toBe(`0x${"0".repeat(32)}${payout.id.replaceAll("-", "")}`);

    const { balance } = (await (await as(seller, "/api/earnings")).json()) as { balance: { withdrawnMicros: number; availableMicros: number } };
    expect(balance).toEqual({ earnedMicros: 2_500_001, withdrawnMicros: 2_500_001, availableMicros: 0 });
    const states = await ownerDb((sql) => sql`select status from public.payout_events where payout_id = ${payout.id} order by id`);
    expect(states.map((r) => r.status)).toEqual(["requested", "sent", "paid"]);
  });

  it("concurrent requests send one transaction", async () => {
    const { seller, address } = await usdcSeller("tempo-concurrent", 1_000_000);
    await as(seller, "/api/payout/confirm", { method: "POST", json: { evmAddress: address } });
    const results = await Promise.all(Array.from({ length: 5 }, () => as(seller, "/api/payouts", { method: "POST", json: {} })));
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
    expect(await tokenBalance(address)).toBe(1_000_000n);
  });
});

describe("USDC payouts without a treasury configured", () => {
  it("wait as requested (unclaimed) instead of being marked sent with nothing sent", async () => {
    const { executePayout } = await import("../../worker/payouts/execute.ts");
    const { seller, address } = await usdcSeller("tempo-unconfigured", 1_000_000);
    await as(seller, "/api/payout/confirm", { method: "POST", json: { evmAddress: address } });
    const row = await ownerDb(async (sql) => (await sql`select * from public.request_payout(${seller.id}, ${null}, ${1}, ${null}, ${null})`)[0]!);
    const after = await ownerDb((sql) => executePayout({ ...e, TEMPO_TREASURY_KEY: undefined }, sql, row.id as string));
    expect(after).toMatchObject({ id: row.id, status: "requested", external_ref: null });
    expect(await tokenBalance(address)).toBe(0n);
    // Once configured, the same payout is sent (here: executed directly, as the cron would).
    expect(await ownerDb((sql) => executePayout(e, sql, row.id as string))).toMatchObject({ status: "paid" });
    expect(await tokenBalance(address)).toBe(1_000_000n);
  });
});

describe("a USDC transfer the chain refuses", () => {
  it("fails the payout, restores the balance and nothing reaches the address", async () => {
    const { executePayout } = await import("../../worker/payouts/execute.ts");
    const { seller, address } = await usdcSeller("tempo-refused", 700_000);
    await as(seller, "/api/payout/confirm", { method: "POST", json: { evmAddress: address } });
    const row = await ownerDb(async (sql) => (await sql`select * from public.request_payout(${seller.id}, ${null}, ${1}, ${null}, ${null})`)[0]!);
    // A treasury with no tokens at all: the transfer reverts before anything is broadcast.
    const empty = { ...e, TEMPO_TREASURY_KEY: generatePrivateKey() };
    const after = await ownerDb((sql) => executePayout(empty, sql, row.id as string));
    expect(after).toMatchObject({ id: row.id, status: "failed", failure_code: "tempo.transfer_refused", external_ref: null });
    expect(await tokenBalance(address)).toBe(0n);
    const { balance } = (await (await as(seller, "/api/earnings")).json()) as { balance: { withdrawnMicros: number; availableMicros: number } };
    expect(balance).toMatchObject({ withdrawnMicros: 0, availableMicros: 700_000 });
  });
});
