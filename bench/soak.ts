// `npm run soak -- --seconds 300`: paid traffic under faults, then the books must balance to
// the micro-dollar (issue 10, build 2; docs/soak.md explains how to read the output).
//
// It lives in bench/ beside the bench because it is the same kind of harness and shares its
// machinery: the real Worker bundled by wrangler and run in workerd (bench/workerd.ts), the
// child-process cleanup (bench/processes.ts), the demo upstream and embedded Postgres as
// child processes. Everything listens on 127.0.0.1; the run is bounded in time; it stops
// by itself and kills only the processes it started.
//
//   many buyers  createPayingFetch (buyer/), credit from the dev faucet, streamed and not
//   several keys listed by a seller through the seller API (dev sign-in, sealed envelopes)
//   faults       upstream 5xx, timeouts, 429s and streams cut midway (the demo upstream's
//                per-credential injection); key objects restarted (POST /ops/keys/:id/restart:
//                the object aborts, memory gone, storage kept, in-flight requests fail;
//                Miniflare's unsafeEvictDurableObject waits for a busy object to go idle,
//                which under load it never does);
//                Postgres unreachable during earnings flushes (a TCP gate in front of it
//                that refuses connections); the seller's webhook receiver failing
//   the books    after traffic stops: every key is removed through the seller API, which
//                flushes its earnings to the ledger first (nothing is dropped); then
//                buyer debits minus refunds (faucet credit minus each wallet's balance)
//                must equal the ledger's total, and the seller's earnings plus fees too.
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createPayingFetch, generateBuyerKey, getBalance, requestFaucet, type BuyerKey } from "../buyer/index.ts";
import { countingFetch, newSent, type Sent } from "./wire.ts";
import { connect } from "../tools/database.ts";
import { upstreamBaseUrls } from "../tools/demo-upstream.ts";
import { generateDevSigningKey } from "../core/dev-signing-key.ts";
import { encryptCredential, generateVaultKey } from "../core/vault.ts";
import { newKeyId } from "../core/key-id.ts";
import { HOST, installCleanup, log, shutdown, spawnNode } from "./processes.ts";
import { bundleWorker, startWorker } from "./workerd.ts";

const ROOT = join(import.meta.dirname, "..");

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "60" },
    buyers: { type: "string", default: "8" },
    concurrency: { type: "string", default: "2" },
    keys: { type: "string", default: "4" },
    seed: { type: "string", default: "10" },
    "fault-every": { type: "string", default: "1.5" },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  process.stdout.write("npm run soak -- [--seconds 60] [--buyers 8] [--concurrency 2] [--keys 4] [--seed 10] [--fault-every 1.5]\n");
  process.exit(0);
}
const SECONDS = Number(args.seconds);
const BUYERS = Number(args.buyers);
const CONCURRENCY = Number(args.concurrency);
const KEYS = Number(args.keys);
const FAULT_EVERY_MS = Number(args["fault-every"]) * 1000;
for (const [name, n] of [["seconds", SECONDS], ["buyers", BUYERS], ["concurrency", CONCURRENCY], ["keys", KEYS]] as const) {
  if (!Number.isInteger(n) || n < 1 || n > 3600) throw new Error(`--${name} must be a whole number from 1 to 3600`);
}
if (!(FAULT_EVERY_MS >= 100)) throw new Error("--fault-every must be at least 0.1 (seconds)");

/** Credit per buyer: far more than a run can spend, so no request is refused for balance. */
const FUNDING_MICROS = 100_000_000;
/** Prices differ, so quotes move as keys cool and the fee split sees odd amounts. */
const PRICES = [1234, 1234, 1500, 2001, 1777, 1234];
const UPSTREAM_TIMEOUT_MS = 1500;
/** Hard bound on everything after the traffic: flush, books, cleanup. */
const WIND_DOWN_MS = 180_000;

