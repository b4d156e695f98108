// The `credit` challenges cn2 makes and checks itself (worker/payments/credit-challenge.ts)
// against mppx's own: for the same input, mppx's challenge function and ours give the same
// challenge, field for field and serialized byte for byte; mppx's Challenge.verify accepts
// ours and ours accepts mppx's; any altered bound field, or another secret, is refused by both.
import { env } from "cloudflare:test";
import fc from "fast-check";
import { Challenge, Credential, Receipt } from "mppx";
import { describe, expect, it } from "vitest";
import type { Env } from "../../core/env.ts";
import { creditChallenge, serializeChallenge, verifyChallengeId } from "../../worker/payments/credit-challenge.ts";
import { receiptHeader } from "../../worker/payments/index.ts";
import { issueChallenges, payments, routeScope } from "../../worker/payments/server.ts";

const e = env as unknown as Env;

type ChallengeFn = (options: Record<string, unknown>) => Promise<Challenge.Challenge>;

async function fromMppx(q: { amountMicros: number; scope: string; expires: string; nonce: string; description?: string }) {
  const p = await payments(e);
  const charge = (p.mppx.challenge.credit as Record<string, ChallengeFn>).charge!;
  return charge({
    scope: q.scope, meta: { n: q.nonce }, expires: q.expires, amount: String(q.amountMicros), currency: "usd",
    ...(q.description ? { description: q.description } : {}),
  });
}

const quote = fc.record({
  amountMicros: fc.integer({ min: 1, max: 999_999_999_999_999 }),
  route: fc.string({ minLength: 1, maxLength: 60 }),
  expiresMs: fc.integer({ min: 1_700_000_000_000, max: 4_000_000_000_000 }),
  nonce: fc.stringMatching(/^[0-9a-f]{32}$/),
  // Quotes, backslashes, Latin-1 and wider characters: the header escaping must match mppx's.
  description: fc.option(fc.string({ minLength: 1, maxLength: 40, unit: fc.constantFrom("a", "Z", " ", '"', "\\", "é", "—", "😀", "1") }), { nil: undefined }),
});

describe("credit challenges made without mppx's generic path", () => {
  it("equal mppx's for the same input, and each side verifies the other's", async () => {
    const { secretKey, realm } = await payments(e);
    await fc.assert(fc.asyncProperty(quote, async (q) => {
      const input = { amountMicros: q.amountMicros, scope: await routeScope(q.route), expires: new Date(q.expiresMs).toISOString(), nonce: q.nonce, description: q.description };
      const ours = await creditChallenge(secretKey, realm, input);
      const theirs = await fromMppx(input);
      expect(ours).toEqual(theirs);
      expect(Challenge.serialize(ours)).toBe(Challenge.serialize(theirs));
      expect(serializeChallenge(ours)).toBe(Challenge.serialize(theirs));
      expect(Challenge.deserialize(serializeChallenge(ours))).toEqual(Challenge.deserialize(Challenge.serialize(theirs)));
      expect(Challenge.verify(ours, { secretKey })).toBe(true);
      expect(await verifyChallengeId(secretKey, theirs)).toBe(true);
    }), { numRuns: 60 });
  });

  it("a challenge that crossed the wire (a buyer's credential) verifies; any altered field or another secret does not", async () => {
    const { secretKey } = await payments(e);
    const [issued] = await issueChallenges(e, { amountMicros: 1500, route: "POST /openai/v1/chat/completions" });
    const wire = (c: Challenge.Challenge) => Credential.deserialize(Credential.serialize({ challenge: c, payload: { signature: "x".repeat(86) } })).challenge;
    expect(await verifyChallengeId(secretKey, wire(issued!))).toBe(true);
    const otherScope = await routeScope("POST /openai/v1/embeddings");
    const altered: Challenge.Challenge[] = [
      { ...issued!, request: { ...issued!.request, amount: "1" } },
      { ...issued!, expires: new Date(Date.parse(issued!.expires!) + 60_000).toISOString() },
      { ...issued!, realm: "elsewhere" },
      { ...issued!, intent: "session" },
      { ...issued!, meta: { ...issued!.meta, _mppx_scope: otherScope }, opaque: undefined },
      { ...issued!, id: `${issued!.id.slice(0, -2)}AA` },
    ];
    for (const c of altered) {
      expect(await verifyChallengeId(secretKey, wire(c))).toBe(false);
      expect(Challenge.verify(wire(c), { secretKey })).toBe(false);
    }
    // Ids mppx's decoder would already refuse: ours refuses them too, without throwing.
    for (const id of ["not base64url!", "", "AAAA"]) expect(await verifyChallengeId(secretKey, { ...issued!, id })).toBe(false);
    expect(await verifyChallengeId(`${secretKey}-rotated`, wire(issued!))).toBe(false);
  });

  it("a receipt made without mppx's schema pass reads back with mppx's Receipt.deserialize, every field intact", async () => {
    const value = await receiptHeader({ buyerId: "b".repeat(64), amountMicros: 1500, method: "credit", proofId: "proof-1" }, { requestId: "req_1", refunded: false });
    expect(Receipt.deserialize(value)).toEqual({
      method: "credit", reference: "proof-1", status: "success", timestamp: expect.any(String), externalId: "req_1",
      requestId: "req_1", amountMicros: 1500, currency: "usd", refunded: false,
    });
  });
});
