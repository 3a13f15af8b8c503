/**
 * What a JSON body costs beside its parse: `JSON.parse`, and the walk after it that refuses unstorable text
 * and nesting past `MAX_JSON_DEPTH` (`assertStorableText`), timed on the bodies the API sees (a start, an
 * agent, a useChat request with a long history), best of five rounds. `output-scan.txt` is the first version,
 * a separate scan of the text before the parse (since removed: about 1 µs per KB, a second pass).
 *
 *   PATH="$PWD/node_modules/node/bin:$PATH" npx tsx bench/passes/2026-12-06k-amd-epyc/json-depth/body-cost.ts
 */
import { assertStorableText } from '../../../../src/http/text-guard.ts';

const start = JSON.stringify({
  input: { text: 'What is the weather in Lisbon tomorrow?' },
  multitask: 'enqueue',
});
const agent = JSON.stringify({
  name: 'Support',
  instructions: 'You answer questions about orders. '.repeat(20),
  tools: [{ name: 'echo' }, { name: 'current_time', needsApproval: true }],
  budget: { maxSteps: 8, maxTokens: 100_000 },
});
const message = (index: number) => ({
  id: `m${index}`,
  role: index % 2 ? 'assistant' : 'user',
  parts: [
    { type: 'text', text: 'A sentence of an answer that goes on for a while. '.repeat(10) },
    {
      type: 'tool-echo',
      toolCallId: `c${index}`,
      state: 'output-available',
      input: { step: 1 },
      output: { step: 1 },
    },
  ],
});
const useChat = JSON.stringify({
  id: 'chat_x',
  messages: Array.from({ length: 1_500 }, (_, index) => message(index)),
});

function best(fn: () => unknown, iterations: number): number {
  let fastest = Infinity;
  for (let round = 0; round < 5; round++) {
    const began = process.hrtime.bigint();
    for (let index = 0; index < iterations; index++) fn();
    fastest = Math.min(fastest, Number(process.hrtime.bigint() - began) / iterations);
  }
  return fastest;
}

console.log(`Node ${process.version}`);
console.log('| body | bytes | guard walk (µs) | JSON.parse (µs) | walk ÷ parse |');
console.log('| --- | ---: | ---: | ---: | ---: |');
for (const [name, text, iterations] of [
  ['a start', start, 200_000],
  ['an agent', agent, 50_000],
  ['useChat, 1,500 messages', useChat, 20],
] as const) {
  const parsed: unknown = JSON.parse(text);
  const check = best(() => assertStorableText(parsed, 'body'), iterations) / 1000;
  const parse = best(() => JSON.parse(text), iterations) / 1000;
  console.log(
    `| ${name} | ${text.length} | ${check.toFixed(3)} | ${parse.toFixed(3)} | ${(check / parse).toFixed(2)} |`,
  );
}
