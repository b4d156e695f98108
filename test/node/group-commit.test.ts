// core/group-commit.ts: every caller's writes are in storage when its promise resolves;
// callers that arrive together share one write; a lone caller does not wait for a timer;
// after a shared batch it keeps batching until a batch serves one caller alone. Order of
// events, not time: a zero-delay timer set by the test is the yardstick.
import { describe, expect, it } from "vitest";
import { GroupCommit } from "../../core/group-commit.ts";

const timerTick = () => new Promise<string>((resolve) => setTimeout(() => resolve("timer"), 0));

describe("GroupCommit", () => {
  it("a lone caller commits before a zero-delay timer fires; ten callers at once share one write", async () => {
    let writes = 0;
    const queued: number[] = [];
    const stored: number[] = [];
    const gc = new GroupCommit(() => {
      writes++;
      stored.push(...queued.splice(0));
    });
    queued.push(1);
    const sentinel = timerTick(); // set first: a commit behind a timer would lose the race
    const first = await Promise.race([gc.committed().then(() => "committed"), sentinel]);
    expect(first).toBe("committed");
    expect(stored).toEqual([1]);
    expect(writes).toBe(1);

    // Ten at once (the clock has not moved): one write holds all of them, each sees its row stored.
    await timerTick();
    await new Promise((r) => setTimeout(r, 5)); // past BUSY_MS: the next caller is alone again
    const seen = await Promise.all(Array.from({ length: 10 }, (_, i) => {
      queued.push(100 + i);
      return gc.committed().then(() => stored.includes(100 + i));
    }));
    expect(seen).toEqual(Array(10).fill(true));
    // Called in one turn, the nine after the first join its pending write.
    expect(writes).toBe(2);
  });

  it("after a shared batch the next caller waits for the timer (batching); a batch of one ends it", async () => {
    let writes = 0;
    const gc = new GroupCommit(() => void writes++);
    await Promise.all([gc.committed(), gc.committed(), gc.committed()]); // one shared write
    expect(writes).toBe(1);
    await new Promise((r) => setTimeout(r, 5));
    // Still batching: this lone caller's write comes after a timer set before it.
    const order: string[] = [];
    const sentinel = timerTick().then(() => order.push("timer"));
    await gc.committed().then(() => order.push("committed"));
    await sentinel;
    expect(order).toEqual(["timer", "committed"]);
    // That batch served one caller: the next lone caller commits at once again.
    await new Promise((r) => setTimeout(r, 5));
    const before = timerTick();
    const next = await Promise.race([gc.committed().then(() => "committed"), before]);
    expect(next).toBe("committed");
  });

  it("a failed write rejects every caller of its batch, and the next batch writes again", async () => {
    let fail = true;
    let writes = 0;
    const gc = new GroupCommit(() => {
      writes++;
      if (fail) throw new Error("disk full");
    });
    const results = await Promise.allSettled([gc.committed(), gc.committed()]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    fail = false;
    await expect(gc.committed()).resolves.toBeUndefined();
    expect(writes).toBe(2);
  });

  it("with `busy`: an idle owner commits at once; a busy one waits for the callers that follow, and commitNow() ends the wait with one write for all", async () => {
    let busy = false;
    let writes = 0;
    const stored: number[] = [];
    const queued: number[] = [];
    // A long wait: only commitNow() can end a busy batch before the test's timer.
    const gc = new GroupCommit(() => {
      writes++;
      stored.push(...queued.splice(0));
    }, { busy: () => busy, maxWaitMs: 60_000 });
    const order: string[] = [];
    const arrive = (n: number) => {
      queued.push(n);
      return gc.committed().then(() => order.push(`committed ${n}`));
    };
    // Idle (nothing else under way): a microtask, before any timer.
    const sentinel0 = timerTick().then(() => order.push("timer"));
    await Promise.all([arrive(0), sentinel0]);
    expect(order).toEqual(["committed 0", "timer"]);
    order.length = 0;
    busy = true;
    const first = arrive(1); // others under way: waits
    await timerTick();
    expect(order).toEqual([]);
    const second = arrive(2); // joins the same batch
    await timerTick();
    expect(order).toEqual([]);
    expect(writes).toBe(1);
    gc.commitNow(); // an answer needs it: written now, synchronously
    expect(writes).toBe(2);
    expect(stored).toEqual([0, 1, 2]);
    await Promise.all([first, second]);
    expect(order).toEqual(["committed 1", "committed 2"]);
    gc.commitNow(); // nothing waiting: no write
    expect(writes).toBe(2);
  });

  it("with `busy`: a batch nobody ends commits after maxWaitMs", async () => {
    let writes = 0;
    const gc = new GroupCommit(() => void writes++, { busy: () => true, maxWaitMs: 1 });
    await gc.committed();
    expect(writes).toBe(1);
  });
});
