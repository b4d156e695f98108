// Webhook URL checks against server-side request forgery (S6). A seller chooses where we
// POST; without these checks a webhook would be a way to make our Worker call addresses
// that are nobody's public service: loopback, the private networks, link-local (cloud
// metadata at 169.254.169.254), carrier-grade NAT, multicast, reserved ranges.
//
// What this can check is the URL itself: scheme, credentials, port, and the host when it
// is an IP literal (in any spelling the URL parser accepts: 2130706433, 0x7f.1, 0177.0.0.1,
// [::ffff:127.0.0.1] all normalise to the same address before we look) or a name that is
// internal by convention (localhost, *.local, *.internal, single labels). What it cannot
// check is what a public-looking name resolves to at delivery time (DNS rebinding): a
// Worker has no DNS lookup to pin. docs/webhooks.md explains what Cloudflare's own fetch
// adds there. The check runs when an endpoint is registered and again before every
// delivery attempt, and redirects are never followed.
import { devSetting } from "../../core/environment.ts";

/** Why a URL was refused: stable codes, also used in error messages and the delivery log. */
export type UrlRefusal =
  | "invalid_url"
  | "too_long"
  | "scheme_not_allowed"
  | "credentials_in_url"
  | "fragment_not_allowed"
  | "port_not_allowed"
  | "loopback"
  | "private"
  | "link_local"
  | "cgnat"
  | "multicast"
  | "unspecified"
  | "reserved"
  | "internal_name";

export type AddressClass = "public" | Exclude<UrlRefusal, "invalid_url" | "too_long" | "scheme_not_allowed" | "credentials_in_url" | "fragment_not_allowed" | "port_not_allowed" | "internal_name">;

export interface UrlPolicy {
  /** http:// as well as https:// (dev and tests only). */
  allowHttp: boolean;
  /** Loopback targets (127.0.0.0/8, ::1, localhost) and any port (dev and tests only). */
  allowLoopback: boolean;
}

export type UrlCheck = { ok: true; url: string } | { ok: false; reason: UrlRefusal; message: string };

export const MAX_URL_LENGTH = 2048;
/** HTTPS ports a deployed Worker may deliver to: the default and Cloudflare's HTTPS ports. */
export const ALLOWED_HTTPS_PORTS: ReadonlySet<string> = new Set(["", "443", "2053", "2083", "2087", "2096", "8443"]);

/**
 * The policy for this environment. DEV_WEBHOOKS_ALLOW_HTTP === "1" (set only by the dev
 * orchestrator and the tests) allows http and loopback receivers in development only
 * (core/environment.ts), so a stray variable cannot open loopback in production.
 */
export function urlPolicy(env: { DEV_WEBHOOKS_ALLOW_HTTP?: string; CN2_DEV?: string }): UrlPolicy {
  const dev = devSetting(env, "DEV_WEBHOOKS_ALLOW_HTTP") === "1";
  return { allowHttp: dev, allowLoopback: dev };
}

const refuse = (reason: UrlRefusal, message: string): UrlCheck => ({ ok: false, reason, message });

/** Validate a webhook URL; on success `url` is the normalised form to store and call. */
export function checkWebhookUrl(raw: string, policy: UrlPolicy): UrlCheck {
  if (typeof raw !== "string" || raw.length === 0) return refuse("invalid_url", "webhook URL is empty");
  if (raw.length > MAX_URL_LENGTH) return refuse("too_long", `webhook URL is longer than ${MAX_URL_LENGTH} characters`);
  if (/[\s\u0000-\u001f\u007f]/.test(raw)) return refuse("invalid_url", "webhook URL must not contain whitespace or control characters");
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return refuse("invalid_url", "webhook URL is not an absolute URL");
  }
  if (url.protocol !== "https:" && !(url.protocol === "http:" && policy.allowHttp)) {
    return refuse("scheme_not_allowed", policy.allowHttp ? "webhook URL must use http or https" : "webhook URL must use https");
  }
  if (url.username !== "" || url.password !== "" || /^[a-z]+:\/\/[^/?#]*@/i.test(raw)) {
    return refuse("credentials_in_url", "webhook URL must not contain a user name or password");
  }
  if (url.hash !== "" || raw.includes("#")) return refuse("fragment_not_allowed", "webhook URL must not contain a #fragment");
  if (url.href.length > MAX_URL_LENGTH) return refuse("too_long", `webhook URL is longer than ${MAX_URL_LENGTH} characters once normalised`);

  const host = url.hostname.replace(/\.$/, "");
  if (host === "") return refuse("invalid_url", "webhook URL has no host");
  const hostClass = classifyHost(host);
  if (hostClass !== "public") {
    const loopbackOk = hostClass === "loopback" && policy.allowLoopback;
    if (!loopbackOk) return refuse(hostClass, hostMessage(hostClass, host));
  }
  // Loopback receivers in dev listen on any port; everything else keeps to HTTPS ports.
  const portOk = hostClass === "loopback" || (url.protocol === "http:" && policy.allowHttp) || ALLOWED_HTTPS_PORTS.has(url.port);
  if (!portOk) return refuse("port_not_allowed", `webhook URL port ${url.port} is not allowed (use 443 or one of ${[...ALLOWED_HTTPS_PORTS].filter(Boolean).join(", ")})`);
  return { ok: true, url: url.href };
}

