// The buyer client's pass mac (buyer/pass-mac.ts): node:crypto's and WebCrypto's give the
// same bytes, which are what the router verifies (worker/payments/passes.ts computes the
// same input; test/worker/passes.test.ts pays with proofs made by the client).
import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { passMac } from "../../buyer/pass-mac.ts";

describe("pass mac", () => {
  it("node:crypto and WebCrypto agree, and match HMAC-SHA256 of the input", async () => {
    const secret = crypto.getRandomValues(new Uint8Array(32));
    const viaNode = passMac(secret, { createHmac: (alg, key) => createHmac(alg, key) });
    const viaWebCrypto = passMac(secret, null);
    for (const input of ["cn2-pass/v1|abc|1", "cn2-pass/v1|abc|9007199254740991", "é"]) {
      const expected = new Uint8Array(createHmac("sha256", secret).update(input).digest());
      expect(await viaNode(input)).toEqual(expected);
      expect(await viaWebCrypto(input)).toEqual(expected);
    }
  });
});
