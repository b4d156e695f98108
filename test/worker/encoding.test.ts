// core/encoding.ts base64url in workerd, on the native Uint8Array base64 methods (the
// fallback runs in test/node/encoding.test.ts): the same reference cases.
import { describe, it } from "vitest";
import { checkBase64Url } from "../base64url-cases.ts";

describe("base64url (native path)", () => {
  it("matches the reference encoding for every length 0-300 and refuses malformed text", () => checkBase64Url(true));
});
