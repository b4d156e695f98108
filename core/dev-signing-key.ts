// The dev sign-in's signing key (S1, development only): made by `npm start` and the test
// setup, which run outside the Worker, and read by the Worker's token verification. In
// production sessions come from Supabase Auth and no such key exists.
import type { JWK } from "jose";

/** The public half of an ES256 JWK, as a JWKS entry. */
export function publicJwk({ kty, crv, x, y, kid }: JsonWebKey & { kid?: string }) {
  return { kty, crv, x, y, kid, alg: "ES256", use: "sig" } as JWK;
}

/**
 * A new dev sign-in key: the private JWK for AUTH_DEV_SIGNING_KEY and the public JWKS for
 * AUTH_JWKS (`npm start` writes both to .dev.vars; the tests make their own).
 */
export async function generateDevSigningKey(kid = `dev-${new Date().toISOString().slice(0, 10)}`): Promise<{ privateJwk: JWK; jwks: { keys: JWK[] } }> {
  const pair = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"])) as CryptoKeyPair;
  const priv = (await crypto.subtle.exportKey("jwk", pair.privateKey)) as JsonWebKey;
  const privateJwk = { kty: priv.kty, crv: priv.crv, x: priv.x, y: priv.y, d: priv.d, kid, alg: "ES256" } as JWK;
  return { privateJwk, jwks: { keys: [publicJwk(privateJwk as JsonWebKey & { kid?: string })] } };
}
