// Group commit for Durable Object writes that an answer has to wait for (a wallet's debit,
// a key's paid earnings). Each storage commit costs the same whatever it holds (locally an
// fsync on workerd's only thread; in production a replicated write the output gate waits
// for), so writes that become ready together should share one. Under load they do: the
// commit waits for a zero-delay timer, and every caller that arrives before it fires joins.
// When the object is idle that timer is pure latency (about 1 ms a timer in workerd), so a
// caller that arrives with no other caller in the last BUSY_MS commits on a microtask.

/** Callers this close together (ms, workerd's clock) count as a burst worth batching. */
export const BUSY_MS = 2;

export class GroupCommit {
  readonly #write: () => void;
  #pending: Promise<void> | null = null;
  #lastCall = Number.NEGATIVE_INFINITY;

  /** `write` runs the queued statements, synchronously (one storage commit). */
  constructor(write: () => void) {
    this.#write = write;
  }

  /**
   * Resolves once a `write` that started after this call has returned (throws what it
   * threw): whatever the caller queued before calling is then in storage.
   */
  committed(): Promise<void> {
    const now = Date.now();
    const burst = now - this.#lastCall < BUSY_MS;
    this.#lastCall = now;
    this.#pending ??= new Promise<void>((resolve, reject) => {
      const run = () => {
        this.#pending = null;
        try {
          this.#write();
          resolve();
        } catch (err) {
          reject(err);
        }
      };
      if (burst) setTimeout(run, 0);
      else queueMicrotask(run);
    });
    return this.#pending;
  }
}
