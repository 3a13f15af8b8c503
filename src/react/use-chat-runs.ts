import { useCallback, useEffect, useState, useSyncExternalStore } from 'react';
import type { OutrunClient } from '../client/outrun-client.ts';
import type { MultitaskStrategy, RunInput } from '../protocol/index.ts';
import {
  ChatRunsStore,
  INITIAL_SNAPSHOT,
  type ChatRunsSnapshot,
  type ChatRunsStoreOptions,
} from './chat-runs-store.ts';

export interface UseChatRunsOptions extends Pick<
  ChatRunsStoreOptions,
  'pollIntervalMs' | 'throttleMs' | 'follow'
> {
  client: OutrunClient;
  /** The chat to show; null shows nothing. */
  chatId: string | null;
}

export interface UseChatRunsResult extends ChatRunsSnapshot {
  /** Starts a run; true once it started, false with `error` set when it did not (keep the user's text then). */
  send: (input: string | RunInput, options?: { multitask?: MultitaskStrategy }) => Promise<boolean>;
  /** Stops the active run (or `runId`, such as the `runId` of a 409). */
  stop: (runId?: string) => Promise<void>;
  /** Reloads the chat and follows its active run, if any. */
  reload: () => Promise<void>;
  clearError: () => void;
}

const subscribeNothing = () => () => {};
const getEmpty = () => INITIAL_SNAPSHOT;

/**
 * A chat's messages with its active run merged in live. On mount it loads the chat and, when a run is still
 * going, follows it from the event after what the loaded messages already hold, so no text shows twice.
 * The tab that sent a message and any other tab on the same chat render the same thing: both follow the
 * run's stream from the server. Runs started elsewhere are picked up by polling while idle.
 */
export function useChatRuns(options: UseChatRunsOptions): UseChatRunsResult {
  const { client, chatId, pollIntervalMs, throttleMs } = options;
  const idleTimeoutMs = options.follow?.idleTimeoutMs;
  const minRetryDelayMs = options.follow?.minRetryDelayMs;
  const maxRetryDelayMs = options.follow?.maxRetryDelayMs;
  const [store, setStore] = useState<ChatRunsStore | null>(null);

  useEffect(() => {
    if (!chatId) {
      setStore(null);
      return;
    }
    const created = new ChatRunsStore({
      client,
      chatId,
      pollIntervalMs,
      throttleMs,
      follow: { idleTimeoutMs, minRetryDelayMs, maxRetryDelayMs },
    });
    setStore(created);
    created.start();
    return () => created.dispose();
  }, [client, chatId, pollIntervalMs, throttleMs, idleTimeoutMs, minRetryDelayMs, maxRetryDelayMs]);

  const snapshot = useSyncExternalStore(store?.subscribe ?? subscribeNothing, store?.getSnapshot ?? getEmpty);
  const send = useCallback(
    (input: string | RunInput, sendOptions?: { multitask?: MultitaskStrategy }) =>
      store ? store.send(input, sendOptions) : Promise.resolve(false),
    [store],
  );
  const stop = useCallback((runId?: string) => (store ? store.stop(runId) : Promise.resolve()), [store]);
  const reload = useCallback(() => (store ? store.sync() : Promise.resolve()), [store]);
  const clearError = useCallback(() => store?.clearError(), [store]);
  return { ...snapshot, send, stop, reload, clearError };
}
