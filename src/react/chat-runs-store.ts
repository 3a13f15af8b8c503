import type { ConnectionState, FollowRunOptions } from '../client/follow-run.ts';
import type { OutrunClient } from '../client/outrun-client.ts';
import { isAbortError, OutrunApiError } from '../client/errors.ts';
import {
  isActiveStatus,
  MessageProjector,
  type Message,
  type MessagePart,
  type RunInput,
  type RunObject,
  type RunStatusChunk,
} from '../protocol/index.ts';

/**
 * What the chat is doing, as a UI shows it:
 * - `loading`: the first load of the chat;
 * - `ready`: no active run (a new message can be sent);
 * - `submitting`: a send is on its way to the server;
 * - `streaming`: following the active run live;
 * - `reconnecting`: following the active run, but the connection dropped and is being re-established.
 */
export type ChatRunsStatus = 'loading' | 'ready' | 'submitting' | 'streaming' | 'reconnecting';

export interface ChatRunsSnapshot {
  /** The chat's messages, oldest first, with the active run's message as streamed so far. */
  messages: Message[];
  /** The chat's latest run, updated live while it runs. */
  run: RunObject | null;
  status: ChatRunsStatus;
  /** Whether the latest run is active (`pending` or `running`). */
  isRunning: boolean;
  /** Whether a stop was requested and the run has not ended yet. */
  isStopping: boolean;
  /** The last failure of a send, a stop, a load or the stream (an `OutrunApiError` for API answers). */
  error: Error | null;
}

export interface ChatRunsStoreOptions {
  client: OutrunClient;
  chatId: string;
  /** While no run is active, how often to look for one started elsewhere (another tab or device); 0 never. @default 3000 */
  pollIntervalMs?: number;
  /** The least time between two updates while text streams in. @default 50 */
  throttleMs?: number;
  /** Passed to `client.followRun`. */
  follow?: Pick<FollowRunOptions, 'idleTimeoutMs' | 'minRetryDelayMs' | 'maxRetryDelayMs'>;
}

interface LiveMessage {
  runId: string;
  messageId: string;
  /** The snapshot's parts: complete through the sequence number the stream was followed after. */
  base: MessagePart[];
  projector: MessageProjector;
}

/** The snapshot before anything is loaded. */
export const INITIAL_SNAPSHOT: ChatRunsSnapshot = {
  messages: [],
  run: null,
  status: 'loading',
  isRunning: false,
  isStopping: false,
  error: null,
};

/**
 * The state behind `useChatRuns`, without React: loads a chat, follows its active run from the event after
 * the snapshot it loaded (so nothing shows twice), and notices runs started elsewhere. A tab that starts a
 * run and a tab that opens it later do the same thing: load the snapshot, then follow the stream.
 */
