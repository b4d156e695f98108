// The vault (S2) inside workerd: the same WebCrypto the SellerKey object uses.
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import * as v from "valibot";
import { EnvelopeSchema, type Envelope } from "../../schema/wire.ts";
import {
  VaultError,
  decryptCredential,
  encryptCredential,
  fromBase64Url,
  generateVaultKey,
  parseVaultPrivateKeys,
  publicKeysOf,
  toBase64Url,
  type KeyBinding,
  type VaultPrivateKey,
} from "../../core/vault.ts";

const binding: KeyBinding = { sellerId: "seller_a", keyId: "k_abcdefghijkl0001" };
const SECRET = "sk-proj-Zq8XvT3nLw5Rb9Kc2Hd7Jf4Mg6Pa1Se0Uy8Wi3Oq5Tr";

const keyA = await generateVaultKey("kid-a");
const keyB = await generateVaultKey("kid-b");

/** The VaultError a promise rejects with (fails the test if it resolves). */
async function vaultError(p: Promise<unknown>): Promise<VaultError> {
  const err = await p.then(
    () => { throw new Error("expected a VaultError"); },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(VaultError);
  return err as VaultError;
}

function syncVaultError(fn: () => unknown): VaultError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(VaultError);
    return e as VaultError;
  }
  throw new Error("expected a VaultError");
}

/** Everything an error exposes, for "does not leak" assertions. */
const surface = (e: Error) => `${String(e)}\n${e.message}\n${e.stack ?? ""}\n${JSON.stringify(e)}`;

const utf8 = (s: string) => new TextEncoder().encode(s);
const base64 = (s: string) => btoa(String.fromCharCode(...utf8(s)));

/** Flip one bit of a base64url field's first byte (a character edit may hit padding bits). */
function flipped(field: string): string {
  const bytes = fromBase64Url(field);
  bytes[0] = bytes[0]! ^ 0x01;
  return toBase64Url(bytes);
}

describe("vault envelope", () => {
  it("round-trips a credential", async () => {
    const envelope = await encryptCredential(SECRET, keyA.publicKey, binding);
    expect(envelope.v).toBe(1);
    expect(envelope.kid).toBe("kid-a");
    expect(v.parse(EnvelopeSchema, envelope)).toEqual(envelope);
    expect(await decryptCredential(envelope, [keyA.privateKey], binding)).toBe(SECRET);
  });

  it("PR2: the envelope holds no plaintext, in clear or base64/base64url", async () => {
    const envelope = await encryptCredential(SECRET, keyA.publicKey, binding);
    const wire = JSON.stringify(envelope);
    const b64 = base64(SECRET);
    const b64url = toBase64Url(utf8(SECRET));
    for (const needle of [SECRET, SECRET.slice(8, 24), b64.slice(4, 24), b64url.slice(4, 24)]) {
      expect(wire).not.toContain(needle);
    }
  });

  it("uses a fresh ephemeral key, salt and iv per envelope", async () => {
    const a = await encryptCredential(SECRET, keyA.publicKey, binding);
    const b = await encryptCredential(SECRET, keyA.publicKey, binding);
    expect(a.epk.x).not.toBe(b.epk.x);
    expect(a.salt).not.toBe(b.salt);
    expect(a.iv).not.toBe(b.iv);
    expect(a.ct).not.toBe(b.ct);
  });

  it("a ciphertext moved to another keyId or seller fails with decrypt_failed", async () => {
    const envelope = await encryptCredential(SECRET, keyA.publicKey, binding);
    for (const other of [
      { ...binding, keyId: "k_abcdefghijkl0002" },
      { ...binding, sellerId: "seller_b" },
    ]) {
      const err = await vaultError(decryptCredential(envelope, [keyA.privateKey], other));
      expect(err.code).toBe("decrypt_failed");
      expect(surface(err)).not.toContain(SECRET);
    }
  });

  it("tampered ct, iv, salt or epk fail with decrypt_failed", async () => {
    const envelope = await encryptCredential(SECRET, keyA.publicKey, binding);
    const otherEpk = (await encryptCredential("x", keyA.publicKey, binding)).epk;
    const tampered: Envelope[] = [
      { ...envelope, ct: flipped(envelope.ct) },
      { ...envelope, ct: envelope.ct.slice(0, -4) },
      { ...envelope, iv: flipped(envelope.iv) },
      { ...envelope, salt: flipped(envelope.salt) },
      { ...envelope, epk: otherEpk },
      { ...envelope, epk: { ...envelope.epk, x: flipped(envelope.epk.x) } }, // off the curve
      { ...envelope, epk: { ...envelope.epk, x: envelope.epk.y, y: envelope.epk.x } },
    ];
    for (const bad of tampered) {
      const err = await vaultError(decryptCredential(bad, [keyA.privateKey], binding));
      expect(err.code).toBe("decrypt_failed");
    }
  });

  it("a ciphertext under another vault key's kid fails with decrypt_failed", async () => {
    // Same kid label, different key material: the GCM tag catches it.
    const impostor = await generateVaultKey("kid-a");
    const envelope = await encryptCredential(SECRET, impostor.publicKey, binding);
    const err = await vaultError(decryptCredential(envelope, [keyA.privateKey], binding));
    expect(err.code).toBe("decrypt_failed");
  });

  it("an unknown kid fails with vault_key_unknown", async () => {
    const envelope = await encryptCredential(SECRET, keyB.publicKey, binding);
    const err = await vaultError(decryptCredential(envelope, [keyA.privateKey], binding));
    expect(err.code).toBe("vault_key_unknown");
    expect(surface(err)).not.toContain(SECRET);
  });

  it("rotation: old envelopes still open with [new, old] live; new ones use the new kid", async () => {
    const before = await encryptCredential(SECRET, keyA.publicKey, binding);
    const live = [keyB.privateKey, keyA.privateKey]; // newest first
    const current = publicKeysOf(live)[0]!;
    expect(current.kid).toBe("kid-b");
    const after = await encryptCredential(SECRET, current, binding);
    expect(after.kid).toBe("kid-b");
    expect(await decryptCredential(before, live, binding)).toBe(SECRET);
    expect(await decryptCredential(after, live, binding)).toBe(SECRET);
    // Once the old key is retired, its envelopes are unknown rather than silently wrong.
    expect((await vaultError(decryptCredential(before, [keyB.privateKey], binding))).code).toBe("vault_key_unknown");
  });

  it("decrypt errors carry no private key or secret material", async () => {
    const envelope = await encryptCredential(SECRET, keyA.publicKey, binding);
    const err = await vaultError(decryptCredential({ ...envelope, ct: flipped(envelope.ct) }, [keyA.privateKey], binding));
    const text = surface(err);
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain(keyA.privateKey.jwk.d!);
    expect(err.cause).toBeUndefined();
  });

  it("property: decrypt(encrypt(x)) === x for any unicode credential", async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ unit: "binary", maxLength: 300 }), async (credential) => {
        const envelope = await encryptCredential(credential, keyA.publicKey, binding);
        expect(await decryptCredential(envelope, [keyB.privateKey, keyA.privateKey], binding)).toBe(credential);
      }),
      { numRuns: 60 },
    );
    // Edges a random run may miss: empty, a leading BOM (TextDecoder drops it by default),
    // astral characters, NUL.
    for (const credential of ["", "\uFEFFsk-bom", "🔑sk-😀-𝔘", "a\u0000b", "x".repeat(4096)]) {
      const envelope = await encryptCredential(credential, keyA.publicKey, binding);
      expect(v.is(EnvelopeSchema, envelope)).toBe(true); // even the largest fits the wire schema
      expect(await decryptCredential(envelope, [keyA.privateKey], binding)).toBe(credential);
    }
  });

  it("refuses credentials too large for an envelope", async () => {
    await expect(encryptCredential("x".repeat(5000), keyA.publicKey, binding)).rejects.toThrow(RangeError);
  });
});