/** Small seeded PRNG (mulberry32): a run's fault sequence and traffic mix repeat for a seed. */
function prng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(items: T[], rand: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

const randomHex = (bytes: number) => Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString("hex");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- Postgres behind a gate ----------------------------------------------------------

/** A TCP pass-through to the database that can refuse new connections. */
async function databaseGate(target: { host: string; port: number }): Promise<{ url: (base: string) => string; down(): void; up(): void; close(): Promise<void> }> {
  let open = true;
  const pairs = new Set<[Socket, Socket]>();
  const server: Server = createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    const upstream = createConnection(target.port, target.host);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, HOST, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    url: (base) => {
      const u = new URL(base);
      u.hostname = HOST;
      u.port = String(port);
      return u.href;
    },
    /**
     * New connections are refused (a flush connects afresh each time, so it fails); open
     * ones finish. Cutting open ones too wedged the embedded database's single backend in
     * a 60 s run (tools/database.ts; every later connection timed out), a limit of PGlite, not of
     * PostgreSQL, which rolls a cut connection's transaction back.
     */
    down() {
      open = false;
    },
    up() {
      open = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const [a, b] of [...pairs]) {
          a.destroy();
          b.destroy();
        }
        server.close(() => resolve());
      }),
  };
}

// ---- the seller's webhook receiver ---------------------------------------------------

