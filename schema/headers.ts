// The cn2-specific HTTP header names, in a module of their own with no imports, so the
// buyer package (buyer/package.json) ships them without the rest of the wire schemas.
/** Headers the router and the key object use between themselves and with buyers. */
export const H = {
  requestId: "cn2-request-id",
  tier: "cn2-tier",
  maxPrice: "cn2-max-price",
  proxyToken: "cn2-proxy-token",
  /** Set by SellerKey on a response: the refusal code (absent on a served answer). */
  refusal: "cn2-refusal",
  /** Set by SellerKey on a served answer: what the request cost in micro-dollars. */
  price: "cn2-price-micros",
  /** Set by the router: which key served (opaque id, no seller data). */
  key: "cn2-key",
  /** Router -> SellerKey: what the buyer paid for this request (0 on the operator path). */
  paid: "cn2-paid-micros",
  /**
   * Router -> SellerKey: the tab a paid request was drawn on, as
   * `<tab id> <buyer id> <proof id> <challenge expiry ms>` (empty when none): the key
   * records the draw with its earning and reports it to the buyer's wallet (docs/payments.md, "Tabs").
   */
  tab: "cn2-tab",
  /**
   * On a paid answer: a fresh challenge for the buyer's next call to the same route at the
   * current quote, so that call can pay at once instead of taking a 402 first (the buyer client, cn2-buyer, does).
   */
  nextChallenge: "cn2-next-challenge",
  /**
   * Buyer -> router: `want` with a signed payment asks for a pass; `<pass id>.<seq>.<mac>`
   * pays with one. Router -> buyer, on a paid answer: the pass granted,
   * `<pass id>.<secret>.<max micros>.<expires ms>` (docs/payments.md, "Passes").
   */
  pass: "cn2-pass",
} as const;