describe("vault keys", () => {
  it("publicKeysOf strips the private scalar and keeps kids and order", () => {
    const extra: VaultPrivateKey = { kid: "kid-x", jwk: { ...keyA.privateKey.jwk, key_ops: ["deriveBits"], ext: true } };
    const pubs = publicKeysOf([keyB.privateKey, extra]);
    expect(pubs.map((k) => k.kid)).toEqual(["kid-b", "kid-x"]);
    for (const pub of pubs) {
      expect(Object.keys(pub.jwk).sort()).toEqual(["crv", "kty", "x", "y"]);
      expect(JSON.stringify(pub)).not.toContain(keyA.privateKey.jwk.d!);
    }
  });

  it("parseVaultPrivateKeys accepts a generated key list, newest first", () => {
    const keys = parseVaultPrivateKeys(JSON.stringify([keyB.privateKey, keyA.privateKey]));
    expect(keys.map((k) => k.kid)).toEqual(["kid-b", "kid-a"]);
    expect(keys[0]!.jwk.d).toBe(keyB.privateKey.jwk.d);
  });

  it("the Worker's configured VAULT_PRIVATE_KEYS parse (two live keys for rotation)", () => {
    const configured = (env as unknown as { VAULT_PRIVATE_KEYS: string }).VAULT_PRIVATE_KEYS;
    expect(parseVaultPrivateKeys(configured).length).toBe(2);
  });

  it("parseVaultPrivateKeys rejects bad input with vault_misconfigured, never echoing it", () => {
    const d = keyA.privateKey.jwk.d!;
    const good = keyA.privateKey.jwk;
    const cases = [
      `[{"kid":"a","jwk":{"d":"${d}"`, // truncated JSON
      `{"kid":"a","jwk":${JSON.stringify(good)}}`, // not an array
      "[]",
      JSON.stringify([{ kid: "a", jwk: { ...good, crv: "P-384" } }]),
      JSON.stringify([{ kid: "a", jwk: { ...good, kty: "RSA" } }]),
      JSON.stringify([{ kid: "a", jwk: { kty: "EC", crv: "P-256", x: good.x, y: good.y } }]), // missing d
      JSON.stringify([{ kid: "a", jwk: { ...good, d: `${d}!` } }]),
      JSON.stringify([{ kid: `bad kid ${d}`, jwk: good }]),
      JSON.stringify([{ kid: "a", jwk: good }, { kid: "a", jwk: good }]),
    ];
    for (const input of cases) {
      const err = syncVaultError(() => parseVaultPrivateKeys(input));
      expect(err.code).toBe("vault_misconfigured");
      expect(surface(err)).not.toContain(d);
      expect(err.message).not.toContain(input);
    }
  });
});
