// Where a buyer's credit lives: one BuyerWallet object per buyer id (the hash, B2).
import type { Env } from "../env.ts";

export const walletStub = (env: Pick<Env, "BUYER_WALLET">, buyerId: string) => env.BUYER_WALLET.get(env.BUYER_WALLET.idFromName(buyerId));
