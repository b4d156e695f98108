import { describe, expect, it } from "vitest";
import { addKey, chat, call } from "./helpers.ts";

describe("smoke", () => {
  it("serves healthz and a proxied chat completion", async () => {
    expect((await call("/healthz")).status).toBe(200);
    await addKey();
    const res = await chat();
    const text = await res.text();
    expect(res.status, text).toBe(200);
    expect(JSON.parse(text).object).toBe("chat.completion");
  });
});
