// core/encoding.ts base64url in Node 22, which lacks Uint8Array's native base64 methods, so
// this runs the fallback (test/worker/encoding.test.ts runs the native path in workerd):
// both must match the reference encoding byte for byte and refuse what is not base64url.
import { describe, it } from "vitest";
import { checkBase64Url } from "../base64url-cases.ts";

describe("base64url (fallback path)", () => {
  it("matches the reference encoding for every length 0-300 and refuses malformed text", () => checkBase64Url(false));
});
