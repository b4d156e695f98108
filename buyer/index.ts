// `cn2-buyer` (buyer/package.json): pay for cn2 requests with prepaid credit, no account. A buyer is a
// keypair (Ed25519 by default, or P-256), made and kept by the buyer; its did:key is the
// payer principal, which cn2 hashes into a buyer id on arrival (B2).
//
//   const key = await generateBuyerKey();            // once; keep serializeBuyerKey(key) secret
//   const fetch = createPayingFetch({ baseUrl, privateKey: serializeBuyerKey(key) });
//   const openai = new OpenAI({ baseURL: `${baseUrl}/openai/v1`, apiKey: "unused", fetch });
//
// The paying fetch answers a 402 `WWW-Authenticate: Payment` challenge with a `credit`
// credential (a signature over the challenge) through mppx's client, and retries once.
// A paid answer also carries a fresh challenge for the next call to the same route
// (`cn2-next-challenge`); the next such call pays it at once, skipping the 402 round trip,
// and falls back to the 402 exchange if cn2 turns it down (prices moved, or it expired).
// A busy buyer is also granted a pass for the route (`cn2-pass`): an allowance its signed
// payment opened, drawn on with an HMAC per request instead of a signature (no 402 either);
// any refusal of a pass falls back to the signed way.
// Runs anywhere WebCrypto and fetch exist: Node 22, browsers, Workers.
import { Challenge } from "mppx";
import { Mppx } from "mppx/client";
import { H } from "../schema/headers.ts";
import { formatPassProof, parsePassGrant, PASS_WANTED, passProofInput } from "../core/pass.ts";
import { creditClient, loadBuyerKey, type BuyerKey, type PrivateKeyInput } from "./keys.ts";
import { passMac, type PassMac } from "./pass-mac.ts";

export * from "./keys.ts";

export interface PayingFetchOptions {
  /** cn2's origin, e.g. http://127.0.0.1:8787. Only its 402s are paid. */
  baseUrl: string;
  privateKey: PrivateKeyInput | Promise<BuyerKey>;
  /** The fetch to wrap (defaults to globalThis.fetch at call time). */
  fetch?: typeof globalThis.fetch;
  /** Payment attempts per request after the first 402 (default 2: one retry on an expired or replayed proof). */
  maxPaymentRetries?: number;
  /**
   * Ask cn2 for a pass with the first signed payment on each route and pay later calls with
   * it, one HMAC each (default true). false: every call is signed, from the challenge the
   * last paid answer carried when there is one.
   */
  passes?: boolean;
}

/** A fetch that pays cn2's 402 challenges with prepaid credit. Drop-in for SDKs' `fetch` option. */
export function createPayingFetch(options: PayingFetchOptions): typeof globalThis.fetch {
  const origin = new URL(options.baseUrl).origin;
  const base: typeof globalThis.fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const key = options.privateKey instanceof Promise ? options.privateKey : loadBuyerKey(options.privateKey);
  key.catch(() => {}); // surfaced on first use
  const method = creditClient(key);
  const paying = Mppx.create({
    methods: [method],
    fetch: base,
    polyfill: false,
    maxPaymentRetries: options.maxPaymentRetries ?? 2,
  }).fetch as typeof globalThis.fetch;
  const next = new NextChallenges();
  const passes = new Passes();

  return async (input, init) => {
    const url = new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url, origin);
    if (url.origin !== origin) return base(input, init);
    // Only a body that can be sent twice may take the fast paths (a 402 means sending it again).
    const headers = new Headers(init?.headers);
    const slot = input instanceof Request || !resendable(init?.body) ? null : NextChallenges.slot(url, init?.method, headers);
    if (slot === null) return paying(input, init);
    const keep = (res: Response) => passes.keep(slot, res, next.keep(slot, res));
    const pass = passes.take(slot);
    if (pass !== null) {
      headers.set(H.pass, await pass.proof());
      const res = await base(input, { ...init, headers });
      if (res.status !== 402) return keep(res);
      passes.drop(slot, pass);
      await res.body?.cancel();
    }
    // Paid the signed way: ask for a pass with it, one request at a time (each grant
    // replaces the last, which concurrent requests may be drawing on).
    const asking = options.passes !== false && passes.ask(slot);
    if (asking) headers.set(H.pass, PASS_WANTED);
    try {
      const challenge = next.take(slot);
      if (challenge !== null) {
        headers.set("authorization", await method.createCredential({ challenge } as never));
        const res = await base(input, { ...init, headers });
        if (res.status !== 402) return keep(res);
        await res.body?.cancel();
        headers.delete("authorization");
      }
      return keep(await paying(input, { ...init, headers }));
    } finally {
      if (asking) passes.asked(slot);
    }
  };
}

