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
  type AgentInput,
  type AgentWriteResult,
} from './outrun-client.ts';
export type {
  ApprovalAnswer,
  ContinueRunOptions,
  CreateScheduleOptions,
  ScheduleMultitask,
  ScheduleObject,
} from '../protocol/schedule.ts';
export { OutrunApiError, isAbortError } from './errors.ts';
export { type ConnectionState, type FollowRunOptions } from './follow-run.ts';
export * from '../protocol/index.ts';
export type {
  AgentObject,
  AgentTool,
  Budget,
  ContextSettings,
  McpServer,
  Multitask,
} from '../protocol/agent.ts';
