// S6 / PR18: webhook URLs are checked against SSRF. https only outside dev; no
// credentials; no IP literal in a private, loopback, link-local, CGNAT, multicast,
// unspecified or reserved range (IPv4 in every spelling, IPv6 including v4-mapped); no
// internal names; HTTPS ports only. The dev flag opens http and loopback, nothing else.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { checkWebhookUrl, classifyHost, parseIPv4, parseIPv6, urlPolicy, type UrlPolicy } from "../../worker/webhooks/url.ts";

const PROD: UrlPolicy = urlPolicy({});
const DEV: UrlPolicy = urlPolicy({ CN2_DEV: "1", DEV_WEBHOOKS_ALLOW_HTTP: "1" });

function refused(url: string, policy = PROD) {
  const r = checkWebhookUrl(url, policy);
  return r.ok ? "accepted" : r.reason;
}

describe("webhook URL policy", () => {
  it("the dev flag is honoured only in development (CN2_DEV=1)", () => {
    expect(urlPolicy({ CN2_DEV: "1" })).toEqual({ allowHttp: false, allowLoopback: false });
    expect(urlPolicy({ CN2_DEV: "1", DEV_WEBHOOKS_ALLOW_HTTP: "0" })).toEqual({ allowHttp: false, allowLoopback: false });
    expect(urlPolicy({ CN2_DEV: "1", DEV_WEBHOOKS_ALLOW_HTTP: "1" })).toEqual({ allowHttp: true, allowLoopback: true });
    expect(urlPolicy({ DEV_WEBHOOKS_ALLOW_HTTP: "1" })).toEqual({ allowHttp: false, allowLoopback: false });
  });

  it("accepts ordinary public https URLs and normalises them", () => {
    expect(checkWebhookUrl("https://hooks.example.com/cn2", PROD)).toEqual({ ok: true, url: "https://hooks.example.com/cn2" });
    expect(checkWebhookUrl("https://Hooks.Example.COM", PROD)).toEqual({ ok: true, url: "https://hooks.example.com/" });
    expect(checkWebhookUrl("https://hooks.example.com:8443/x?y=1", PROD)).toEqual({ ok: true, url: "https://hooks.example.com:8443/x?y=1" });
    expect(checkWebhookUrl("https://8.8.8.8/hook", PROD)).toEqual({ ok: true, url: "https://8.8.8.8/hook" });
    expect(checkWebhookUrl("https://[2606:4700:4700::1111]/hook", PROD)).toEqual({ ok: true, url: "https://[2606:4700:4700::1111]/hook" });
  });

  // Every row is refused with the flag off (production); `dev` says what the flag changes.
  const TABLE: [url: string, reason: string, dev: string][] = [
    ["http://hooks.example.com/", "scheme_not_allowed", "accepted"],
    ["ftp://hooks.example.com/", "scheme_not_allowed", "scheme_not_allowed"],
    ["javascript:alert(1)", "scheme_not_allowed", "scheme_not_allowed"],
    ["file:///etc/passwd", "scheme_not_allowed", "scheme_not_allowed"],
    ["not a url", "invalid_url", "invalid_url"],
    ["/relative/path", "invalid_url", "invalid_url"],
    ["https://user:pass@hooks.example.com/", "credentials_in_url", "credentials_in_url"],
    ["https://user@hooks.example.com/", "credentials_in_url", "credentials_in_url"],
    ["https://hooks.example.com/#frag", "fragment_not_allowed", "fragment_not_allowed"],
    ["https://hooks.example.com:22/", "port_not_allowed", "port_not_allowed"],
    ["https://hooks.example.com:6379/", "port_not_allowed", "port_not_allowed"],
    // loopback, every spelling the URL parser folds to 127.0.0.1
    ["https://127.0.0.1/", "loopback", "accepted"],
    ["https://127.1/", "loopback", "accepted"],
    ["https://2130706433/", "loopback", "accepted"],
    ["https://0x7f000001/", "loopback", "accepted"],
    ["https://0x7f.0.0.1/", "loopback", "accepted"],
    ["https://0177.0.0.1/", "loopback", "accepted"],
    ["https://017700000001/", "loopback", "accepted"],
    ["https://127.255.255.254/", "loopback", "accepted"],
    ["https://[::1]/", "loopback", "accepted"],
    ["https://[0:0:0:0:0:0:0:1]/", "loopback", "accepted"],
    ["https://[::ffff:127.0.0.1]/", "loopback", "accepted"],
    ["https://[::ffff:7f00:1]/", "loopback", "accepted"],
    ["https://localhost/", "loopback", "accepted"],
    ["https://LOCALHOST./", "loopback", "accepted"],
    ["https://api.localhost/", "loopback", "accepted"],
    ["https://localtest.me/", "loopback", "accepted"],
    ["http://127.0.0.1:8080/hook", "scheme_not_allowed", "accepted"],
    // private networks
    ["https://10.0.0.1/", "private", "private"],
    ["https://10.255.255.255/", "private", "private"],
    ["https://172.16.0.1/", "private", "private"],
    ["https://172.31.255.255/", "private", "private"],
    ["https://192.168.1.1/", "private", "private"],
    ["https://3232235777/", "private", "private"],
    ["https://0xc0.0xa8.1.1/", "private", "private"],
    ["https://[::ffff:10.1.2.3]/", "private", "private"],
    ["https://[::ffff:192.168.0.1]/", "private", "private"],
    ["https://[fc00::1]/", "private", "private"],
    ["https://[fd12:3456:789a::1]/", "private", "private"],
    ["https://[fec0::1]/", "private", "private"],
    ["https://[64:ff9b:1::a00:1]/", "private", "private"],
    ["https://[64:ff9b::10.0.0.1]/", "private", "private"],
    ["https://[2002:a00:1::]/", "private", "private"],
    ["https://10.0.0.1.nip.io/", "private", "private"],
    ["https://app-192-168-0-1.sslip.io/", "private", "private"],
    ["http://10.0.0.1/", "scheme_not_allowed", "private"],
    // link-local (cloud metadata)
    ["https://169.254.169.254/latest/meta-data/", "link_local", "link_local"],
    ["https://[::ffff:169.254.169.254]/", "link_local", "link_local"],
    ["https://[fe80::1]/", "link_local", "link_local"],
    ["https://[febf::1]/", "link_local", "link_local"],
    // carrier-grade NAT
    ["https://100.64.0.1/", "cgnat", "cgnat"],
    ["https://100.100.100.200/", "cgnat", "cgnat"],
    ["https://100.127.255.255/", "cgnat", "cgnat"],
    // multicast, unspecified, reserved
    ["https://224.0.0.1/", "multicast", "multicast"],
    ["https://239.255.255.250/", "multicast", "multicast"],
    ["https://[ff02::1]/", "multicast", "multicast"],
    ["https://0.0.0.0/", "unspecified", "unspecified"],
    ["https://0/", "unspecified", "unspecified"],
    ["https://[::]/", "unspecified", "unspecified"],
    ["https://255.255.255.255/", "reserved", "reserved"],
    ["https://240.0.0.1/", "reserved", "reserved"],
    ["https://192.0.2.1/", "reserved", "reserved"],
    ["https://198.18.0.1/", "reserved", "reserved"],
    ["https://[2001:db8::1]/", "reserved", "reserved"],
    ["https://[::ffff:8.8.8.8]/", "reserved", "reserved"],
    ["https://[100::1]/", "reserved", "reserved"],
    // internal names
    ["https://metadata.google.internal/", "internal_name", "internal_name"],
    ["https://printer.local/", "internal_name", "internal_name"],
    ["https://router.home.arpa/", "internal_name", "internal_name"],
    ["https://intranet/", "internal_name", "internal_name"],
    ["https://kubernetes/", "internal_name", "internal_name"],
  ];

  it.each(TABLE)("refuses %s (%s)", (url, reason, dev) => {
    expect(refused(url, PROD)).toBe(reason);
    expect(refused(url, DEV)).toBe(dev);
  });

  it("refuses over-long URLs and whitespace", () => {
    expect(refused(`https://hooks.example.com/${"a".repeat(2100)}`)).toBe("too_long");
    expect(refused("https://hooks.example.com/a b")).toBe("invalid_url");
    expect(refused("https://hooks.example.com/\n")).toBe("invalid_url");
  });
});

