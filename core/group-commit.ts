// Group commit for Durable Object writes that an answer has to wait for (a wallet's debit,
// a key's paid bookings). Each storage commit costs the same whatever it holds (locally an
// fsync on workerd's only thread; in production a replicated write the output gate waits
// for), so writes that become ready together should share one. Under load they do: the
// commit waits for a zero-delay timer, and every caller that arrives before it fires joins.
// When the object is idle that timer is pure latency (about 1 ms a timer in workerd), so a
// caller commits on a microtask unless the last batch was shared or another caller came
// within BUSY_MS; a timer batch that served one caller alone ends the batching.
// An owner that knows when more callers are likely (a key object knows it has other
// requests upstream) says so (`busy`): a caller then waits for them, up to `maxWaitMs`, and
// the first answer that needs the batch durable ends the wait (`commitNow`).

/** Callers this close together (ms, workerd's clock) count as a burst worth batching. */
const BUSY_MS = 2;

export interface Expected {
  /**
   * Whether more callers are likely soon (say, other requests of the owner are upstream and
   * will book or answer): a caller then waits up to `maxWaitMs` for them to join its write,
   * unless `commitNow()` ends the wait sooner. False: it commits at once.
   */
  busy: () => boolean;
  maxWaitMs: number;
}

interface Batch {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
  soon: boolean;
}

export class GroupCommit {
  readonly #write: () => void;
  readonly #expected: Expected | undefined;
  #batch: Batch | null = null;
  #waiters = 0;
  #lastCall = Number.NEGATIVE_INFINITY;
  /** Under load: the last batch was shared. Left when a timer batch serves one caller alone. */
  #batching = false;

  /** `write` runs the queued statements, synchronously (one storage commit). */
  constructor(write: () => void, expected?: Expected) {
    this.#write = write;
    this.#expected = expected;
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
    let batch = this.#batch;
    if (batch === null) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      batch = this.#batch = { promise, resolve, reject, timer: undefined, soon: false };
    }
    const busy = this.#expected?.busy();
    if (busy === false || (busy === undefined && !burst)) this.#runSoon(batch);
    else if (batch.timer === undefined && !batch.soon) {
      const b = batch;
      b.timer = setTimeout(() => this.#run(b), this.#expected?.maxWaitMs ?? 0);
    }
    return batch.promise;
  }

  /**
   * Run the waiting batch now (synchronously), if there is one: a caller needs it durable
   * and waiting longer would only hold it back. Its promise resolves as usual.
   */
  commitNow(): void {
    if (this.#batch !== null) this.#run(this.#batch);
  }

  #runSoon(batch: Batch) {
    if (batch.soon) return;
    batch.soon = true;
    queueMicrotask(() => this.#run(batch));
  }

  #run(batch: Batch) {
    if (this.#batch !== batch) return;
    clearTimeout(batch.timer);
    this.#batch = null;
    this.#batching = this.#waiters > 1;
    this.#waiters = 0;
    try {
      this.#write();
      batch.resolve();
    } catch (err) {
      batch.reject(err);
    }
  }
}
