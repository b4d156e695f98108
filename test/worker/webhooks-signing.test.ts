// S6: deliveries are signed (HMAC-SHA256 over timestamp + "." + body) and a receiver can
// check them; signing secrets are sealed at rest (AES-256-GCM under WEBHOOK_SECRET_KEYS).
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { newSigningSecret, openSecret, sealSecret, secretKeys, WebhookSecretError } from "../../worker/webhooks/secrets.ts";
import { computeSignature, parseSignatureHeader, signatureHeader, verifySignature } from "../../worker/webhooks/signing.ts";

const testEnv = env as unknown as { WEBHOOK_SECRET_KEYS: string };

describe("signatures", () => {
  const secret = "whsec_test_0123456789abcdefghijklmnopqrstuv";
  const body = JSON.stringify({ id: "evt_0123456789abcdef", type: "key.disabled", createdAt: "2026-11-25T00:00:00.000Z", data: { keyId: "k_abc" } });

  it("signs t.body with HMAC-SHA256, hex, in a t=...,v1=... header", async () => {
    const t = 1_764_000_000;
    const header = await signatureHeader(secret, t, body);
    expect(header).toMatch(/^t=1764000000,v1=[0-9a-f]{64}$/);
    // Same as a plain HMAC over `${t}.${body}` with the secret string as key.
    const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${t}.${body}`)));
    expect(header.split("v1=")[1]).toBe([...mac].map((b) => b.toString(16).padStart(2, "0")).join(""));
  });

  it("verifies with the right secret only, and not for an altered body or timestamp", async () => {
    const now = 1_764_000_000;
    const header = await signatureHeader(secret, now, body);
    expect(await verifySignature(secret, header, body, { now })).toEqual({ ok: true, timestamp: now });
    expect(await verifySignature("whsec_another_secret_entirely_000000000000", header, body, { now })).toEqual({ ok: false, reason: "signature_mismatch" });
    expect(await verifySignature(secret, header, body.replace("k_abc", "k_abd"), { now })).toEqual({ ok: false, reason: "signature_mismatch" });
    expect(await verifySignature(secret, header, `${body} `, { now })).toEqual({ ok: false, reason: "signature_mismatch" });
    const shifted = header.replace(`t=${now}`, `t=${now + 1}`);
    expect(await verifySignature(secret, shifted, body, { now })).toEqual({ ok: false, reason: "signature_mismatch" });
  });

  it("refuses stale timestamps (replay) and malformed headers", async () => {
    const t = 1_764_000_000;
    const header = await signatureHeader(secret, t, body);
    expect(await verifySignature(secret, header, body, { now: t + 301 })).toEqual({ ok: false, reason: "timestamp_out_of_tolerance" });
    expect(await verifySignature(secret, header, body, { now: t - 301 })).toEqual({ ok: false, reason: "timestamp_out_of_tolerance" });
    expect((await verifySignature(secret, header, body, { now: t + 299 })).ok).toBe(true);
    for (const bad of [null, "", "t=1", "v1=" + "0".repeat(64), "t=abc,v1=" + "0".repeat(64), "t=1,v1=xyz", "garbage"]) {
      expect(await verifySignature(secret, bad, body, { now: 1 })).toEqual({ ok: false, reason: "malformed_header" });
    }
  });

  it("accepts any matching v1 among several and ignores unknown schemes", async () => {
    const t = 1_764_000_000;
    const good = await computeSignature(secret, t, body);
    const header = `t=${t},v0=whatever,v1=${"0".repeat(64)},v1=${good}`;
    expect(parseSignatureHeader(header)?.signatures).toHaveLength(2);
    expect((await verifySignature(secret, header, body, { now: t })).ok).toBe(true);
  });

  it("any change to the body breaks the signature (property)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 200 }), fc.string({ minLength: 1, maxLength: 5 }), fc.nat({ max: 199 }), async (text, insert, at) => {
        const t = 1_764_000_000;
        const header = await signatureHeader(secret, t, text);
        const i = Math.min(at, text.length);
        const altered = text.slice(0, i) + insert + text.slice(i);
        return (await verifySignature(secret, header, text, { now: t })).ok && !(await verifySignature(secret, header, altered, { now: t })).ok;
      }),
      { numRuns: 100 },
    );
  });
});

describe("signing secrets at rest", () => {
  const endpointId = "5b0c1a43-9d41-4b7e-8a1e-1f6f7f0c2b11";

  it("seals under the newest key and opens back to the same whsec_ string", async () => {
    const keys = await secretKeys(testEnv.WEBHOOK_SECRET_KEYS);
    expect(keys.map((k) => k.kid)).toEqual(["wh-test-2", "wh-test-1"]);
    const { secret, raw } = newSigningSecret();
    expect(secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    const sealed = await sealSecret(keys, endpointId, raw);
    expect(sealed.kid).toBe("wh-test-2");
    expect(sealed.iv).toHaveLength(12);
    expect(sealed.ciphertext).toHaveLength(48);
    // Nothing of the secret is visible in what is stored.
    expect(new TextDecoder().decode(sealed.ciphertext)).not.toContain(secret.slice(6, 16));
    expect(await openSecret(keys, endpointId, sealed)).toBe(secret);
  });

  it("an older kid still opens; an unknown kid, another endpoint or a flipped bit does not", async () => {
    const keys = await secretKeys(testEnv.WEBHOOK_SECRET_KEYS);
    const { secret, raw } = newSigningSecret();
    const oldSealed = await sealSecret([keys[1]!], endpointId, raw);
    expect(oldSealed.kid).toBe("wh-test-1");
    expect(await openSecret(keys, endpointId, oldSealed)).toBe(secret);
    await expect(openSecret([keys[0]!], endpointId, oldSealed)).rejects.toMatchObject({ code: "webhook_key_unknown" });
    await expect(openSecret(keys, "00000000-0000-4000-8000-000000000000", oldSealed)).rejects.toMatchObject({ code: "webhook_secret_undecryptable" });
    const flipped = { ...oldSealed, ciphertext: oldSealed.ciphertext.map((b, i) => (i === 0 ? b ^ 1 : b)) };
    await expect(openSecret(keys, endpointId, flipped)).rejects.toBeInstanceOf(WebhookSecretError);
  });

  it("refuses a misconfigured WEBHOOK_SECRET_KEYS without quoting it", async () => {
    for (const bad of [undefined, "", "not json", "[]", '[{"kid":"a","key":"c2hvcnQ="}]', '[{"kid":"a b","key":"MyZo8YQdfWuupICmiFD1LAFRY/0jkUVmzLmuRjW9Og0="}]']) {
      const err = await secretKeys(bad).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(WebhookSecretError);
      expect((err as Error).message).not.toContain("c2hvcnQ");
      expect((err as Error).message).not.toContain("MyZo8");
    }
  });
});