describe("address classification", () => {
  const octets = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }));
  /** A random address in one of the ranges no webhook may target, with its class. */
  const privateV4 = fc.oneof(
    octets.map(([b, c, d]) => [[10, b, c, d], "private"] as const),
    octets.map(([b, c, d]) => [[172, 16 + (b % 16), c, d], "private"] as const),
    octets.map(([b, c, d]) => [[192, 168, c, d], "private"] as const),
    octets.map(([b, c, d]) => [[127, b, c, d], "loopback"] as const),
    octets.map(([b, c, d]) => [[169, 254, c, d], "link_local"] as const),
    octets.map(([b, c, d]) => [[100, 64 + (b % 64), c, d], "cgnat"] as const),
    octets.map(([b, c, d]) => [[0, b, c, d], "unspecified"] as const),
    octets.map(([b, c, d]) => [[224 + (b % 16), b, c, d], "multicast"] as const),
  );
  const spell = (a: readonly number[], form: number): string => {
    const n = ((a[0]! << 24) >>> 0) + (a[1]! << 16) + (a[2]! << 8) + a[3]!;
    switch (form) {
      case 0: return a.join(".");
      case 1: return String(n);
      case 2: return `0x${n.toString(16)}`;
      case 3: return a.map((x) => `0${x.toString(8)}`).join(".");
      case 4: return a.map((x) => `0x${x.toString(16)}`).join(".");
      case 5: return `${a[0]}.${(a[1]! << 16) + (a[2]! << 8) + a[3]!}`;
      default: return `[::ffff:${a.join(".")}]`;
    }
  };

  it("every private IPv4, in decimal, octal, hex, short or v4-mapped form, is refused with its class", () => {
    fc.assert(
      fc.property(privateV4, fc.integer({ min: 0, max: 6 }), fc.boolean(), ([address, cls], form, dev) => {
        const r = checkWebhookUrl(`https://${spell(address, form)}/hook`, dev ? DEV : PROD);
        // The dev flag lets loopback through, and nothing else.
        if (dev && cls === "loopback") return r.ok;
        return !r.ok && r.reason === cls;
      }),
      { numRuns: 500 },
    );
  });

  it("public IPv4 outside the special ranges is accepted", () => {
    const publicV4 = fc.tuple(fc.integer({ min: 1, max: 223 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 254 }))
      .filter(([a, b]) => ![0, 10, 127].includes(a) && !(a === 100 && b >= 64 && b < 128) && !(a === 169 && b === 254) && !(a === 172 && b >= 16 && b < 32) && !(a === 192 && [0, 31, 52, 88, 168, 175].includes(b)) && !(a === 198 && [18, 19, 51].includes(b)) && !(a === 203 && b === 0));
    fc.assert(fc.property(publicV4, (a) => checkWebhookUrl(`https://${a.join(".")}/`, PROD).ok));
  });

  it("parses IPv4 and IPv6 forms", () => {
    expect(parseIPv4("127.0.0.1")).toBe(0x7f000001);
    expect(parseIPv4("0x7f.1")).toBe(0x7f000001);
    expect(parseIPv4("017700000001")).toBe(0x7f000001);
    expect(parseIPv4("256.0.0.1")).toBeNull();
    expect(parseIPv4("1.2.3.4.5")).toBeNull();
    expect(parseIPv4("example.com")).toBeNull();
    expect(parseIPv6("::1")).toEqual([0, 0, 0, 0, 0, 0, 0, 1]);
    expect(parseIPv6("::ffff:1.2.3.4")).toEqual([0, 0, 0, 0, 0, 0xffff, 0x102, 0x304]);
    expect(parseIPv6("2001:db8::")).toEqual([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]);
    expect(parseIPv6("1:2:3:4:5:6:7:8:9")).toBeNull();
    expect(parseIPv6("1::2::3")).toBeNull();
    expect(parseIPv6("fe80::1%eth0")).toBeNull();
    expect(classifyHost("hooks.example.com")).toBe("public");
    expect(classifyHost("[2606:4700::1111]")).toBe("public");
  });
});