export class ChatRunsStore {
  readonly #options: ChatRunsStoreOptions;
  readonly #listeners = new Set<() => void>();
  #snapshot: ChatRunsSnapshot = INITIAL_SNAPSHOT;
  #messages: Message[] = [];
  #run: RunObject | null = null;
  #live: LiveMessage | null = null;
  #follow: AbortController | null = null;
  #connection: ConnectionState['status'] = 'closed';
  #submitting = false;
  #loaded = false;
  /** The last load failed: the next poll reloads everything. */
  #stale = false;
  #error: Error | null = null;
  #syncGeneration = 0;
  #disposed = false;
  #pollTimer: ReturnType<typeof setTimeout> | undefined;
  #notifyTimer: ReturnType<typeof setTimeout> | undefined;
  #lastNotify = 0;
  readonly #onVisible = () => {
    if (typeof document === 'undefined' || document.visibilityState === 'visible') void this.sync();
  };

  constructor(options: ChatRunsStoreOptions) {
    this.#options = options;
  }

  readonly subscribe = (listener: () => void): (() => void) => {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  };

  readonly getSnapshot = (): ChatRunsSnapshot => this.#snapshot;

  /** Loads the chat and starts watching it. */
  start(): void {
    void this.sync();
    this.#schedulePoll();
    if (typeof window !== 'undefined') {
      window.addEventListener('online', this.#onVisible);
      window.addEventListener('focus', this.#onVisible);
      document.addEventListener('visibilitychange', this.#onVisible);
    }
  }

  /** Stops following and watching; the run itself goes on. */
  dispose(): void {
    this.#disposed = true;
    this.#follow?.abort();
    clearTimeout(this.#pollTimer);
    clearTimeout(this.#notifyTimer);
    if (typeof window !== 'undefined') {
      window.removeEventListener('online', this.#onVisible);
      window.removeEventListener('focus', this.#onVisible);
      document.removeEventListener('visibilitychange', this.#onVisible);
    }
    this.#listeners.clear();
  }

  /**
   * Starts a run with `input`. Resolves true once the run has started (it is then followed like any other);
   * false when it did not start, with `error` saying why (409 `run_already_active` carries `runId`).
   */
  async send(input: string | RunInput): Promise<boolean> {
    if (this.#submitting) return false;
    this.#submitting = true;
    this.#error = null;
    this.#notify(true);
    try {
      const run = await this.#options.client.startRun(this.#options.chatId, {
        input: typeof input === 'string' ? { text: input } : input,
        trigger: 'user',
      });
      this.#run = run;
      await this.sync();
      return true;
    } catch (error) {
      this.#error = asError(error);
      if (error instanceof OutrunApiError && error.code === 'run_already_active') void this.sync();
      return false;
    } finally {
      this.#submitting = false;
      this.#notify(true);
    }
  }

  /** Asks the server to stop the active run (or `runId`). The stream then shows it ending `aborted`. */
  async stop(runId?: string): Promise<void> {
    const target = runId ?? (this.#run && isActiveStatus(this.#run.status) ? this.#run.id : undefined);
    if (!target) return;
    try {
      const result = await this.#options.client.stopRun(target);
      if (result.run && result.run.id === this.#run?.id) this.#run = result.run;
      if (this.#error instanceof OutrunApiError && this.#error.runId === target) this.#error = null;
      this.#notify(true);
      if (!this.#follow) await this.sync();
    } catch (error) {
      this.#error = asError(error);
      this.#notify(true);
    }
  }

  clearError(): void {
    this.#error = null;
    this.#notify(true);
  }

  /**
   * Reloads the chat from the server and follows its active run, if any, from where the loaded snapshot
   * ends. Safe to call at any time; a newer call supersedes an older one.
   */
  async sync(): Promise<void> {
    if (this.#disposed) return;
    const generation = ++this.#syncGeneration;
    const { client, chatId } = this.#options;
    try {
      // The run first: a run that is active now has its assistant message in the message list read after.
      const latest = await client.latestRun(chatId);
      const messages = await client.allMessages(chatId);
      let run = latest.run;
      if (generation !== this.#syncGeneration || this.#disposed) return;
      const message = run
        ? messages.find((candidate) => candidate.id === run!.assistantMessageId)
        : undefined;
      if (run && isActiveStatus(run.status) && message && message.status !== 'streaming') {
        // The run ended between the two reads: its message is final, so read its final status too.
        run = await client.getRun(run.id);
        if (generation !== this.#syncGeneration || this.#disposed) return;
      }
      this.#messages = messages;
      if (!this.#live || this.#live.runId !== run?.id || !run || !isActiveStatus(run.status)) this.#run = run;
      this.#loaded = true;
      if (
        this.#error &&
        !(this.#error instanceof OutrunApiError && this.#error.code === 'run_already_active')
      ) {
        this.#error = null;
      }
      if (run && isActiveStatus(run.status) && message?.status === 'streaming') {
        if (this.#live?.runId !== run.id) this.#startFollowing(run, message);
      } else if (this.#live) {
        this.#stopFollowing();
      }
    } catch (error) {
      if (generation !== this.#syncGeneration || this.#disposed || isAbortError(error)) return;
      this.#error = asError(error);
      this.#loaded = true;
      this.#stale = true;
    }
    this.#notify(true);
  }

  #startFollowing(run: RunObject, message: Message): void {
    this.#stopFollowing();
    // A snapshot's parts are complete through `streamSeq`; without one, start from an empty message.
    const after = message.streamSeq ?? 0;
    const live: LiveMessage = {
      runId: run.id,
      messageId: message.id,
      base: after > 0 ? message.parts : [],
      projector: new MessageProjector(),
    };
    const controller = new AbortController();
    this.#live = live;
    this.#follow = controller;
    this.#connection = 'connecting';
    void (async () => {
      try {
        const events = this.#options.client.followRun(run.id, {
          ...this.#options.follow,
          after,
          signal: controller.signal,
          onConnectionChange: (state) => {
            if (controller.signal.aborted) return;
            this.#connection = state.status;
            this.#notify(true);
          },
        });
        for await (const { chunk } of events) {
          if (chunk.type === 'data-run') {
            this.#run = (chunk as RunStatusChunk).data;
            this.#notify(true);
          } else {
            live.projector.push(chunk);
            this.#notify(false);
          }
        }
        if (controller.signal.aborted) return;
        this.#follow = null;
        await this.sync();
      } catch (error) {
        if (controller.signal.aborted) return;
        // The stream failed for good, or a chunk could not be projected: start over from a fresh snapshot.
        this.#stopFollowing();
        if (error instanceof OutrunApiError) this.#error = error;
        else await new Promise((resolve) => setTimeout(resolve, 1000));
        await this.sync();
        if (error instanceof OutrunApiError) this.#error ??= error;
        this.#notify(true);
      }
    })();
  }

  #stopFollowing(): void {
    this.#follow?.abort();
    this.#follow = null;
    this.#live = null;
    this.#connection = 'closed';
  }

  #schedulePoll(): void {
    const interval = this.#options.pollIntervalMs ?? 3000;
    if (interval <= 0 || this.#disposed) return;
    this.#pollTimer = setTimeout(async () => {
      if (this.#disposed) return;
      if (!this.#follow && !this.#submitting && this.#loaded) {
        try {
          if (this.#stale) await this.sync();
          else {
            const latest = await this.#options.client.latestRun(this.#options.chatId);
            const changed = latest.run?.id !== this.#run?.id || latest.run?.status !== this.#run?.status;
            if (changed && !this.#disposed) await this.sync();
          }
        } catch {
          // The next poll tries again; a send or a stop reports its own errors.
        }
      }
      this.#schedulePoll();
    }, interval);
  }

  /** Publishes a new snapshot: at once, or (while text streams in) at most every `throttleMs`. */
  #notify(immediate: boolean): void {
    if (this.#disposed) return;
    const throttleMs = this.#options.throttleMs ?? 50;
    const elapsed = Date.now() - this.#lastNotify;
    if (!immediate && elapsed < throttleMs) {
      this.#notifyTimer ??= setTimeout(() => {
        this.#notifyTimer = undefined;
        this.#publish();
      }, throttleMs - elapsed);
      return;
    }
    clearTimeout(this.#notifyTimer);
    this.#notifyTimer = undefined;
    this.#publish();
  }

  #publish(): void {
    this.#lastNotify = Date.now();
    const live = this.#live;
    let messages = this.#messages;
    if (live) {
      const parts = [...live.base, ...live.projector.parts()];
      let found = false;
      messages = messages.map((message) => {
        if (message.id !== live.messageId) return message;
        found = true;
        return { ...message, parts };
      });
      if (!found) {
        messages = [
          ...messages,
          {
            id: live.messageId,
            role: 'assistant',
            parts,
            status: 'streaming',
            runId: live.runId,
            createdAt: new Date().toISOString(),
            streamSeq: null,
          },
        ];
      }
    }
    const run = this.#run;
    const isRunning = run !== null && isActiveStatus(run.status);
    let status: ChatRunsStatus;
    if (!this.#loaded) status = 'loading';
    else if (this.#submitting) status = 'submitting';
    else if (this.#follow) status = this.#connection === 'reconnecting' ? 'reconnecting' : 'streaming';
    else status = 'ready';
    this.#snapshot = {
      messages,
      run,
      status,
      isRunning,
      isStopping: isRunning && run.stopRequestedAt !== null,
      error: this.#error,
    };
    for (const listener of this.#listeners) listener();
  }
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