function hostMessage(reason: UrlRefusal, host: string): string {
  const what: Record<string, string> = {
    loopback: "a loopback address",
    private: "a private network address",
    link_local: "a link-local address",
    cgnat: "a carrier-grade NAT (shared) address",
    multicast: "a multicast address",
    unspecified: "an unspecified address",
    reserved: "a reserved or special-purpose address",
    internal_name: "an internal host name",
  };
  return `webhook URL host ${host} is ${what[reason] ?? "not allowed"}; webhooks go to public hosts only`;
}

// ---------------------------------------------------------------------------------------
// Hosts

/** Names that are internal by convention (RFC 6761, RFC 6762, RFC 8375, ICANN's .internal). */
const INTERNAL_SUFFIXES = [".local", ".internal", ".localdomain", ".home.arpa", ".lan", ".intranet", ".corp", ".private"];
/** Public names whose whole purpose is to resolve to 127.0.0.1. */
const LOOPBACK_NAMES = ["localtest.me", "lvh.me", "vcap.me"];

/**
 * What a URL host (WHATWG-parsed hostname, IPv6 in brackets, no trailing dot) points at,
 * as far as the text tells: an address class, "internal_name", or "public".
 */
export function classifyHost(hostname: string): AddressClass | "internal_name" {
  const host = hostname.toLowerCase().replace(/\.$/, "");
  if (host.startsWith("[") && host.endsWith("]")) {
    const v6 = parseIPv6(host.slice(1, -1));
    return v6 ? classifyIPv6(v6) : "reserved";
  }
  const v4 = parseIPv4(host);
  if (v4 !== null) return classifyIPv4(v4);
  if (host === "localhost" || host.endsWith(".localhost")) return "loopback";
  if (LOOPBACK_NAMES.some((n) => host === n || host.endsWith(`.${n}`))) return "loopback";
  if (!host.includes(".")) return "internal_name";
  if (INTERNAL_SUFFIXES.some((s) => host.endsWith(s))) return "internal_name";
  // Wildcard-DNS names that embed an address (10.0.0.1.nip.io, 127-0-0-1.sslip.io, and
  // the like): judge them by the address they spell.
  const embedded = embeddedIPv4(host);
  if (embedded !== null) {
    const c = classifyIPv4(embedded);
    if (c !== "public") return c;
  }
  return "public";
}

function embeddedIPv4(host: string): number | null {
  const dotted = /(?:^|\.)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})\./.exec(host);
  const dashed = /(?:^|[.-])(\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3})(?:\.|-)/.exec(host);
  const text = dotted?.[1] ?? dashed?.[1]?.replaceAll("-", ".");
  if (!text) return null;
  const parts = text.split(".").map(Number);
  if (parts.some((p) => p > 255)) return null;
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

// ---------------------------------------------------------------------------------------
// IPv4

/**
 * An IPv4 address in any form inet_aton (and the WHATWG URL parser) accepts: 1 to 4
 * parts, each decimal, 0x-hex or 0-octal, the last part filling the remaining bytes.
 * Returns the 32-bit value, or null when the text is not an IPv4 address.
 */
export function parseIPv4(text: string): number | null {
  const parts = text.split(".");
  if (parts.length > 1 && parts[parts.length - 1] === "") parts.pop();
  if (parts.length === 0 || parts.length > 4) return null;
  const values: number[] = [];
  for (const p of parts) {
    let n: number;
    if (/^0x[0-9a-f]*$/i.test(p)) n = p.length === 2 ? 0 : parseInt(p.slice(2), 16);
    else if (/^0[0-7]+$/.test(p)) n = parseInt(p.slice(1), 8);
    else if (/^(0|[1-9][0-9]*)$/.test(p)) n = Number(p);
    else return null;
    if (!Number.isSafeInteger(n)) return null;
    values.push(n);
  }
  const last = values.pop()!;
  if (values.some((v) => v > 255)) return null;
  if (last >= 2 ** (8 * (4 - values.length))) return null;
  let address = last;
  values.forEach((v, i) => {
    address += v * 2 ** (8 * (3 - i));
  });
  return address >>> 0;
}

const v4 = (a: number, b: number, c: number, d: number) => (((a << 24) >>> 0) + (b << 16) + (c << 8) + d) >>> 0;
const inV4 = (addr: number, base: number, bits: number) => bits === 0 || addr >>> (32 - bits) === base >>> (32 - bits);

