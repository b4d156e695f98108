// Shared cases for core/encoding.ts's base64url, run in Node (fallback) and in workerd
// (native Uint8Array base64): each must agree with the reference built from btoa.
import { expect } from "vitest";
import { fromBase64Url, toBase64Url } from "../core/encoding.ts";

const reference = (bytes: Uint8Array) => {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
};

export function checkBase64Url(native: boolean) {
  expect(typeof (Uint8Array.prototype as { toBase64?: unknown }).toBase64 === "function").toBe(native);
  for (let n = 0; n <= 300; n++) {
    const bytes = crypto.getRandomValues(new Uint8Array(n));
    const text = reference(bytes);
    expect(toBase64Url(bytes)).toBe(text);
    expect(fromBase64Url(text)).toEqual(bytes);
  }
  // Larger than one fallback chunk.
  const big = new Uint8Array(70_000);
  for (let i = 0; i < big.length; i += 65_536) crypto.getRandomValues(big.subarray(i, i + 65_536));
  expect(toBase64Url(big)).toBe(reference(big));
  expect(fromBase64Url(reference(big))).toEqual(big);
  for (const bad of ["a", "abcde", "ab+c", "ab/c", "ab=c", "ab c", "abc=="]) expect(() => fromBase64Url(bad), bad).toThrow();
}
