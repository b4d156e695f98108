// A real local Tempo node for the payout tests: anvil from the @foundry-rs/anvil npm
// package, `--network tempo` (TIP-20 precompiles; test stablecoins with 6 decimals funded
// on the dev accounts), chain id 1337 to match viem's `tempoLocalnet`. The binary comes
// in the platform package npm installs next to @foundry-rs/anvil (an optional dependency),
// so no download happens at run time; we start it directly rather than through the
// package's node wrapper so stopping it stops the node itself.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import path from "node:path";

/** anvil's first dev account (well known, test only): the marketplace treasury in tests. */
export const ANVIL_TREASURY_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/** AlphaUSD, a TIP-20 test stablecoin (6 decimals) anvil's tempo network funds. */
export const ANVIL_USD_TOKEN = "0x20c0000000000000000000000000000000000001";

export function anvilBinary(): string {
  const arch = process.arch === "x64" ? "amd64" : process.arch;
  const pkg = `@foundry-rs/anvil-${process.platform}-${arch}`;
  const dir = path.dirname(createRequire(import.meta.url).resolve(`${pkg}/package.json`));
  const bin = path.join(dir, "bin", process.platform === "win32" ? "anvil.exe" : "anvil");
  if (!existsSync(bin)) throw new Error(`anvil binary missing at ${bin} (npm install @foundry-rs/anvil)`);
  return bin;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startAnvil(): Promise<{ url: string; close(): Promise<void> }> {
  const port = await freePort();
  const child: ChildProcess = spawn(anvilBinary(), ["--network", "tempo", "--chain-id", "1337", "--host", "127.0.0.1", "--port", String(port), "--silent"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()).length > 4000 && (stderr = stderr.slice(-4000)));
  child.stdout!.resume();
  const url = `http://127.0.0.1:${port}`;
  // Ready when it answers JSON-RPC (bounded by attempts, not by a clock).
  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null) throw new Error(`anvil exited (${child.exitCode}): ${stderr}`);
    try {
      const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }) });
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (attempt > 300) {
      child.kill("SIGKILL");
      throw new Error(`anvil did not answer on ${url}: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    }),
  };
}
