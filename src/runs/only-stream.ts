/**
 * Takes a `streamText` result's one stream so that the result keeps no copy of it for later readers.
 *
 * Each stream a result hands out (`fullStream`, `toUIMessageStream`, …) is one branch of a `tee()` of the
 * result's base stream; the other branch becomes the base stream, kept for the next reader, and queues every
 * part until the result is dropped ("by design" up to AI SDK v7: vercel/ai#16753). A run reads one stream and
 * holds its result until the run ends, so each run kept every token it had streamed (about 270 bytes each:
 * the part, its `partialOutput`, the text), and the garbage collector copied them from the young generation
 * to the old while the run went on (`docs/benchmarks.md`, "What a streaming run keeps").
 *
 * `take` must take the stream synchronously. The branch it leaves behind is cancelled: a tee then stops
 * queueing for it, and its source is cancelled only once the branch handed out is cancelled too. Returns the
 * stream and whether a kept branch was found and dropped (false: the SDK keeps its streams differently now;
 * the stream is still whole, only kept twice).
 */
export function takeOnlyStream<S>(result: object, take: () => S): { stream: S; dropped: boolean } {
  const holder = result as { baseStream?: unknown };
  const before = holder.baseStream;
  const stream = take();
  const kept = holder.baseStream;
  // Only a branch `take` just split off: never the stream it reads from.
  const dropped = kept !== before && kept instanceof ReadableStream && !kept.locked;
  if (dropped) {
    // Settles only once the source ends or the other branch is cancelled too; nothing to wait for here.
    kept.cancel().catch(() => {});
  }
  return { stream, dropped };
}
