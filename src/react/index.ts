/** React bindings for Outrun: `useChatRuns` renders a chat with its active run live, across tabs and reloads. */
export { useChatRuns, type UseChatRunsOptions, type UseChatRunsResult } from './use-chat-runs.ts';
export {
  ChatRunsStore,
  type ChatRunsSnapshot,
  type ChatRunsStatus,
  type ChatRunsStoreOptions,
} from './chat-runs-store.ts';
