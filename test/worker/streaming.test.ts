// P1: answers stream through as the upstream sends them, cuts reach the buyer as errors,
// and a buyer who goes away stops the upstream call.
import { beforeEach, describe, expect, it } from "vitest";
import { addKey, inspect, chat, demo, demoLog, removeAllKeys, resetDemo } from "./helpers.ts";

const decoder = new TextDecoder();

async function waitFor<T>(fn: () => Promise<T | undefined>, what: string): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const value = await fn();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("streaming", () => {
  beforeEach(async () => {
    await resetDemo();
    await removeAllKeys();
  });

  it("the first SSE chunk reaches the buyer before the upstream has finished", async () => {
    const { credential } = await addKey();
    await demo("/__demo/behaviour", { credential, hold: true });
    const res = await chat({ stream: true });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    expect(decoder.decode(first.value)).toContain("data: ");
    // The upstream is still holding the rest of its answer: nothing was buffered.
    const entry = (await demoLog()).find((e) => e.credential === credential);
    expect(entry?.finished).toBe(false);
    await demo("/__demo/release", { credential });
    let rest = "";
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += decoder.decode(chunk.value);
    expect(rest).toContain("data: [DONE]");
  });

  it("a mid-stream cut reaches the buyer as an error, not a clean end", async () => {
    const { credential, keyId } = await addKey();
    await demo("/__demo/behaviour", { credential, cutAfterChunks: 2 });
    const res = await chat({ stream: true });
    expect(res.status).toBe(200);
    await expect(res.text()).rejects.toThrow();
    const { inspect } = await import("./helpers.ts");
    const key = await waitFor(async () => {
      const k = await inspect(keyId);
      return k.events.some((e) => e.kind === "request.stream_cut") ? k : undefined;
    }, "stream_cut event");
    expect(key.events.map((e) => e.kind)).toContain("request.stream_cut");
  });

  it("a buyer who disconnects before the upstream answers aborts the upstream call", async () => {
    const { credential, keyId } = await addKey();
    await demo("/__demo/behaviour", { credential, delayMs: 1500 });
    const controller = new AbortController();
    const pending = chat({ signal: controller.signal }).catch((err: unknown) => err);
    await waitFor(async () => (await demoLog()).find((e) => e.credential === credential), "upstream call");
    controller.abort();
    await pending;
    const entry = await waitFor(async () => (await demoLog()).find((e) => e.credential === credential && e.aborted), "upstream abort");
    expect(entry.finished).toBe(false);
    // The key is free again and the request is not counted as the key's failure.
    await waitFor(async () => ((await inspect(keyId)).inFlight === 0 ? true : undefined), "in-flight released");
    expect((await inspect(keyId)).health.state).toBe("healthy");
  });

  it("a buyer who disconnects aborts the upstream call", async () => {
    const { credential } = await addKey();
    await demo("/__demo/behaviour", { credential, hold: true });
    const controller = new AbortController();
    const res = await chat({ stream: true, signal: controller.signal });
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    await reader.cancel().catch(() => {});
    const entry = await waitFor(async () => (await demoLog()).find((e) => e.credential === credential && e.aborted), "upstream abort");
    expect(entry.finished).toBe(false);
  });
});
