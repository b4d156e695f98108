// Route allow-lists (S3, P3): "METHOD /path" patterns. `*` matches within one path
// segment, `**` matches the rest of the path; METHOD `*` matches any method.

const cache = new Map<string, RegExp>();

function compile(pattern: string): RegExp {
  let re = cache.get(pattern);
  if (!re) {
    const [method = "", path = ""] = pattern.split(" ", 2);
    const body = path
      .split(/(\*\*|\*)/)
      .map((part) => (part === "**" ? ".*" : part === "*" ? "[^/]*" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
      .join("");
    const m = method === "*" ? "[A-Z]+" : method;
    re = new RegExp(`^${m} ${body}$`);
    cache.set(pattern, re);
  }
  return re;
}

export function routeMatches(pattern: string, method: string, path: string): boolean {
  return compile(pattern).test(`${method.toUpperCase()} ${path}`);
}

export function routeAllowed(patterns: readonly string[], method: string, path: string): boolean {
  return patterns.some((p) => routeMatches(p, method, path));
}

/** The price for a route: the first matching per-route price, else the key's price. */
export function priceFor(
  config: { priceMicros: number; routePrices: readonly { route: string; priceMicros: number }[] },
  method: string,
  path: string,
): number {
  return config.routePrices.find((r) => routeMatches(r.route, method, path))?.priceMicros ?? config.priceMicros;
}
