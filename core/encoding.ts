// Byte encodings the payment code needs, shared by the Worker and the buyer client:
// base64url (signatures, JWK fields), base58btc (did:key), hex (buyer ids). WebCrypto only.

const B64URL = /^[A-Za-z0-9_-]*$/;

/** The base64 methods of Uint8Array (TC39, in workerd's V8; not in Node 22's). */
interface NativeBase64 {
  toBase64?(options: { alphabet: "base64url"; omitPadding: boolean }): string;
}
interface NativeBase64Ctor {
  fromBase64?(text: string, options: { alphabet: "base64url"; lastChunkHandling: "loose" }): Uint8Array;
}
// Native where present: the paid path encodes several signatures and JSON documents per
// request, and the string-building fallback allocates a string per byte.
const nativeTo = typeof (Uint8Array.prototype as NativeBase64).toBase64 === "function";
const nativeFrom = typeof (Uint8Array as NativeBase64Ctor).fromBase64 === "function";

export function toBase64Url(bytes: Uint8Array): string {
  if (nativeTo) return (bytes as NativeBase64).toBase64!({ alphabet: "base64url", omitPadding: true });
  let bin = "";
  // In chunks: one string per chunk, not one per byte.
  for (let i = 0; i < bytes.length; i += 0x2000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x2000));
  return btoa(bin).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

export function fromBase64Url(text: string): Uint8Array {
  if (!B64URL.test(text) || text.length % 4 === 1) throw new Error("not base64url");
  if (nativeFrom) return (Uint8Array as NativeBase64Ctor).fromBase64!(text, { alphabet: "base64url", lastChunkHandling: "loose" });
  const bin = atob(text.replaceAll("-", "+").replaceAll("_", "/") + "===".slice((text.length + 3) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += bytes[i]!.toString(16).padStart(2, "0");
  return out;
}

const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const B58_INDEX = new Map([...B58].map((c, i) => [c, i]));

export function toBase58(bytes: Uint8Array): string {
  let zeros = 0;
  while (zeros < bytes.length && bytes[zeros] === 0) zeros++;
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  let out = "";
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out;
    n /= 58n;
  }
  return "1".repeat(zeros) + out;
}

export function fromBase58(text: string): Uint8Array {
  let zeros = 0;
  while (zeros < text.length && text[zeros] === "1") zeros++;
  let n = 0n;
  for (const c of text) {
    const v = B58_INDEX.get(c);
    if (v === undefined) throw new Error("not base58");
    n = n * 58n + BigInt(v);
  }
  const body: number[] = [];
  while (n > 0n) {
    body.unshift(Number(n & 0xffn));
    n >>= 8n;
  }
  return new Uint8Array([...new Array<number>(zeros).fill(0), ...body]);
}

export async function sha256(data: Uint8Array | string): Promise<Uint8Array> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export const sha256Hex = async (data: Uint8Array | string) => toHex(await sha256(data));
