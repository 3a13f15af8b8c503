/**
 * The Outrun client: a typed, fetch-based client for the HTTP API and the run stream. Works in Node and
 * in browsers.
 *
 * @example
 * const outrun = createOutrunClient({ baseUrl: 'http://localhost:3000', apiKey });
 * const chat = await outrun.createChat();
 * const run = await outrun.startRun(chat.id, { input: { text: 'Hello' } });
 * for await (const { chunk } of outrun.followRun(run.id)) if (chunk.type === 'text-delta') write(chunk.delta);
 */
export {
  createOutrunClient,
  type OutrunClient,
  type OutrunAuth,
  type OutrunClientOptions,
  type RequestOptions,
} from './outrun-client.ts';
export { OutrunApiError, isAbortError } from './errors.ts';
export { type ConnectionState, type FollowRunOptions } from './follow-run.ts';
export * from '../protocol/index.ts';
