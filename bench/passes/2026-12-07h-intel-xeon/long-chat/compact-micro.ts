import type { ModelMessage } from 'ai';
import { compactHistory, estimateTokens } from '../../../../src/agent/compaction.ts';

const big = 'w'.repeat(20_000);
const history: ModelMessage[] = [];
for (let turn = 0; turn < 30; turn++) {
  history.push({
    role: 'user',
    content: [{ type: 'text', text: '{"script":{"steps":2,"tokens":2,"tool":"echo"}}' }],
  });
  history.push({
    role: 'assistant',
    content: [
      { type: 'text', text: 's1t0 s1t1 ' },
      { type: 'tool-call', toolCallId: `c${turn}`, toolName: 'echo', input: { text: big } },
    ],
  });
  history.push({
    role: 'tool',
    content: [
      {
        type: 'tool-result',
        toolCallId: `c${turn}`,
        toolName: 'echo',
        output: { type: 'json', value: { text: big } },
      },
    ],
  });
  history.push({ role: 'assistant', content: [{ type: 'text', text: 's2t0 s2t1 ' }] });
  if (turn % 5 === 4)
    for (let k = 0; k < 5; k++) {
      history.push({
        role: 'user',
        content: [{ type: 'text', text: '{"script":{"steps":1,"tokens":1,"tool":false}}' }],
      });
      history.push({ role: 'assistant', content: [{ type: 'text', text: 's1t0 ' }] });
    }
}
history.push({ role: 'user', content: [{ type: 'text', text: 'and now?' }] });
console.log('messages', history.length, 'chars', JSON.stringify(history).length);
for (let i = 0; i < 8; i++) {
  const fresh = structuredClone(history);
  let t = performance.now();
  const tokens = estimateTokens(fresh);
  const scan = performance.now() - t;
  const fresh2 = structuredClone(history);
  t = performance.now();
  const result = await compactHistory({ messages: fresh2, maxTokens: 100_000 });
  const all = performance.now() - t;
  console.log(
    `scan ${scan.toFixed(2)} ms (${tokens} tokens), compactHistory ${all.toFixed(2)} ms -> ${result.tokens}, trimmed ${result.compaction?.trimmed}`,
  );
}
