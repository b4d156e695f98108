// The HMAC-SHA256 a pass proof carries (docs/payments.md, "Passes"), made the cheapest way
// the runtime offers: node:crypto where there is one (about 4 µs of CPU a call), else
// WebCrypto (browsers, Workers; in Node 22 about 130 µs, a thread-pool job per call).

export type PassMac = (input: string) => Promise<Uint8Array>;

interface NodeHmac {
  createHmac(algorithm: "sha256", key: Uint8Array): { update(data: string): { digest(): Uint8Array } };
}

const nodeCrypto = (globalThis as { process?: { getBuiltinModule?(id: string): unknown } }).process?.getBuiltinModule?.("node:crypto") as NodeHmac | undefined;

/** A mac function under `secret`; `node` picks the implementation (null: WebCrypto; tests compare both). */
export function passMac(secret: Uint8Array, node: NodeHmac | null = nodeCrypto ?? null): PassMac {
  if (node) return async (input) => new Uint8Array(node.createHmac("sha256", secret).update(input).digest());
  let key: Promise<CryptoKey> | undefined;
  return async (input) => {
    key ??= crypto.subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return new Uint8Array(await crypto.subtle.sign("HMAC", await key, new TextEncoder().encode(input)));
  };
}