/** IPv4 special-purpose ranges (IANA registry, RFC 6890 and successors), most specific first. */
const V4_RANGES: [number, number, Exclude<AddressClass, "public">][] = [
  [v4(0, 0, 0, 0), 8, "unspecified"],
  [v4(10, 0, 0, 0), 8, "private"],
  [v4(100, 64, 0, 0), 10, "cgnat"],
  [v4(127, 0, 0, 0), 8, "loopback"],
  [v4(169, 254, 0, 0), 16, "link_local"],
  [v4(172, 16, 0, 0), 12, "private"],
  [v4(192, 0, 0, 0), 24, "reserved"],
  [v4(192, 0, 2, 0), 24, "reserved"],
  [v4(192, 31, 196, 0), 24, "reserved"],
  [v4(192, 52, 193, 0), 24, "reserved"],
  [v4(192, 88, 99, 0), 24, "reserved"],
  [v4(192, 168, 0, 0), 16, "private"],
  [v4(192, 175, 48, 0), 24, "reserved"],
  [v4(198, 18, 0, 0), 15, "reserved"],
  [v4(198, 51, 100, 0), 24, "reserved"],
  [v4(203, 0, 113, 0), 24, "reserved"],
  [v4(224, 0, 0, 0), 4, "multicast"],
  [v4(240, 0, 0, 0), 4, "reserved"],
];

export function classifyIPv4(address: number): AddressClass {
  for (const [base, bits, cls] of V4_RANGES) if (inV4(address, base, bits)) return cls;
  return "public";
}

// ---------------------------------------------------------------------------------------
// IPv6

/** Eight 16-bit groups, or null. Accepts `::` compression and a dotted IPv4 tail; no zone ids. */
export function parseIPv6(text: string): number[] | null {
  if (text.includes("%") || text.length > 45) return null;
  let s = text;
  // A dotted IPv4 tail (::ffff:1.2.3.4) becomes its two hex groups.
  const lastColon = s.lastIndexOf(":");
  if (lastColon >= 0 && s.slice(lastColon + 1).includes(".")) {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s.slice(lastColon + 1));
    if (!m) return null;
    const b = m.slice(1).map(Number) as [number, number, number, number];
    if (b.some((x) => x > 255)) return null;
    s = `${s.slice(0, lastColon + 1)}${((b[0] << 8) | b[1]).toString(16)}:${((b[2] << 8) | b[3]).toString(16)}`;
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const split = (part: string) => (part === "" ? [] : part.split(":"));
  const head = split(halves[0]!);
  const rest = halves.length === 2 ? split(halves[1]!) : [];
  if (![...head, ...rest].every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return null;
  const hex = (gs: string[]) => gs.map((g) => parseInt(g, 16));
  if (halves.length === 1) return head.length === 8 ? hex(head) : null;
  const missing = 8 - head.length - rest.length;
  if (missing < 1) return null;
  return [...hex(head), ...new Array<number>(missing).fill(0), ...hex(rest)];
}

const v4Of = (hi: number, lo: number) => ((hi << 16) >>> 0) + lo;

export function classifyIPv6(g: number[]): AddressClass {
  const [g0, g1, g2, g3, g4, g5, g6, g7] = g as [number, number, number, number, number, number, number, number];
  const zeroTo = (n: number) => g.slice(0, n).every((x) => x === 0);
  if (zeroTo(8)) return "unspecified";
  if (zeroTo(7) && g7 === 1) return "loopback";
  // Addresses that carry an IPv4 address: judge by it, and refuse even a public one (there
  // is no reason to spell a public IPv4 receiver this way).
  const embedded = (addr: number): AddressClass => {
    const c = classifyIPv4(addr);
    return c === "public" ? "reserved" : c;
  };
  if (zeroTo(5) && g5 === 0xffff) return embedded(v4Of(g6, g7)); // ::ffff:a.b.c.d, v4-mapped
  if (zeroTo(4) && g4 === 0xffff && g5 === 0) return embedded(v4Of(g6, g7)); // ::ffff:0:a.b.c.d, SIIT
  if (zeroTo(6)) return embedded(v4Of(g6, g7)); // ::a.b.c.d, v4-compatible (deprecated)
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) return embedded(v4Of(g6, g7)); // NAT64
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 1) return "private"; // local-use NAT64 (RFC 8215)
  if (g0 === 0x2002) return embedded(v4Of(g1, g2)); // 6to4
  if (g0 === 0x100 && g1 === 0 && g2 === 0 && g3 === 0) return "reserved"; // discard-only
  if (g0 === 0x2001 && g1 === 0xdb8) return "reserved"; // documentation
  if (g0 === 0x2001 && g1 < 0x200) return "reserved"; // IETF protocol assignments, Teredo
  if (g0 === 0x3fff && g1 < 0x1000) return "reserved"; // documentation (RFC 9637)
  if ((g0 & 0xfe00) === 0xfc00) return "private"; // unique local
  if ((g0 & 0xffc0) === 0xfe80) return "link_local";
  if ((g0 & 0xffc0) === 0xfec0) return "private"; // site-local (deprecated)
  if ((g0 & 0xff00) === 0xff00) return "multicast";
  if ((g0 & 0xe000) !== 0x2000) return "reserved"; // outside global unicast 2000::/3
  return "public";
}
