// The key object's side of an upstream call (P1, P4): the first-byte deadline, which
// answers are read whole rather than piped, and what an upstream status says about the
// key. The call itself stays in SellerKey.fetch, beside the bookkeeping it drives.

/** How often overdue upstream calls are looked for: the first-byte timeout's precision. */
const SWEEP_MS = 100;

export interface UpstreamCall {
  deadline: number;
  controller: AbortController;
  timedOut: boolean;
}

/**
 * Upstream calls waiting for their first byte. One sweep per object aborts the overdue
 * ones, instead of a timer per request.
 */
export class FirstByteWatch {
  private readonly waiting = new Set<UpstreamCall>();
  private sweeper: ReturnType<typeof setInterval> | undefined;

  /** A call that must see its first byte within `timeoutMs`; the buyer leaving aborts it too. */
  start(timeoutMs: number, buyerSignal: AbortSignal): UpstreamCall {
    const call: UpstreamCall = { deadline: Date.now() + timeoutMs, controller: new AbortController(), timedOut: false };
    if (buyerSignal.aborted) call.controller.abort();
    else buyerSignal.addEventListener("abort", () => call.controller.abort(), { once: true });
    this.waiting.add(call);
    this.sweeper ??= setInterval(() => this.sweep(), SWEEP_MS);
    return call;
  }

  /** The first byte came (or the call failed): stop watching it. */
  done(call: UpstreamCall) {
    this.waiting.delete(call);
  }

  private sweep() {
    const now = Date.now();
    for (const c of this.waiting) {
      if (now < c.deadline) continue;
      this.waiting.delete(c);
      c.timedOut = true;
      c.controller.abort();
    }
    if (this.waiting.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}

/** Answers read whole instead of piped: a known, small length, not an event stream. */
const READ_WHOLE_MAX = 64 * 1024;
export function readWhole(headers: Headers): boolean {
  const length = headers.get("content-length");
  if (length === null || headers.has("content-encoding")) return false;
  const n = Number(length);
  return n <= READ_WHOLE_MAX && !(headers.get("content-type") ?? "").startsWith("text/event-stream");
}

/**
 * What an upstream status says about the key: 429 cools it, 401/403 mean the credential
 * was refused (the key is disabled), 5xx is the provider failing. Anything else was
 * served, a 4xx being the buyer's own error.
 */
export type StatusClass = "served" | "rate_limited" | "credential_refused" | "server_error";
export function classifyStatus(status: number): StatusClass {
  if (status === 429) return "rate_limited";
  if (status === 401 || status === 403) return "credential_refused";
  if (status >= 500) return "server_error";
  return "served";
}
