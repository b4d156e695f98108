// How a paying fetch's requests paid, counted on the wire (bench/paid-client.ts, bench/soak.ts):
// wrap the fetch createPayingFetch calls with countingFetch.
import { PASS_WANTED } from "../core/pass.ts";
import { H } from "../schema/headers.ts";

export interface Sent {
  /** With a pass proof (docs/payments.md, "Passes"). */
  pass: number;
  /** With a signed credential (Authorization: Payment). */
  signed: number;
  /** With neither: a 402 comes back. */
  unpaid: number;
}

export const newSent = (): Sent => ({ pass: 0, signed: 0, unpaid: 0 });

/** globalThis.fetch, counting each request into `sent` while `counting()` is true. */
export function countingFetch(sent: Sent, counting: () => boolean = () => true): typeof globalThis.fetch {
  return (input, init) => {
    if (counting()) {
      // The paying fetch passes a Headers: read it as is (a copy would be the bench's cost, counted as the buyer's).
      const headers = init?.headers instanceof Headers ? init.headers : new Headers(init?.headers);
      const pass = headers.get(H.pass);
      if (headers.has("authorization")) sent.signed++;
      else if (pass !== null && pass !== PASS_WANTED) sent.pass++;
      else sent.unpaid++;
    }
    return globalThis.fetch(input, init);
  };
}
