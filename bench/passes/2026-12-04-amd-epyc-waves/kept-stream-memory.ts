/**
 * What a `streamText` result keeps while its one stream is read: the heap held after a full GC a quarter of
 * the way into a long stream and at its last delta, read through `toUIMessageStream` as the agent loop reads
 * it, with and without `takeOnlyStream` (src/runs/only-stream.ts). The scripted model (which builds all its
 * deltas up front, a constant), no delay. The growth between the two points, per token, is what a result keeps.
 *
 *   node --expose-gc --import tsx bench/passes/2026-12-04-amd-epyc-waves/kept-stream-memory.ts \
 *     [--tokens 50000] [--variant kept|dropped]
 */
import { parseArgs } from 'node:util';
import { streamText } from 'ai';
import { createScriptedModel } from '../../../src/agent/scripted-model.ts';
import { takeOnlyStream } from '../../../src/runs/only-stream.ts';

const { values } = parseArgs({
  options: { tokens: { type: 'string', default: '50000' }, variant: { type: 'string', default: 'kept' } },
});
const tokens = Number(values.tokens);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

function heldMb(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed / 1e6;
}

async function measure(dropKept: boolean): Promise<{ quarter: number; last: number }> {
  const result = streamText({
    model: createScriptedModel(),
    messages: [{ role: 'user', content: JSON.stringify({ script: { tokens, tool: false } }) }],
  });
  const stream = dropKept
    ? takeOnlyStream(result, () => result.toUIMessageStream()).stream
    : result.toUIMessageStream();
  let deltas = 0;
  let quarter = 0;
  let last = 0;
  for await (const chunk of stream) {
    if (chunk.type !== 'text-delta') continue;
    deltas += 1;
    if (deltas === tokens / 4) quarter = heldMb();
    if (deltas === tokens) last = heldMb();
  }
  return { quarter, last };
}

const dropKept = values.variant === 'dropped';
for (let pass = 1; pass <= 3; pass++) {
  const { quarter, last } = await measure(dropKept);
  const perToken = ((last - quarter) * 1e6) / ((tokens * 3) / 4);
  console.log(
    `node ${process.version}, ${tokens} tokens, ${dropKept ? 'takeOnlyStream' : 'toUIMessageStream alone'}, pass ${pass}: ` +
      `held after a full GC ${quarter.toFixed(1)} MB at a quarter, ${last.toFixed(1)} MB at the last delta: ` +
      `${perToken.toFixed(0)} B per token`,
  );
}
