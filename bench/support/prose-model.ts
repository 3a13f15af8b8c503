import type { LanguageModelV3, LanguageModelV3StreamPart } from '@ai-sdk/provider';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** The model id under which benchmarks offer the prose model. */
export const PROSE_MODEL_ID = 'bench-prose';

/** Packages whose READMEs are the prose: real English and Markdown, as a model answers, never repeating. */
const SOURCES = ['ioredis', 'fastify', 'eslint', 'kysely', 'bullmq', 'zod', 'ai', 'pino', 'prettier'];

let corpus: string[] | null = null;

/**
 * The READMEs cut into tokens the way a BPE tokenizer roughly does: a word with its leading space, digits
 * in threes, punctuation runs, whitespace; words longer than 8 letters in pieces of 5 (about 4 characters
 * per token on average, as with English on GPT-style tokenizers).
 */
export function proseTokens(): string[] {
  if (corpus) return corpus;
  const text = SOURCES.map((name) =>
    readFileSync(new URL(`../../node_modules/${name}/README.md`, import.meta.url), 'utf8'),
  ).join('\n\n');
  const tokens: string[] = [];
  for (const [piece] of text.matchAll(/ ?[A-Za-z]+| ?\d{1,3}| ?[^\sA-Za-z\d]+|\s+/g)) {
    if (piece.length <= 8) tokens.push(piece);
    else for (let at = 0; at < piece.length; at += 5) tokens.push(piece.slice(at, at + 5));
  }
  corpus = tokens;
  return tokens;
}

/** The answer the prose model streams for `{"prose": {"tokens": N, "offset": K}}`: tokens K … K+N-1. */
export function proseAnswer(tokens: number, offset: number): string[] {
  const all = proseTokens();
  return Array.from({ length: tokens }, (_, index) => all[(offset + index) % all.length]!);
}

/**
 * A model that answers with real prose, one token per text delta, as fast as it can, one step, no tools.
 * Its text part id is as long as a hosted provider's (`msg_` and 48 hex digits).
 */
export function createProseModel(): LanguageModelV3 {
  return {
    specificationVersion: 'v3',
    provider: 'outrun-bench',
    modelId: PROSE_MODEL_ID,
    supportedUrls: {},
    async doStream(options) {
      const user = options.prompt.findLast((message) => message.role === 'user');
      const text =
        user?.role === 'user'
          ? user.content.map((part) => (part.type === 'text' ? part.text : '')).join('')
          : '';
      const { prose } = JSON.parse(text) as { prose: { tokens: number; offset: number } };
      const id = `msg_${randomBytes(24).toString('hex')}`;
      const parts: LanguageModelV3StreamPart[] = [
        { type: 'stream-start', warnings: [] },
        { type: 'text-start', id },
        ...proseAnswer(prose.tokens, prose.offset).map((delta): LanguageModelV3StreamPart => ({
          type: 'text-delta',
          id,
          delta,
        })),
        { type: 'text-end', id },
        {
          type: 'finish',
          finishReason: { unified: 'stop', raw: 'stop' },
          usage: {
            inputTokens: { total: 1, noCache: 1, cacheRead: 0, cacheWrite: 0 },
            outputTokens: { total: prose.tokens, text: prose.tokens, reasoning: 0 },
          },
        },
      ];
      let index = 0;
      return {
        stream: new ReadableStream<LanguageModelV3StreamPart>({
          pull(controller) {
            if (index < parts.length) controller.enqueue(parts[index++]!);
            else controller.close();
          },
        }),
      };
    },
    async doGenerate() {
      throw new Error('the prose model only streams');
    },
  };
}
