// A whole marketplace for the Node suites that drive cn2 from outside, as a buyer or a
// seller would: the demo upstream, a migrated in-memory Postgres (embedded PGlite), and the
// deployable Worker bundle in workerd (bench/workerd.ts `startWorker`, as the bench and the
// soak run it), in development mode with the dev sign-in and the dev faucet. Sellers sign
// in and list keys through the seller API (the seller CLI's own addKey); nothing but HTTP
// reaches the Worker.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startWorker, type RunningWorker } from "../../bench/workerd.ts";
import { generateDevSigningKey } from "../../core/dev-signing-key.ts";
import { generateVaultKey } from "../../core/vault.ts";
import type { KeyConfigInput, KeyView } from "../../schema/wire.ts";
import { apiClient } from "../../tools/api-client.ts";
import { connect, migrate, startEmbeddedDb, type EmbeddedDb } from "../../tools/database.ts";
import { startDemoUpstream, upstreamBaseUrls, type DemoUpstream } from "../../tools/demo-upstream.ts";
import { addKey } from "../../tools/seller-cli.ts";

export interface Stack {
  /** The Worker's own URL (a direct socket on workerd). */
  url: string;
  upstream: DemoUpstream;
  opsToken: string;
  /** A seller through the dev sign-in (a fresh account). */
  signIn(label?: string): Promise<{ id: string; token: string }>;
  /** A key listed by `seller` through POST /api/keys, sealed and with a key id derived for it, as the CLI does. */
  addKey(seller: { id: string; token: string }, credential: string, config: KeyConfigInput): Promise<KeyView>;
  close(): Promise<void>;
}

export async function startStack(opts: { bindings?: Record<string, string> } = {}): Promise<Stack> {
  const dir = await mkdtemp(join(tmpdir(), "cn2-node-stack-"));
  let upstream: DemoUpstream | undefined;
  let db: EmbeddedDb | undefined;
  let worker: RunningWorker | undefined;
  const close = async () => {
    await worker?.dispose().catch(() => {});
    await db?.close().catch(() => {});
    await upstream?.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  try {
    upstream = await startDemoUpstream({ port: 0 });
    db = await startEmbeddedDb();
    const sql = connect(db.url, { max: 1 });
    await migrate(sql).finally(() => sql.end());
    const vault = await generateVaultKey("node-stack-1");
    const devKey = await generateDevSigningKey("node-stack");
    const opsToken = `node-${crypto.randomUUID()}`;
    worker = await startWorker({
      storageDir: join(dir, "state"),
      databaseUrl: db.url,
      bindings: {
        // Development, opted into (core/environment.ts): dev sign-in, faucet, demo upstream.
        CN2_DEV: "1",
        OPS_TOKEN: opsToken,
        VAULT_PRIVATE_KEYS: JSON.stringify([vault.privateKey]),
        MPP_SECRET_KEY: Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex"),
        DEV_FAUCET: "1",
        AUTH_DEV_SIGNING_KEY: JSON.stringify(devKey.privateJwk),
        AUTH_JWKS: JSON.stringify(devKey.jwks),
        UPSTREAM_BASE_URLS: JSON.stringify(upstreamBaseUrls(upstream.url)),
        POOL_CACHE_MS: "0",
        POOL_DEBOUNCE_MS: "0",
        ...opts.bindings,
      },
    });
    const url = worker.url;
    let n = 0;
    return {
      url,
      upstream,
      opsToken,
      async signIn(label = "seller") {
        const res = await fetch(`${url}/auth/dev/sign-in`, {
          method: "POST",
          headers: { "content-type": "application/json", "cn2-csrf": "1" },
          body: JSON.stringify({ email: `${label}-${Date.now().toString(36)}${(n++).toString(36)}@example.test` }),
        });
        if (res.status !== 200) throw new Error(`dev sign-in: ${res.status} ${await res.text()}`);
        const { token, seller } = (await res.json()) as { token: string; seller: { id: string } };
        return { id: seller.id, token };
      },
      addKey: (seller, credential, config) => addKey(apiClient({ baseUrl: url, sellerToken: seller.token }), { credential, sellerId: seller.id, config }),
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
