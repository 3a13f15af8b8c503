// Run from the repository root: npx tsx bench/passes/2026-12-07g-amd-epyc/compaction/compact-bench.mts
// Ad-hoc: the time compactHistory takes for a step over a long history with JSON-ish tool outputs.
import type { ModelMessage } from 'ai';
import { compactHistory } from '../../../../src/agent/compaction.ts';
const output = JSON.stringify({
  rows: Array.from({ length: 600 }, (_, i) => ({ id: i, name: `row "${i}"\n` })),
});
const messages: ModelMessage[] = [];
for (let turn = 0; turn < 30; turn++) {
  messages.push({ role: 'user', content: [{ type: 'text', text: `question ${turn}\n` + 'q'.repeat(400) }] });
  messages.push({
    role: 'assistant',
    content: [{ type: 'tool-call', toolCallId: `c${turn}`, toolName: 'q', input: { turn } }],
  });
  messages.push({
    role: 'tool',
    content: [
      { type: 'tool-result', toolCallId: `c${turn}`, toolName: 'q', output: { type: 'text', value: output } },
    ],
  });
  messages.push({ role: 'assistant', content: [{ type: 'text', text: 'answer\n' + 'a'.repeat(400) }] });
}
console.log('output chars', output.length, 'history chars', JSON.stringify(messages).length);
for (const maxTokens of [100_000, 20_000]) {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    await compactHistory({ messages, maxTokens });
    times.push(performance.now() - t);
  }
  console.log(`maxTokens ${maxTokens}: ${times.map((t) => t.toFixed(1)).join(', ')} ms`);
}
