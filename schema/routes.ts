// Route allow-lists (S3, P3): "METHOD /path" patterns. `*` matches within one path
// segment, `**` matches the rest of the path; METHOD `*` matches any method.

const cache = new Map<string, RegExp>();
const CACHE_MAX = 1000;
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

function compile(pattern: string): RegExp {
  let re = cache.get(pattern);
  if (!re) {
    // Split at the first space only; both halves are escaped, so a pattern that skipped
    // validation still cannot widen itself with regex syntax.
    const space = pattern.indexOf(" ");
    const method = space < 0 ? "" : pattern.slice(0, space);
    const path = space < 0 ? pattern : pattern.slice(space + 1);
    const body = path
      .split(/(\*\*|\*)/)
      .map((part) => (part === "**" ? ".*" : part === "*" ? "[^/]*" : escape(part)))
      .join("");
    const m = method === "*" ? "[A-Z]+" : escape(method);
    re = new RegExp(`^${m} ${body}$`);
    if (cache.size >= CACHE_MAX) cache.clear();
    cache.set(pattern, re);
  }
  return re;
}

const target = (method: string, path: string) => `${method.toUpperCase()} ${path}`;

export function routeMatches(pattern: string, method: string, path: string): boolean {
  return compile(pattern).test(target(method, path));
}

export function routeAllowed(patterns: readonly string[], method: string, path: string): boolean {
  const t = target(method, path);
  return patterns.some((p) => compile(p).test(t));
}

/** The price for a route: the first matching per-route price, else the key's price. */
export function priceFor(
  config: { priceMicros: number; routePrices: readonly { route: string; priceMicros: number }[] },
  method: string,
  path: string,
): number {
  if (config.routePrices.length === 0) return config.priceMicros;
  const t = target(method, path);
  return config.routePrices.find((r) => compile(r.route).test(t))?.priceMicros ?? config.priceMicros;
}
