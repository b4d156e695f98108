// The demo upstream is what the Worker's tests, `npm start` and the benchmarks talk to, so
// its wire formats, credential checks and injected failures are tested here over real HTTP.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { startDemoUpstream, upstreamBaseUrls, type DemoLogEntry, type DemoUpstream } from "../../tools/demo-upstream.ts";

let upstream: DemoUpstream;
let base: Record<"openai" | "anthropic" | "google" | "groq", string>;

beforeAll(async () => {
  upstream = await startDemoUpstream({ port: 0 });
  base = upstreamBaseUrls(upstream.url);
});
afterAll(() => upstream.close());
afterEach(() => fetch(`${upstream.url}/__demo/behaviour`, { method: "DELETE" }));

const REPLY = "Hello from the cn2 demo upstream, a deterministic reply.";
const ANTHROPIC_VERSION = { "anthropic-version": "2023-06-01" };

async function json<T = any>(res: Response): Promise<T> {
  return (await res.json()) as T;
}

/** Server-sent events as (event, data) pairs; `data` parsed as JSON unless it is [DONE]. */
function parseSse(text: string): { event: string | null; data: any }[] {
  return text
    .split(/\r?\n\r?\n/)
    .filter((block) => block.trim() !== "")
    .map((block) => {
      let event: string | null = null;
      const data: string[] = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      const joined = data.join("\n");
      return { event, data: joined === "[DONE]" ? joined : JSON.parse(joined) };
    });
}

