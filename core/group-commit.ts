// Group commit for Durable Object writes that an answer has to wait for (a wallet's debit,
// a key's paid earnings). Each storage commit costs the same whatever it holds (locally an
// fsync on workerd's only thread; in production a replicated write the output gate waits
// for), so writes that become ready together should share one. Under load they do: the
// commit waits for a zero-delay timer, and every caller that arrives before it fires joins.
// When the object is idle that timer is pure latency (about 1 ms a timer in workerd), so a
// caller commits on a microtask unless the last batch was shared or another caller came
// within BUSY_MS; a timer batch that served one caller alone ends the batching.

/** Callers this close together (ms, workerd's clock) count as a burst worth batching. */
const BUSY_MS = 2;

export class GroupCommit {
  readonly #write: () => void;
  #pending: Promise<void> | null = null;
  #waiters = 0;
  #lastCall = Number.NEGATIVE_INFINITY;
  /** Under load: the last batch was shared. Left when a timer batch serves one caller alone. */
  #batching = false;

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
    // A commit blocks the thread (locally) and callers then arrive in waves: the first of a
    // wave is not alone, which the last batch's size tells and the clock alone would not.
    const burst = this.#batching || now - this.#lastCall < BUSY_MS;
    this.#lastCall = now;
    this.#waiters++;
    this.#pending ??= new Promise<void>((resolve, reject) => {
      const run = () => {
        this.#batching = this.#waiters > 1;
        this.#pending = null;
        this.#waiters = 0;
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
