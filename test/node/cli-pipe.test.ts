// The CLIs end quietly when their reader stops early (`npm run seller -- help | head -1`):
// a closed pipe is the reader's choice, not an error worth a stack trace.
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");

function withClosedStdout(script: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [resolve(ROOT, script), ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    // The reader goes away before the CLI writes a byte.
    child.stdout.destroy();
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk));
    child.on("error", fail);
    child.on("close", (code) => done({ code, stderr }));
  });
}

for (const script of ["tools/seller-cli.ts", "tools/inspect.ts", "tools/buyer-cli.ts"]) {
  it(`${script}: a closed stdout ends the CLI quietly, exit 0`, async () => {
    const r = await withClosedStdout(script, ["help"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    // A bound on a hang, not a timing: loading the buyer CLI's payment libraries takes seconds on a busy machine.
  }, 60_000);
}
