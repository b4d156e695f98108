// P1: the official SDKs work by changing only the base URL (here unpaid, with the proxy
// token; test/node/e2e-openai.test.ts pays).
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";
import { beforeEach, describe, expect, it } from "vitest";
import { addKey, PROXY, removeAllKeys, resetDemo, worker } from "./helpers.ts";

const viaWorker: typeof fetch = (input, init) => worker().fetch(new Request(input, init));

describe("official SDKs", () => {
  beforeEach(async () => {
    await resetDemo();
    await removeAllKeys();
  });

  it("openai: chat completion, streamed and not", async () => {
    await addKey();
    const client = new OpenAI({ baseURL: "https://cn2.test/openai/v1", apiKey: "unused-by-cn2", defaultHeaders: { "cn2-proxy-token": PROXY }, fetch: viaWorker, maxRetries: 0 });
    const done = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] });
    expect(done.choices[0]?.message.content).toBeTruthy();
    const stream = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    expect(text.length).toBeGreaterThan(5);
  });

  it("anthropic: messages, streamed and not", async () => {
    await addKey({ config: { provider: "anthropic" } });
    const client = new Anthropic({ baseURL: "https://cn2.test/anthropic", apiKey: "unused-by-cn2", defaultHeaders: { "cn2-proxy-token": PROXY }, fetch: viaWorker, maxRetries: 0 });
    const msg = await client.messages.create({ model: "claude-opus-4-8", max_tokens: 64, messages: [{ role: "user", content: "Hi" }] });
    expect(msg.content[0]?.type).toBe("text");
    const stream = client.messages.stream({ model: "claude-opus-4-8", max_tokens: 64, messages: [{ role: "user", content: "Hi" }] });
    const final = await stream.finalText();
    expect(final.length).toBeGreaterThan(5);
  });
});