async function webhookReceiver(): Promise<{ url: string; failing: boolean; ok: number; failed: number; close(): Promise<void> }> {
  const state = { url: "", failing: false, ok: 0, failed: 0, close: async () => {} };
  const server: HttpServer = createHttpServer((req, res) => {
    req.resume();
    req.on("end", () => {
      if (state.failing) {
        state.failed++;
        res.writeHead(500, { "content-type": "text/plain" }).end("receiver down (soak fault)");
      } else {
        state.ok++;
        res.writeHead(204).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, () => resolve()));
  state.url = `http://${HOST}:${(server.address() as { port: number }).port}/hook`;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return state;
}

// ---- traffic --------------------------------------------------------------------------

interface Tally {
  requests: number;
  /** 2xx answers read to the end, with a receipt that was not refunded. */
  served: number;
  /** Answers whose receipt says the payment was refunded. */
  refunded: number;
  refundedMicros: number;
  /** Paid answers (receipt, not refunded) whose stream was cut after the headers. */
  cut: number;
  /** What receipts say buyers paid and kept paying (not refunded). */
  receiptMicros: number;
  /** Answers without a receipt (402 refusals, 503 payment_unavailable, ...), by status. */
  unpaid: Record<string, number>;
  /** Requests that failed before any answer (connection reset, client timeout). */
  networkErrors: number;
  /** HTTP requests the paying fetch sent, by how they paid (docs/payments.md, "Passes"). */
  sent: Sent;
  /** The first few network errors, as the client saw them (which step failed). */
  networkErrorSamples: string[];
  streamed: number;
}

const newTally = (): Tally => ({ requests: 0, served: 0, refunded: 0, refundedMicros: 0, cut: 0, receiptMicros: 0, unpaid: {}, networkErrors: 0, networkErrorSamples: [], streamed: 0, sent: newSent() });

function readReceipt(value: string | null): { amountMicros: number; refunded: boolean } | null {
  if (value === null) return null;
  try {
    const r = JSON.parse(Buffer.from(value, "base64url").toString("utf8")) as { amountMicros?: unknown; refunded?: unknown };
    return typeof r.amountMicros === "number" && typeof r.refunded === "boolean" ? { amountMicros: r.amountMicros, refunded: r.refunded } : null;
  } catch {
    return null;
  }
}

async function buyerLoop(base: string, key: BuyerKey, end: number, rand: () => number, tally: Tally) {
  // What the paying fetch puts on the wire: how many requests paid with a pass, how many signed.
  const pay = createPayingFetch({ baseUrl: base, privateKey: key, fetch: countingFetch(tally.sent) });
  while (Date.now() < end) {
    const stream = rand() < 0.5;
    tally.requests++;
    if (stream) tally.streamed++;
    let res: Response;
    try {
      res = await pay(`${base}/openai/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "gpt-4o-mini", stream, messages: [{ role: "user", content: `soak ${tally.requests}` }] }),
        signal: AbortSignal.timeout(30_000),
      });
    } catch (err) {
      tally.networkErrors++;
      if (tally.networkErrorSamples.length < 5) {
        const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : "";
        tally.networkErrorSamples.push(`${err instanceof Error ? err.message : String(err)}${cause}`.slice(0, 160));
      }
      continue;
    }
    const receipt = readReceipt(res.headers.get("payment-receipt"));
    let complete = true;
    try {
      await res.arrayBuffer();
    } catch {
      complete = false;
    }
    if (receipt === null) {
      tally.unpaid[res.status] = (tally.unpaid[res.status] ?? 0) + 1;
      if (res.status === 429 || res.status === 503) await sleep(50);
      continue;
    }
    if (receipt.refunded) {
      tally.refunded++;
      tally.refundedMicros += receipt.amountMicros;
      continue;
    }
    tally.receiptMicros += receipt.amountMicros;
    if (complete && res.ok) tally.served++;
    else tally.cut++;
  }
}

// ---- faults ---------------------------------------------------------------------------

const FAULTS = ["upstream_5xx", "upstream_timeout", "upstream_429", "stream_cut", "key_restarted", "postgres_down", "webhook_receiver_failing"] as const;
type Fault = (typeof FAULTS)[number];

const unhandled = { count: 0, samples: [] as string[] };

async function main() {
  installCleanup();
  // A client-side timeout can fire inside the paying fetch after its caller has given up on
  // the request (a 300 s run died of one): counted and shown as a client error, not a crash.
  process.on("unhandledRejection", (reason) => {
    unhandled.count++;
    if (unhandled.samples.length < 3) unhandled.samples.push(String(reason instanceof Error ? `${reason.name}: ${reason.message}` : reason).slice(0, 160));
  });
  const hardStop = setTimeout(() => {
    log(`!! the soak did not finish within ${SECONDS}s + ${WIND_DOWN_MS / 1000}s: stopping`);
    void shutdown().finally(() => process.exit(2));
  }, SECONDS * 1000 + WIND_DOWN_MS);
  hardStop.unref();
  const rand = prng(Number(args.seed));

  // 1. The demo upstream and Postgres (PGlite, migrated, in memory), each its own process,
  // started together while wrangler bundles the Worker (awaited by startWorker in step 2;
  // the catch only keeps an early failure from counting as an unawaited client rejection).
  const bundle = bundleWorker();
  bundle.catch(() => {});
  const upstream = spawnNode("demo upstream", [join(ROOT, "tools/demo-upstream.ts"), "--port", "0", "--host", HOST]);
  const db = spawnNode("database", [join(ROOT, "tools/database.ts"), "serve", "--memory", "--port", "0"]);
  const [upstreamUrl, databaseUrl] = await Promise.all([
    upstream.waitForLine(/listening on (http:\/\/\S+)/, 15_000).then((m) => m[1]!),
    db.waitForLine(/serving on (postgres:\/\/\S+)/, 60_000).then((m) => m[1]!),
  ]);
  const dbAddress = new URL(databaseUrl);
  const gate = await databaseGate({ host: dbAddress.hostname, port: Number(dbAddress.port) });
  const receiver = await webhookReceiver();
  log(`demo upstream ${upstreamUrl}, database ${dbAddress.host} behind a gate, webhook receiver ${receiver.url}`);

  // 2. cn2 in workerd. Dev mode is opted into here, explicitly (faucet, dev sign-in, loopback webhooks).
  const opsToken = randomHex(24);
  const vault = await generateVaultKey("soak-1");
  const devKey = await generateDevSigningKey("soak");
  const worker = await startWorker({
    bundle,
    directOutbound: true,
    databaseUrl: gate.url(databaseUrl),
    bindings: {
      // Development, opted into (core/environment.ts): demo upstream, faucet, dev sign-in, loopback webhooks.
      CN2_DEV: "1",
      OPS_TOKEN: opsToken,
      VAULT_PRIVATE_KEYS: JSON.stringify([vault.privateKey]),
      UPSTREAM_BASE_URLS: JSON.stringify(upstreamBaseUrls(upstreamUrl)),
      UPSTREAM_TIMEOUT_MS: String(UPSTREAM_TIMEOUT_MS),
      MPP_SECRET_KEY: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"),
      DEV_FAUCET: "1",
      AUTH_DEV_SIGNING_KEY: JSON.stringify(devKey.privateJwk),
      AUTH_JWKS: JSON.stringify(devKey.jwks),
      // Flushes every second, so Postgres outages land on them.
      EARNINGS_FLUSH_MS: "1000",
      POOL_CACHE_MS: "500",
      POOL_DEBOUNCE_MS: "100",
      WEBHOOK_SECRET_KEYS: JSON.stringify([{ kid: "soak-1", key: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64") }]),
      DEV_WEBHOOKS_ALLOW_HTTP: "1",
      WEBHOOK_RETRY_BASE_SECONDS: "1",
      WEBHOOK_TIMEOUT_MS: "1500",
    },
  });
  const base = worker.url;
  log(`cn2 in workerd at ${base} (Miniflare ${worker.miniflareVersion})`);

  // 3. A seller lists KEYS keys and a webhook endpoint through the seller API.
  const seller = await signIn(base);
  const hook = await fetch(`${base}/api/webhooks`, {
    method: "POST",
    headers: { authorization: `Bearer ${seller.token}`, "content-type": "application/json" },
    body: JSON.stringify({ url: receiver.url }),
  });
  if (hook.status !== 201) throw new Error(`webhook registration: ${hook.status} ${await hook.text()}`);
  const keys: { keyId: string; credential: string; price: number }[] = [];
  for (let i = 0; i < KEYS; i++) {
    const keyId = await newKeyId(seller.id); // derived for this seller (core/key-id.ts)
    const credential = `sk-demo-soak-${i}-${randomHex(6)}`;
    const price = PRICES[i % PRICES.length]!;
    const envelope = await encryptCredential(credential, vault.publicKey, { sellerId: seller.id, keyId });
    const config = { provider: "openai", priceMicros: price, requestsPerMinute: 100_000, maxConcurrent: 1_000, region: "us", tier: "standard" };
    const res = await fetch(`${base}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${seller.token}`, "content-type": "application/json" },
      body: JSON.stringify({ keyId, sellerId: seller.id, envelope, config }),
    });
    if (res.status !== 201) throw new Error(`key ${keyId}: ${res.status} ${await res.text()}`);
    keys.push({ keyId, credential, price });
  }
  log(`seller ${seller.id} listed ${KEYS} keys (prices ${keys.map((k) => k.price).join(", ")}) and a webhook`);
  await waitForPool(base, opsToken, KEYS);

  // 4. Buyers, funded from the faucet.
  const buyers = await Promise.all(
    Array.from({ length: BUYERS }, async () => {
      const key = await generateBuyerKey();
      await requestFaucet({ baseUrl: base, buyerId: key.buyerId, amountMicros: FUNDING_MICROS });
      return key;
    }),
  );
  log(`${BUYERS} buyers funded with ${FUNDING_MICROS} micro-dollars each; ${BUYERS * CONCURRENCY} requests in flight for ${SECONDS} s`);

  // 5. Traffic and faults, for SECONDS.
  const tally = newTally();
  const faults: Record<Fault, number> = Object.fromEntries(FAULTS.map((f) => [f, 0])) as Record<Fault, number>;
  const started = Date.now();
  const end = started + SECONDS * 1000;
  const traffic = Promise.all(buyers.flatMap((key) => Array.from({ length: CONCURRENCY }, () => buyerLoop(base, key, end, prng(Math.floor(rand() * 2 ** 32)), tally))));
  const demo = (body: unknown) =>
    fetch(`${upstreamUrl}/__demo/behaviour`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }).then((r) => {
      if (!r.ok) throw new Error(`demo behaviour: ${r.status}`);
    });
  const ops = (path: string) =>
    fetch(`${base}${path}`, { method: "POST", headers: { authorization: `Bearer ${opsToken}` }, signal: AbortSignal.timeout(10_000) }).then(async (r) => {
      if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.text()).slice(0, 200)}`);
    });
  const restores: Promise<void>[] = [];
  let cycle: Fault[] = [];
  while (Date.now() < end - 500) {
    // Every kind once per cycle, in a seeded order, so even a short run sees each of them.
    if (cycle.length === 0) cycle = shuffle([...FAULTS], rand);
    const fault = cycle.shift()!;
    // Upstream faults hit one key, or (one time in three) every key: then no failover can
    // serve and the payment is refunded.
    const targets = rand() < 1 / 3 ? keys : [keys[Math.floor(rand() * keys.length)]!];
    const each = (behaviour: Record<string, unknown>) => Promise.all(targets.map((k) => demo({ credential: k.credential, ...behaviour })));
    try {
      switch (fault) {
        case "upstream_5xx": await each({ status: rand() < 0.5 ? 500 : 503, times: 3 }); break;
        case "upstream_timeout": await each({ delayMs: UPSTREAM_TIMEOUT_MS + 1000, times: 2 }); break;
        case "upstream_429": await each({ status: 429, retryAfter: 1, times: 1 }); break;
        case "stream_cut": await each({ cutAfterChunks: 2, times: 4 }); break;
        case "key_restarted": await Promise.all(targets.map((k) => ops(`/ops/keys/${k.keyId}/restart`))); break;
        case "postgres_down": {
          gate.down();
          restores.push(sleep(2_500).then(() => gate.up()));
          break;
        }
        case "webhook_receiver_failing": {
          receiver.failing = true;
          restores.push(sleep(3_000).then(() => void (receiver.failing = false)));
          break;
        }
      }
      faults[fault]++;
    } catch (err) {
      log(`fault ${fault} could not be injected: ${String(err).slice(0, 200)}`);
    }
    await sleep(Math.min(FAULT_EVERY_MS, Math.max(0, end - Date.now())));
  }
  await traffic;
  await Promise.all(restores);
  gate.up();
  receiver.failing = false;
  await fetch(`${upstreamUrl}/__demo/behaviour`, { method: "DELETE" });
  const trafficSeconds = (Date.now() - started) / 1000;
  log(`traffic done after ${trafficSeconds.toFixed(1)} s: ${tally.requests} requests; faults ${JSON.stringify(faults)}`);

  // 6. Flush everything: removing a key flushes its earnings to the ledger first, or refuses.
  for (const { keyId } of keys) {
    for (let attempt = 1; ; attempt++) {
      const res = await fetch(`${base}/api/keys/${keyId}`, { method: "DELETE", headers: { authorization: `Bearer ${seller.token}` }, signal: AbortSignal.timeout(30_000) });
      if (res.status === 200) break;
      const text = await res.text();
      if (attempt >= 20) throw new Error(`removing ${keyId} (flush): ${res.status} ${text.slice(0, 300)}`);
      log(`removing ${keyId}: ${res.status} ${text.slice(0, 120)}; retrying`);
      await sleep(1_000);
    }
  }

  // 7. The books. Busy buyers paid from tabs (docs/payments.md): each closes within
  // TAB_MAX_MS of its last draw, and what it did not spend goes back to the wallet. The
  // books are read once nothing is held.
  let debitsMinusRefunds = 0;
  let tabs = 0;
  for (const key of buyers) {
    let wallet = await getBalance({ baseUrl: base, privateKey: key });
    if (wallet.heldMicros > 0 || wallet.history.some((h) => h.kind === "hold" || h.kind === "release")) tabs++;
    for (let waited = 0; wallet.heldMicros > 0; waited += 500) {
      if (waited > 60_000) throw new Error(`a buyer's tab still holds ${wallet.heldMicros} micro-dollars a minute after the traffic`);
      await sleep(500);
      wallet = await getBalance({ baseUrl: base, privateKey: key });
    }
    debitsMinusRefunds += FUNDING_MICROS - wallet.balanceMicros;
  }
  const earningsRes = await fetch(`${base}/api/earnings`, { headers: { authorization: `Bearer ${seller.token}` } });
  if (earningsRes.status !== 200) throw new Error(`earnings: ${earningsRes.status} ${await earningsRes.text()}`);
  const sellerEarnings = ((await earningsRes.json()) as { balance: { earnedMicros: number } }).balance.earnedMicros;
  const sql = connect(databaseUrl, { max: 1 });
  let ledger: { total: number; fees: number; rows: number; requests: number };
  try {
    const [row] = await sql<{ total: string; fees: string; rows: string; requests: string }[]>`
      select coalesce(sum(amount_micros), 0)::text as total, coalesce(sum(fee_micros), 0)::text as fees,
             count(*)::text as rows, coalesce(sum(request_count), 0)::text as requests
        from public.earnings_ledger where key_id = any(${keys.map((k) => k.keyId)})`;
    ledger = { total: Number(row!.total), fees: Number(row!.fees), rows: Number(row!.rows), requests: Number(row!.requests) };
  } finally {
    await sql.end({ timeout: 2 });
  }
  const difference = debitsMinusRefunds - ledger.total;
  const sellerSideDifference = sellerEarnings + ledger.fees - ledger.total;
  const receiptDifference = tally.receiptMicros - debitsMinusRefunds;

  const lines = [
    `soak: ${trafficSeconds.toFixed(1)} s, ${BUYERS} buyers x ${CONCURRENCY}, ${KEYS} keys, seed ${args.seed}`,
    `faults injected:              ${FAULTS.map((f) => `${f} ${faults[f]}`).join(", ")}`,
    `webhook deliveries:           ${receiver.ok} accepted, ${receiver.failed} refused by the failing receiver`,
    `requests:                     ${tally.requests} (${tally.streamed} streamed): ${tally.served} served, ${tally.cut} paid but cut midway, ${tally.refunded} refunded, ${Object.entries(tally.unpaid).map(([s, n]) => `${n} x ${s}`).join(", ") || "0"} without payment, ${tally.networkErrors} network errors`,
    `refunds:                      ${tally.refunded} (${tally.refundedMicros} micro-dollars)`,
    `buyers seen paying from tabs: ${tabs} of ${buyers.length} (credit held, or a hold or release among their last 50 entries; every tab closed before the books were read)`,
    `requests sent with a pass:    ${tally.sent.pass} (signed: ${tally.sent.signed})`,
    `buyer debits minus refunds:   ${debitsMinusRefunds} micro-dollars (faucet credit minus wallet balances)`,
    `receipts kept (not refunded): ${tally.receiptMicros} micro-dollars (what buyers were told they paid)`,
    `seller earnings:              ${sellerEarnings} micro-dollars (GET /api/earnings)`,
    `fees:                         ${ledger.fees} micro-dollars`,
    `seller earnings plus fees:    ${sellerEarnings + ledger.fees} micro-dollars`,
    `ledger total:                 ${ledger.total} micro-dollars in ${ledger.rows} rows for ${ledger.requests} requests`,
    `difference:                   ${difference} micro-dollars (buyer debits minus refunds, minus the ledger total)`,
  ];
  // A request the client gave up on (network error) may have been paid and served: its
  // receipt never arrived. Receipts can then fall short of the debits by at most those.
  const maxUnseen = tally.networkErrors * Math.max(...keys.map((k) => k.price));
  const receiptsOk = receiptDifference <= 0 && -receiptDifference <= maxUnseen;
  const ok = difference === 0 && sellerSideDifference === 0 && receiptsOk;
  if (unhandled.count > 0) lines.push(`client-side rejections nobody awaited: ${unhandled.count} (${unhandled.samples.join(" | ")})`);
  if (tally.networkErrorSamples.length > 0) lines.push(`network errors (first ${tally.networkErrorSamples.length}): ${tally.networkErrorSamples.join(" | ")}`);
  if (sellerSideDifference !== 0) lines.push(`!! seller earnings plus fees differ from the ledger total by ${sellerSideDifference}`);
  if (receiptDifference !== 0) {
    lines.push(`${receiptsOk ? "note" : "!!"}: receipts kept differ from buyer debits minus refunds by ${receiptDifference} micro-dollars (${tally.networkErrors} requests ended in a network error before their receipt was read)`);
  }
  lines.push(ok ? "books balance: OK" : "books do NOT balance: FAILED");
  process.stdout.write(`${lines.join("\n")}\n`);
  process.stdout.write(`${JSON.stringify({
    soak: ok ? "ok" : "failed", seconds: Number(trafficSeconds.toFixed(1)), seed: Number(args.seed), buyers: BUYERS, keys: KEYS,
    requests: tally.requests, streamed: tally.streamed, served: tally.served, cut: tally.cut, refunds: tally.refunded, refunded_micros: tally.refundedMicros,
    unpaid: tally.unpaid, network_errors: tally.networkErrors, unhandled_client_rejections: unhandled.count, faults, webhook_ok: receiver.ok, webhook_failed: receiver.failed,
    buyer_debits_minus_refunds_micros: debitsMinusRefunds, receipts_micros: tally.receiptMicros, seller_earnings_micros: sellerEarnings,
    fees_micros: ledger.fees, ledger_total_micros: ledger.total, ledger_rows: ledger.rows, ledger_requests: ledger.requests,
    difference_micros: difference, buyers_with_tabs: tabs, sent_with_pass: tally.sent.pass, sent_signed: tally.sent.signed,
  })}\n`);

  await receiver.close();
  await gate.close();
  await shutdown();
  process.exit(ok ? 0 : 1);
}

async function signIn(base: string): Promise<{ id: string; token: string }> {
  const res = await fetch(`${base}/auth/dev/sign-in`, {
    method: "POST",
    headers: { "content-type": "application/json", "cn2-csrf": "1" },
    body: JSON.stringify({ email: `soak-${randomHex(6)}@example.test` }),
    signal: AbortSignal.timeout(20_000),
  });
  if (res.status !== 200) throw new Error(`dev sign-in: ${res.status} ${await res.text()}`);
  const { token, seller } = (await res.json()) as { token: string; seller: { id: string } };
  return { id: seller.id, token };
}

/** Key creation publishes the pool after POOL_DEBOUNCE_MS: wait (bounded) until it lists them all. */
async function waitForPool(base: string, opsToken: string, expected: number) {
  for (let i = 0; i < 100; i++) {
    const res = await fetch(`${base}/ops/pools/openai/us/standard`, { headers: { authorization: `Bearer ${opsToken}` } });
    const members = ((await res.json()) as { pool?: { members?: unknown[] } }).pool?.members?.length ?? 0;
    if (members === expected) return;
    await sleep(100);
  }
  throw new Error(`the openai/us/standard pool never listed the ${expected} keys`);
}

main().catch(async (err) => {
  log(`soak failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  await shutdown();
  process.exit(1);
});
