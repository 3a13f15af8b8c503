import { stepCountIs, streamText } from 'ai';
import type { LanguageModel, UIMessageChunk } from 'ai';
import { createScriptedModel } from './scripted-model.ts';
import { createDefaultToolRegistry } from './tools.ts';

/** Runs one agent turn of `text` through the real `streamText` and collects its UI message chunks. */
export async function collectChunks(
  text: string,
  options: {
    model?: LanguageModel;
    abortSignal?: AbortSignal;
    onChunk?: (chunk: UIMessageChunk) => void;
  } = {},
): Promise<UIMessageChunk[]> {
  const result = streamText({
    model: options.model ?? createScriptedModel({ demoDelayMs: 0 }),
    tools: createDefaultToolRegistry().toolSet(),
    stopWhen: stepCountIs(10),
    abortSignal: options.abortSignal,
    messages: [{ role: 'user', content: text }],
    onError: () => {},
  });
  const chunks: UIMessageChunk[] = [];
  for await (const chunk of result.toUIMessageStream()) {
    chunks.push(chunk);
    options.onChunk?.(chunk);
  }
  return chunks;
}

/** The concatenated `text-delta` deltas of a chunk sequence. */
export function streamedText(chunks: UIMessageChunk[]): string {
  return chunks.map((chunk) => (chunk.type === 'text-delta' ? chunk.delta : '')).join('');
}

/** The expected text of a script: `s<s>t<i> ` for each step and delta. */
export function scriptText(steps: number[], tokens: number): string {
  return steps.flatMap((step) => Array.from({ length: tokens }, (_, index) => `s${step}t${index} `)).join('');
}
