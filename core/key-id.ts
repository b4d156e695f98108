// Key ids (S2): made by the seller's client, because the vault envelope's AAD binds the id
// before the server ever sees the key (core/vault.ts), and derived from the seller, so that
// one seller can never present another seller's id (issue 10, item 5):
//
//   keyId = "k_" + nonce + tag      nonce: 16 random base32 characters (80 bits)
//                                   tag:   10 base32 characters (50 bits) of
//                                          SHA-256("cn2-key-id/v1|" + sellerId + "|" + nonce)
//
// The server refuses, before it looks anything up, any id whose tag was not made for the
// calling seller, with the same answer as a malformed id. Seller B sending seller A's id is
// then refused exactly like B sending any id not made for B: whether the id exists is never
// looked at. The tag is no secret (anyone can compute it for any seller id): it binds an id
// to its seller, it does not authenticate anyone. Base32's alphabet (a-z, 2-7) keeps ids
// inside the key id shape the database checks (`^k_[a-z0-9]{12,32}$`). WebCrypto only: the
// CLI, the dashboard and the Worker share this module.

const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";
const NONCE_CHARS = 16;
const TAG_CHARS = 10;
/** The shape of a derived key id (a subset of KeyIdSchema's). */
export const DERIVED_KEY_ID = new RegExp(`^k_[a-z2-7]{${NONCE_CHARS + TAG_CHARS}}$`);

/** The one message for every key id the server will not take: a malformed one, or one made for another seller. */
export const INVALID_KEY_ID_MESSAGE =
  "keyId must be a key id made for your seller account: k_ + 16 random + 10 derived characters (a-z, 2-7), as core/key-id.ts newKeyId makes it";

/** The first `chars` base32 characters of `bytes` (5 bits each, most significant first). */
function base32(bytes: Uint8Array, chars: number): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = ((value << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5 && out.length < chars) {
      out += ALPHABET[(value >> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length === chars) break;
  }
  return out;
}

async function tagOf(sellerId: string, nonce: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`cn2-key-id/v1|${sellerId}|${nonce}`));
  return base32(new Uint8Array(digest), TAG_CHARS);
}

/** A fresh key id for `sellerId` (GET /api/me's id: the one the envelope is sealed to). */
export async function newKeyId(sellerId: string): Promise<string> {
  const nonce = base32(crypto.getRandomValues(new Uint8Array(10)), NONCE_CHARS);
  return `k_${nonce}${await tagOf(sellerId, nonce)}`;
}

/** Whether `keyId` is well formed and was derived for `sellerId` (constant work whatever the answer). */
export async function isKeyIdFor(sellerId: string, keyId: unknown): Promise<boolean> {
  const id = typeof keyId === "string" && DERIVED_KEY_ID.test(keyId) ? keyId : null;
  const nonce = id === null ? "" : id.slice(2, 2 + NONCE_CHARS);
  // The tag is computed for a malformed id too, so both refusals take the same path.
  const expected = await tagOf(sellerId, nonce);
  return id !== null && id.slice(2 + NONCE_CHARS) === expected;
}
