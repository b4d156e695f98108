// POST /ops/keys/:id/restart (the soak's key-object fault, and an operator's way out of a
// stuck key): the object is reset as a crash would reset it, memory gone (the decrypted
// credential, in-memory counters), storage kept (config, the minute's admissions), and it
// serves again at once. Only with the ops token.
import { describe, expect, it } from "vitest";
import { addKey, api, call, chat, inspect } from "./helpers.ts";

describe("ops: restart a key object", () => {
  it("resets the object's memory, keeps its storage, and the key serves again", async () => {
    const { keyId } = await addKey();
    for (let i = 0; i < 2; i++) {
      const res = await chat();
      expect(res.status).toBe(200);
      await res.text();
    }
    const before = await inspect(keyId);
    expect(before.credentialLoaded).toBe(true);
    expect(before.limiter.windowCount).toBe(2);

    const refused = await call(`/ops/keys/${keyId}/restart`, { method: "POST" });
    expect(refused.status).toBe(401);
    expect((await inspect(keyId)).credentialLoaded).toBe(true);

    const res = await api(`/ops/keys/${keyId}/restart`, { method: "POST" });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { restarted: boolean; key: { credentialLoaded: boolean; config: unknown; limiter: { windowCount: number } } };
    expect(body.restarted).toBe(true);
    // Memory gone: the credential is decrypted again on the next request.
    expect(body.key.credentialLoaded).toBe(false);
    // Storage kept: the configuration and the minute's admissions (inspection forced them to storage first).
    expect(body.key.config).toEqual(before.config);
    expect(body.key.limiter.windowCount).toBe(2);

    const after = await chat();
    expect(after.status).toBe(200);
    await after.text();
    expect((await inspect(keyId)).limiter.windowCount).toBe(3);
  });

  it("an unknown key id is a 404 with a code", async () => {
    const res = await api("/ops/keys/k_nosuchkey00000/restart", { method: "POST" });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("key_not_found");
  });
});