function openaiChat(credential: string | null, body: object, extraHeaders: Record<string, string> = {}, prefix = base.openai) {
  return fetch(`${prefix}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(credential ? { authorization: `Bearer ${credential}` } : {}), ...extraHeaders },
    body: JSON.stringify(body),
  });
}

const setBehaviour = async (behaviour: Record<string, unknown>) => {
  const res = await fetch(`${upstream.url}/__demo/behaviour`, { method: "POST", body: JSON.stringify(behaviour) });
  expect(res.status).toBe(200);
};

async function logFor(credential: string): Promise<DemoLogEntry[]> {
  const { requests } = await json<{ requests: DemoLogEntry[] }>(await fetch(`${upstream.url}/__demo/log`));
  return requests.filter((r) => r.credential === credential);
}

async function waitFor(check: () => Promise<boolean>, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("upstreamBaseUrls", () => {
  it("maps each provider to its prefix", () => {
    expect(upstreamBaseUrls("http://127.0.0.1:1")).toEqual({
      openai: "http://127.0.0.1:1/openai",
      anthropic: "http://127.0.0.1:1/anthropic",
      google: "http://127.0.0.1:1/google",
      groq: "http://127.0.0.1:1/groq/openai",
    });
  });
});

describe("OpenAI format (and Groq, which speaks it)", () => {
  it("answers a chat completion echoing the model", async () => {
    const res = await openaiChat("sk-demo-a", { model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toMatch(/^req_/);
    const body = await json(res);
    expect(body).toMatchObject({
      object: "chat.completion",
      model: "gpt-4o-mini",
      choices: [{ index: 0, message: { role: "assistant", content: REPLY }, finish_reason: "stop" }],
    });
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens + body.usage.completion_tokens);
  });

  it("streams chunks ending with [DONE]", async () => {
    const res = await openaiChat("sk-demo-a", { model: "gpt-4o-mini", messages: [], stream: true, stream_options: { include_usage: true } });
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = parseSse(await res.text());
    expect(events.at(-1)!.data).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((e) => e.data);
    expect(chunks.every((c) => c.object === "chat.completion.chunk" && c.model === "gpt-4o-mini")).toBe(true);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe(REPLY);
    expect(chunks.find((c) => c.choices[0]?.finish_reason === "stop")).toBeDefined();
    expect(chunks.at(-1).usage.completion_tokens).toBeGreaterThan(0);
  });

  it("serves groq under /groq/openai", async () => {
    const res = await openaiChat("sk-demo-g", { model: "llama-3.3-70b-versatile", messages: [] }, {}, base.groq);
    expect(res.status).toBe(200);
    expect((await json(res)).model).toBe("llama-3.3-70b-versatile");
    const models = await json(await fetch(`${base.groq}/v1/models`, { headers: { authorization: "Bearer sk-demo-g" } }));
    expect(models.object).toBe("list");
  });

  it("lists models and embeds (float and base64)", async () => {
    const auth = { authorization: "Bearer sk-demo-a", "content-type": "application/json" };
    const models = await json(await fetch(`${base.openai}/v1/models`, { headers: auth }));
    expect(models.data.length).toBeGreaterThan(0);
    expect(models.data[0]).toMatchObject({ object: "model" });

    const floats = await json(await fetch(`${base.openai}/v1/embeddings`, { method: "POST", headers: auth, body: JSON.stringify({ model: "text-embedding-3-small", input: ["a", "b"] }) }));
    expect(floats.data).toHaveLength(2);
    const vector: number[] = floats.data[0].embedding;
    expect(vector.length).toBeGreaterThan(0);

    const b64 = await json(await fetch(`${base.openai}/v1/embeddings`, { method: "POST", headers: auth, body: JSON.stringify({ model: "m", input: "a", encoding_format: "base64" }) }));
    const decoded = Array.from(new Float32Array(new Uint8Array(Buffer.from(b64.data[0].embedding, "base64")).buffer));
    decoded.forEach((x, i) => expect(x).toBeCloseTo(vector[i]!, 5));
  });
});

describe("Anthropic format", () => {
  const post = (body: object, credential = "sk-demo-b") =>
    fetch(`${base.anthropic}/v1/messages`, { method: "POST", headers: { "x-api-key": credential, ...ANTHROPIC_VERSION }, body: JSON.stringify(body) });

  it("answers a message", async () => {
    const res = await post({ model: "claude-sonnet-4-5", max_tokens: 10, messages: [] });
    expect(res.status).toBe(200);
    expect(res.headers.get("request-id")).toMatch(/^req_/);
    expect(await json(res)).toMatchObject({
      type: "message",
      role: "assistant",
      model: "claude-sonnet-4-5",
      content: [{ type: "text", text: REPLY }],
      stop_reason: "end_turn",
      usage: { output_tokens: 8 },
    });
  });

  it("streams the event sequence", async () => {
    const res = await post({ model: "claude-sonnet-4-5", max_tokens: 10, messages: [], stream: true });
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = parseSse(await res.text());
    const names = events.map((e) => e.event);
    expect(names[0]).toBe("message_start");
    expect(names[1]).toBe("content_block_start");
    expect(names.slice(-3)).toEqual(["content_block_stop", "message_delta", "message_stop"]);
    expect(events.every((e) => e.data.type === e.event)).toBe(true);
    const deltas = events.filter((e) => e.event === "content_block_delta");
    expect(deltas.length).toBe(8);
    expect(deltas.map((e) => e.data.delta.text).join("")).toBe(REPLY);
  });

  it("requires anthropic-version, as the real API does", async () => {
    const res = await fetch(`${base.anthropic}/v1/messages`, { method: "POST", headers: { "x-api-key": "sk-demo-b" }, body: "{}" });
    expect(res.status).toBe(400);
    expect((await json(res)).error.type).toBe("invalid_request_error");
  });
});

describe("Gemini format", () => {
  const post = (action: string, credential = "sk-demo-c") =>
    fetch(`${base.google}/v1beta/models/gemini-2.0-flash:${action}`, {
      method: "POST",
      headers: { "x-goog-api-key": credential, "content-type": "application/json" },
      body: JSON.stringify({ contents: [{ parts: [{ text: "hi" }] }] }),
    });

  it("answers generateContent", async () => {
    const body = await json(await post("generateContent"));
    expect(body.candidates[0].content.parts[0].text).toBe(REPLY);
    expect(body.candidates[0].finishReason).toBe("STOP");
    expect(body.usageMetadata.totalTokenCount).toBeGreaterThan(0);
    expect(body.modelVersion).toBe("gemini-2.0-flash");
  });

  it("streams with alt=sse", async () => {
    const res = await post("streamGenerateContent?alt=sse");
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = parseSse(await res.text());
    expect(events.length).toBe(8);
    expect(events.map((e) => e.data.candidates[0].content.parts[0].text).join("")).toBe(REPLY);
    expect(events.at(-1)!.data.candidates[0].finishReason).toBe("STOP");
  });

  it("streams a JSON array without alt=sse", async () => {
    const chunks = await json<any[]>(await post("streamGenerateContent"));
    expect(chunks.map((c) => c.candidates[0].content.parts[0].text).join("")).toBe(REPLY);
  });
});

describe("credentials", () => {
  it("refuses a missing or non-seller credential with 401 in each provider's format", async () => {
    for (const credential of [null, "sk-live-real"]) {
      const openai = await openaiChat(credential, { model: "m" });
      expect(openai.status).toBe(401);
      expect((await json(openai)).error).toMatchObject({ type: "invalid_request_error", code: "invalid_api_key" });

      const groq = await openaiChat(credential, { model: "m" }, {}, base.groq);
      expect(groq.status).toBe(401);
      expect((await json(groq)).error.code).toBe("invalid_api_key");

      const anthropic = await fetch(`${base.anthropic}/v1/messages`, {
        method: "POST",
        headers: { ...ANTHROPIC_VERSION, ...(credential ? { "x-api-key": credential } : {}) },
        body: "{}",
      });
      expect(anthropic.status).toBe(401);
      expect(await json(anthropic)).toMatchObject({ type: "error", error: { type: "authentication_error" } });

      const google = await fetch(`${base.google}/v1beta/models/gemini-2.0-flash:generateContent`, {
        method: "POST",
        headers: credential ? { "x-goog-api-key": credential } : {},
        body: "{}",
      });
      expect(google.status).toBe(401);
      expect((await json(google)).error).toMatchObject({ code: 401, status: "UNAUTHENTICATED" });
    }
  });

  it("treats a bearer credential under the wrong scheme as missing", async () => {
    const res = await fetch(`${base.openai}/v1/models`, { headers: { authorization: "Basic sk-demo-a" } });
    expect(res.status).toBe(401);
  });

  it("rejects credentials in headers the provider does not use", async () => {
    const cases: [string, Record<string, string>, string][] = [
      [`${base.anthropic}/v1/messages`, { "x-api-key": "sk-demo-b", ...ANTHROPIC_VERSION, authorization: "Bearer buyer" }, "authorization"],
      [`${base.openai}/v1/chat/completions`, { authorization: "Bearer sk-demo-a", "x-api-key": "buyer" }, "x-api-key"],
      [`${base.google}/v1beta/models/g:generateContent`, { "x-goog-api-key": "sk-demo-c", "cn2-proxy-token": "t" }, "cn2-proxy-token"],
      [`${base.groq}/v1/chat/completions`, { authorization: "Bearer sk-demo-a", "x-goog-api-key": "buyer" }, "x-goog-api-key"],
      // The buyer's payment credential must be replaced, never forwarded.
      [`${base.openai}/v1/chat/completions`, { authorization: "Payment eyJjaGFsbGVuZ2UiOnt9fQ" }, "authorization"],
    ];
    for (const [url, headers, leaked] of cases) {
      const res = await fetch(url, { method: "POST", headers, body: "{}" });
      expect(res.status).toBe(400);
      expect(await json(res)).toEqual({ error: "leaked_header", header: leaked });
    }
  });

  it("rejects a Gemini key in the query string", async () => {
    const res = await fetch(`${base.google}/v1beta/models/g:generateContent?key=buyer`, { method: "POST", headers: { "x-goog-api-key": "sk-demo-c" }, body: "{}" });
    expect(res.status).toBe(400);
    expect(await json(res)).toEqual({ error: "leaked_query", param: "key" });
  });
});

describe("errors in provider format", () => {
  it("answers 404 for unknown paths", async () => {
    const openai = await fetch(`${base.openai}/v1/nope`, { headers: { authorization: "Bearer sk-demo-a" } });
    expect(openai.status).toBe(404);
    expect((await json(openai)).error.type).toBe("invalid_request_error");

    const anthropic = await fetch(`${base.anthropic}/v1/nope`, { headers: { "x-api-key": "sk-demo-b", ...ANTHROPIC_VERSION } });
    expect(anthropic.status).toBe(404);
    expect(await json(anthropic)).toMatchObject({ type: "error", error: { type: "not_found_error" } });

    const google = await fetch(`${base.google}/v1beta/models/g:doesNotExist`, { method: "POST", headers: { "x-goog-api-key": "sk-demo-c" }, body: "{}" });
    expect(google.status).toBe(404);
    expect((await json(google)).error).toMatchObject({ code: 404, status: "NOT_FOUND" });

    const outside = await fetch(`${upstream.url}/mistral/v1/chat`);
    expect(outside.status).toBe(404);
  });

  it("answers 400 for a body that is not JSON", async () => {
    const openai = await fetch(`${base.openai}/v1/chat/completions`, { method: "POST", headers: { authorization: "Bearer sk-demo-a" }, body: "{not json" });
    expect(openai.status).toBe(400);
    expect((await json(openai)).error.type).toBe("invalid_request_error");

    const anthropic = await fetch(`${base.anthropic}/v1/messages`, { method: "POST", headers: { "x-api-key": "sk-demo-b", ...ANTHROPIC_VERSION }, body: "{not json" });
    expect(anthropic.status).toBe(400);
    expect(await json(anthropic)).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });

    const google = await fetch(`${base.google}/v1beta/models/g:generateContent`, { method: "POST", headers: { "x-goog-api-key": "sk-demo-c" }, body: "{not json" });
    expect(google.status).toBe(400);
    expect((await json(google)).error.status).toBe("INVALID_ARGUMENT");
  });
});

describe("injected behaviour", () => {
  it("answers an injected status with Retry-After in provider format", async () => {
    await setBehaviour({ credential: "sk-demo-limited", status: 429, retryAfter: 7 });
    const openai = await openaiChat("sk-demo-limited", { model: "m", messages: [] });
    expect(openai.status).toBe(429);
    expect(openai.headers.get("retry-after")).toBe("7");
    expect((await json(openai)).error.code).toBe("rate_limit_exceeded");

    const anthropic = await fetch(`${base.anthropic}/v1/messages`, { method: "POST", headers: { "x-api-key": "sk-demo-limited", ...ANTHROPIC_VERSION }, body: "{}" });
    expect(anthropic.status).toBe(429);
    expect((await json(anthropic)).error.type).toBe("rate_limit_error");

    // Other credentials are unaffected.
    expect((await openaiChat("sk-demo-fine", { model: "m", messages: [] })).status).toBe(200);
  });

  it("applies to the next `times` requests only", async () => {
    await setBehaviour({ credential: "sk-demo-flaky", status: 503, times: 2 });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await openaiChat("sk-demo-flaky", { model: "m", messages: [] });
      statuses.push(res.status);
      await res.arrayBuffer();
    }
    expect(statuses).toEqual([503, 503, 200]);
  });

  it("delays headers and paces chunks", async () => {
    await setBehaviour({ credential: "sk-demo-slow", delayMs: 200, chunkDelayMs: 15 });
    let headersArrived = false;
    const answer = openaiChat("sk-demo-slow", { model: "m", messages: [], stream: true }).then((res) => {
      headersArrived = true;
      return res;
    });
    // The delay: the upstream has read the whole body (bodyBytes) and not answered yet
    // (status 0), and no headers reached the client. Without a delay, reading the body and
    // writing the headers happen in one turn of the upstream's event loop: no log request
    // could ever see this state.
    let waiting: DemoLogEntry | undefined;
    await waitFor(async () => {
      [waiting] = await logFor("sk-demo-slow");
      return waiting !== undefined && waiting.bodyBytes > 0;
    });
    expect(waiting).toMatchObject({ status: 0, streamed: false, finished: false });
    expect(headersArrived).toBe(false);

    const res = await answer;
    expect(res.status).toBe(200);
    // The pacing: the first read carries one event while the upstream is still writing the
    // rest (unpaced, every event and the end are written in the same turn as the first);
    // then every event arrives in a read of its own, in order.
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    const reads: string[] = [];
    const first = await reader.read();
    reads.push(decoder.decode(first.value, { stream: true }));
    expect(parseSse(reads[0]!)).toHaveLength(1);
    const [streaming] = await logFor("sk-demo-slow");
    expect(streaming).toMatchObject({ status: 200, streamed: true, finished: false });
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) reads.push(decoder.decode(chunk.value, { stream: true }));
    const events = parseSse(reads.join(""));
    expect(events.length).toBeGreaterThan(2);
    expect(events.at(-1)!.data).toBe("[DONE]");
    expect(reads.map((text) => parseSse(text).length)).toEqual(events.map(() => 1));
    const [done] = await logFor("sk-demo-slow");
    expect(done).toMatchObject({ status: 200, streamed: true, finished: true, aborted: false });
  });

  it("cuts a stream after N chunks so the client sees an error, not a clean end", async () => {
    await setBehaviour({ credential: "sk-demo-cut", cutAfterChunks: 3 });
    const res = await openaiChat("sk-demo-cut", { model: "m", messages: [], stream: true });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let received = "";
    const readAll = async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        received += decoder.decode(value, { stream: true });
      }
    };
    await expect(readAll()).rejects.toThrow();
    expect(received.match(/^data: /gm)).toHaveLength(3);
    expect(received).not.toContain("[DONE]");
    const [entry] = await logFor("sk-demo-cut");
    expect(entry).toMatchObject({ streamed: true, finished: false, aborted: false });
  });

  it("cuts a non-streamed answer midway", async () => {
    await setBehaviour({ credential: "sk-demo-cut-json", cutAfterChunks: 1 });
    const res = await openaiChat("sk-demo-cut-json", { model: "m", messages: [] });
    await expect(res.text()).rejects.toThrow();
  });

  it("holds a stream after its first chunk until released", async () => {
    await setBehaviour({ credential: "sk-demo-held", hold: true });
    const res = await openaiChat("sk-demo-held", { model: "m", messages: [], stream: true });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toMatch(/^data: /);
    const [entry] = await logFor("sk-demo-held");
    expect(entry).toMatchObject({ streamed: true, finished: false, aborted: false });

    const release = await fetch(`${upstream.url}/__demo/release`, { method: "POST", body: JSON.stringify({ credential: "sk-demo-held" }) });
    expect(await json(release)).toEqual({ released: 1 });
    let rest = "";
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
    expect(rest.trimEnd().endsWith("data: [DONE]")).toBe(true);
    const [after] = await logFor("sk-demo-held");
    expect(after).toMatchObject({ finished: true, aborted: false, status: 200 });
  });

  it("logs a client abort", async () => {
    await setBehaviour({ credential: "sk-demo-abort", hold: true });
    const controller = new AbortController();
    const stillHeld = await openaiChat("sk-demo-abort", { model: "m", messages: [], stream: true });
    const aborting = await fetch(`${base.anthropic}/v1/messages`, {
      method: "POST",
      headers: { "x-api-key": "sk-demo-abort", ...ANTHROPIC_VERSION },
      body: JSON.stringify({ model: "claude", messages: [], stream: true }),
      signal: controller.signal,
    });
    await aborting.body!.getReader().read(); // the first chunk arrived: the upstream is now holding
    controller.abort();
    await waitFor(async () => (await logFor("sk-demo-abort")).some((e) => e.provider === "anthropic" && e.aborted));
    const entries = await logFor("sk-demo-abort");
    expect(entries.find((e) => e.provider === "anthropic")).toMatchObject({ streamed: true, finished: false, aborted: true });
    // The other held stream is still open, neither finished nor aborted.
    expect(entries.find((e) => e.provider === "openai")).toMatchObject({ finished: false, aborted: false });
    await stillHeld.body!.cancel();
  });

  it("logs each request's credential, path, query and outcome, never its body", async () => {
    await openaiChat("sk-demo-logged", { model: "m", messages: [{ role: "user", content: "secret prompt" }] }).then((r) => r.text());
    await fetch(`${base.google}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse`, { method: "POST", headers: { "x-goog-api-key": "sk-demo-logged" }, body: "{}" }).then((r) => r.text());
    const entries = await logFor("sk-demo-logged");
    expect(entries).toHaveLength(2);
    expect(entries[0]).toMatchObject({ provider: "openai", method: "POST", path: "/openai/v1/chat/completions", query: "", status: 200, streamed: false, finished: true, aborted: false });
    expect(entries[1]).toMatchObject({ provider: "google", path: "/google/v1beta/models/gemini-2.0-flash:streamGenerateContent", query: "alt=sse", streamed: true, finished: true });
    expect(entries[0]!.startedAt).toBeLessThanOrEqual(Date.now());
    expect(entries[0]!.bodyBytes).toBeGreaterThan(0);
    expect(JSON.stringify(entries)).not.toContain("secret prompt");
  });

  it("DELETE clears behaviours and the log", async () => {
    await setBehaviour({ credential: "sk-demo-cleared", status: 500 });
    expect((await openaiChat("sk-demo-cleared", { model: "m", messages: [] })).status).toBe(500);
    await fetch(`${upstream.url}/__demo/behaviour`, { method: "DELETE" });
    expect(await logFor("sk-demo-cleared")).toEqual([]);
    expect((await openaiChat("sk-demo-cleared", { model: "m", messages: [] })).status).toBe(200);
  });

  it("validates control requests", async () => {
    const bad = await fetch(`${upstream.url}/__demo/behaviour`, { method: "POST", body: JSON.stringify({ status: 429 }) });
    expect(bad.status).toBe(400);
    const notJson = await fetch(`${upstream.url}/__demo/release`, { method: "POST", body: "nope" });
    expect(notJson.status).toBe(400);
  });
});

describe("script mode", () => {
  it("prints a ready line and serves until SIGTERM", async () => {
    const child = spawn(process.execPath, ["tools/demo-upstream.ts", "--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        child.stdout!.on("data", (chunk: Buffer) => {
          const match = /listening on (http:\/\/\S+)/.exec(chunk.toString());
          if (match) resolve(match[1]!);
        });
        child.once("exit", (code) => reject(new Error(`exited with ${code}`)));
      });
      expect((await fetch(`${url}/__demo/health`)).status).toBe(200);
      const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });
});
