// B6: a paid answer goes to the buyer only once it has started. The router reads the
// answer's first bytes from the key before it sends anything, and hands them to the runtime
// so that the headers and a byte are on the wire before any later failure can reach the
// response (test/node/first-bytes.test.ts runs this file in workerd over real HTTP). No
// imports: that test loads it into a bare Worker as it is.

/** Answers of known length up to this size are read whole (the key object's own limit for reading an upstream whole). */
const WHOLE_MAX_BYTES = 64 * 1024;

/**
 * The answer with its first bytes already in hand, or null if its body broke off before
 * them (a key object restarted mid-answer, an upstream that failed right after its
 * headers): then nothing reached the buyer. The rest is piped natively behind them.
 *
 * The first bytes go to the runtime as two writes, one byte then the others, before the
 * rest is read at all. workerd's response pump reads a write, sends it, and only then reads
 * the next; a body that errors while a write is being sent cancels that send, headers
 * included (measured over real HTTP: one consumed write then an abort delivered nothing in
 * 100 of 100 tries; two consumed writes then an abort delivered the first in 100 of 100).
 * So once the second write is taken, the headers and a byte are out, and a later cut
 * reaches the buyer as a cut stream: charged, bytes were sent, the key records `stream_cut`.
 */
export async function startedAnswer(answer: Response): Promise<Response | null> {
  const length = Number(answer.headers.get("content-length") ?? Number.NaN);
  // A small answer of known length (what a key object read whole from its upstream) is
  // read whole here too: complete in hand, nothing can fail after it is sent, and one native
  // read costs far less than the reader, two writes and a pipe below (about 1 ms a request).
  if (Number.isSafeInteger(length) && length <= WHOLE_MAX_BYTES) {
    try {
      return new Response(await answer.arrayBuffer(), answer);
    } catch {
      return null;
    }
  }
  const body = answer.body!;
  const reader = body.getReader();
  const head: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < 2) {
      const chunk = await reader.read();
      if (chunk.done) {
        // Complete (and small): no cut can follow.
        return new Response(size === 0 ? null : concat(head, size), answer);
      }
      if (chunk.value.byteLength > 0) {
        head.push(chunk.value);
        size += chunk.value.byteLength;
      }
    }
  } catch {
    return null;
  }
  const first = concat(head, size);
  const { readable, writable } = Number.isSafeInteger(length) && length >= size ? new FixedLengthStream(length) : new IdentityTransformStream();
  const writer = writable.getWriter();
  void (async () => {
    try {
      await writer.write(first.subarray(0, 1));
      await writer.write(first.subarray(1));
    } catch (err) {
      await reader.cancel(err).catch(() => {}); // the buyer went away
      return;
    }
    writer.releaseLock();
    reader.releaseLock();
    await body.pipeTo(writable).catch(() => {}); // a cut reaches the buyer as one
  })();
  return new Response(readable, answer);
}

function concat(chunks: Uint8Array[], size: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
