// Reaching a buyer's BuyerWallet, without the class: the payment code and disputes use it.
import type { Env } from "../../core/env.ts";

/** The wallet of one buyer id (the hash, B2): its object is named by it. */
export const walletStub = (env: Pick<Env, "BUYER_WALLET">, buyerId: string) => env.BUYER_WALLET.get(env.BUYER_WALLET.idFromName(buyerId));