/** A pass cn2 granted (`cn2-pass`): drawn on with an HMAC of its id and a fresh sequence number per request. */
class Pass {
  private seq = 0;
  readonly id: string;
  readonly expiresAt: number;
  private readonly mac: PassMac;
  constructor(id: string, secret: Uint8Array, expiresAt: number) {
    this.id = id;
    this.mac = passMac(secret);
    this.expiresAt = expiresAt;
  }

  async proof(): Promise<string> {
    const seq = ++this.seq;
    return formatPassProof(this.id, seq, await this.mac(passProofInput(this.id, seq)));
  }
}

/** Passes by slot (as NextChallenges): one each, used until it expires or is refused. */
class Passes {
  private readonly slots = new Map<string, Pass>();
  /** Slots with a request asking for a pass under way. */
  private readonly asking = new Set<string>();
  private static readonly SLOTS = 64;
  private static readonly MARGIN_MS = 15_000;

  take(slot: string): Pass | null {
    const pass = this.slots.get(slot);
    if (pass === undefined) return null;
    if (pass.expiresAt - Date.now() > Passes.MARGIN_MS) return pass;
    this.slots.delete(slot);
    return null;
  }

  /** May this request ask for a pass? (Then call asked() when it is done.) */
  ask(slot: string): boolean {
    if (this.asking.has(slot) || this.asking.size >= Passes.SLOTS) return false;
    this.asking.add(slot);
    return true;
  }

  asked(slot: string) {
    this.asking.delete(slot);
  }

  drop(slot: string, pass: Pass) {
    if (this.slots.get(slot) === pass) this.slots.delete(slot);
  }

  /** Keep the pass `res` grants, if any (`<id>.<secret>.<max micros>.<expires ms>`); returns `out`. */
  keep(slot: string, res: Response, out: Response): Response {
    const value = res.headers.get(H.pass);
    const grant = value === null ? null : parsePassGrant(value);
    if (grant === null) return out;
    if (!this.slots.has(slot) && this.slots.size >= Passes.SLOTS) this.slots.delete(this.slots.keys().next().value!);
    this.slots.set(slot, new Pass(grant.id, grant.secret, grant.expiresAt));
    return out;
  }
}

const resendable = (body: RequestInit["body"]) =>
  body === undefined || body === null || typeof body === "string" || body instanceof ArrayBuffer || ArrayBuffer.isView(body) || body instanceof URLSearchParams;

/**
 * Challenges handed out with paid answers, by what they can pay for: the method and path
 * (a challenge is scoped to one route) and the headers that change the quote (tier, price
 * cap). Each is used once, and only well before it expires.
 */
class NextChallenges {
  private readonly slots = new Map<string, Challenge.Challenge[]>();
  private static readonly PER_SLOT = 8;
  private static readonly SLOTS = 64;
  private static readonly MARGIN_MS = 15_000;

  static slot(url: URL, method: string | undefined, headers: Headers): string {
    return [(method ?? "GET").toUpperCase(), url.pathname, headers.get(H.tier) ?? "", headers.get(H.maxPrice) ?? ""].join(" ");
  }

  take(slot: string): Challenge.Challenge | null {
    const list = this.slots.get(slot);
    while (list && list.length > 0) {
      const c = list.pop()!;
      if (c.method === "credit" && Date.parse(c.expires ?? "") - Date.now() > NextChallenges.MARGIN_MS) return c;
    }
    return null;
  }

  keep(slot: string, res: Response): Response {
    const value = res.headers.get(H.nextChallenge);
    if (value === null) return res;
    let challenge: Challenge.Challenge;
    try {
      challenge = Challenge.deserialize(value);
    } catch {
      return res; // not one we can use: the next call takes the 402 path
    }
    let list = this.slots.get(slot);
    if (!list) {
      if (this.slots.size >= NextChallenges.SLOTS) this.slots.delete(this.slots.keys().next().value!);
      this.slots.set(slot, (list = []));
    }
    list.push(challenge);
    if (list.length > NextChallenges.PER_SLOT) list.shift();
    return res;
  }
}
