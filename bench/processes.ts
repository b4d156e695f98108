// Child processes of the bench (demo upstream, Portkey, wrangler's bundler) and the
// cleanup that must run however the bench ends: normal exit, a thrown error, Ctrl-C.
// Only processes this bench spawned are signalled, each by its own pid.
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";

export const HOST = "127.0.0.1";

const children = new Set<ChildProcess>();
const cleanups: (() => void)[] = [];
const asyncCleanups: (() => Promise<void>)[] = [];

export const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/** Kill every child still alive (synchronous: safe inside an "exit" handler). */
function killChildren(signal: NodeJS.Signals) {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(child.pid, signal);
      } catch {
        // already gone
      }
    }
  }
}

let installed = false;
/** Install exit/signal handlers once; call before spawning anything. */
export function installCleanup() {
  if (installed) return;
  installed = true;
  process.on("exit", () => {
    killChildren("SIGKILL");
    for (const fn of cleanups.splice(0)) {
      try {
        fn();
      } catch {
        // best effort on the way out
      }
    }
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      log(`${signal}: stopping children`);
      void shutdown().finally(() => process.exit(130));
    });
  }
}

/** Graceful shutdown: async cleanups (Miniflare dispose), then SIGTERM the children. */
export async function shutdown() {
  for (const fn of asyncCleanups.splice(0).reverse()) {
    await Promise.race([fn().catch(() => {}), new Promise((r) => setTimeout(r, 5_000))]);
  }
  killChildren("SIGTERM");
  const deadline = Date.now() + 3_000;
  while ([...children].some((c) => c.exitCode === null && c.signalCode === null) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  killChildren("SIGKILL");
}

export function onExitSync(fn: () => void) {
  cleanups.push(fn);
}
export function onShutdown(fn: () => Promise<void>) {
  asyncCleanups.push(fn);
}
export function removeDirOnExit(dir: string) {
  onExitSync(() => rmSync(dir, { recursive: true, force: true }));
}

export interface Child {
  proc: ChildProcess;
  /** Resolve with the first stdout/stderr line matching `re`, or reject on timeout/exit. */
  waitForLine(re: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** The last lines of output, for error messages. */
  tail(): string;
}

/** Spawn a Node 22 child (this process's own node binary); output is kept, not echoed. */
export function spawnNode(name: string, args: string[], env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, args, {
    cwd: process.cwd(),
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(proc);
  proc.once("exit", () => children.delete(proc));
  const lines: string[] = [];
  const waiters = new Set<(line: string) => void>();
  const onData = (buf: Buffer) => {
    for (const line of buf.toString("utf8").split(/\r?\n|\r/)) {
      if (!line.trim()) continue;
      lines.push(line);
      if (lines.length > 50) lines.shift();
      for (const w of waiters) w(line);
    }
  };
  proc.stdout?.on("data", onData);
  proc.stderr?.on("data", onData);
  return {
    proc,
    tail: () => lines.slice(-15).join("\n"),
    waitForLine(re, timeoutMs) {
      return new Promise((resolve, reject) => {
        for (const line of lines) {
          const m = re.exec(line);
          if (m) return resolve(m);
        }
        const done = () => {
          clearTimeout(timer);
          waiters.delete(waiter);
          proc.off("exit", onExit);
        };
        const waiter = (line: string) => {
          const m = re.exec(line);
          if (m) {
            done();
            resolve(m);
          }
        };
        const onExit = (code: number | null) => {
          done();
          reject(new Error(`${name} exited (code ${code}) before it was ready:\n${lines.slice(-15).join("\n")}`));
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${name} not ready within ${timeoutMs} ms:\n${lines.slice(-15).join("\n")}`));
        }, timeoutMs);
        waiters.add(waiter);
        proc.once("exit", onExit);
      });
    },
  };
}

/** Run a Node 22 child to completion (bounded), resolving with its output. */
export async function runNode(name: string, args: string[], env: Record<string, string>, timeoutMs: number): Promise<string> {
  const child = spawnNode(name, args, env);
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      child.proc.kill("SIGKILL");
    }, timeoutMs);
    child.proc.once("exit", (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  if (code !== 0) throw new Error(`${name} failed (exit ${code}):\n${child.tail()}`);
  return child.tail();
}

/** A free loopback port (bind :0, read it, release it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, HOST, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Wait until something accepts TCP connections on HOST:port. */
export async function waitForPort(port: number, timeoutMs: number, child?: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && child.proc.exitCode !== null) throw new Error(`child exited before listening on ${port}:\n${child.tail()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const sock = createConnection({ host: HOST, port });
      sock.once("connect", () => {
        sock.destroy();
        resolve(true);
      });
      sock.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listening on ${HOST}:${port} after ${timeoutMs} ms${child ? `:\n${child.tail()}` : ""}`);
}

/**
 * CPU time (user + system, ms) used so far by this process's descendants whose command is
 * `comm` (Linux /proc; null elsewhere). The paid rows use it for workerd: Miniflare starts
 * workerd as a child of this process and does not say its pid.
 */
export function descendantCpuMs(comm: string): number | null {
  let entries: string[];
  try {
    entries = readdirSync("/proc").filter((e) => /^\d+$/.test(e));
  } catch {
    return null;
  }
  const stats = new Map<number, { parent: number; comm: string; cpuMs: number }>();
  const tick = 1000 / 100; // USER_HZ is 100 on Linux
  for (const e of entries) {
    try {
      const raw = readFileSync(`/proc/${e}/stat`, "utf8");
      const close = raw.lastIndexOf(")");
      const fields = raw.slice(close + 2).split(" ");
      stats.set(Number(e), { comm: raw.slice(raw.indexOf("(") + 1, close), parent: Number(fields[1]), cpuMs: (Number(fields[11]) + Number(fields[12])) * tick });
    } catch {
      // gone meanwhile
    }
  }
  let total = 0;
  for (const [pid, st] of stats) {
    if (st.comm !== comm) continue;
    for (let up = st.parent, hops = 0; up > 1 && hops < 16; up = stats.get(up)?.parent ?? 0, hops++) {
      if (up === process.pid) {
        total += stats.get(pid)!.cpuMs;
        break;
      }
    }
  }
  return total;
}
