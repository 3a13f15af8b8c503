import type { ConnectionState, FollowRunOptions } from '../client/follow-run.ts';
import type { OutrunClient } from '../client/outrun-client.ts';
import { isAbortError, OutrunApiError } from '../client/errors.ts';
import {
  isActiveStatus,
  MessageProjector,
  type Message,
  type RunInput,
  type RunObject,
  type RunStatusChunk,
  type BudgetChunk,
  type MultitaskStrategy,
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
  /** The chat's active run, else its latest one; updated live while it runs. */
  run: RunObject | null;
  /** The chat's recent runs by id (the active one live), so each message can say how its run ended. */
  runs: ReadonlyMap<string, RunObject>;
  /** Runs queued behind the active one (`multitask: "enqueue"`), oldest first. */
  queued: RunObject[];
  status: ChatRunsStatus;
  /** Whether the run is active (`pending`, `running` or `waiting`). */
  isRunning: boolean;
  /** Whether a stop was requested and the run has not ended yet. */
  isStopping: boolean;
  /** A stop could not reach the server and is being retried until it lands. */
  isStopRetrying: boolean;
  /** The latest `data-budget` chunk of the active run: what it has spent so far against its budget. */
  spending: BudgetChunk['data'] | null;
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
  /** The message: seeded with the snapshot's parts, then the stream followed after the snapshot's `streamSeq`. */
  projector: MessageProjector;
}

/** A run whose stream the store could not apply to its message: shown from snapshots, not followed. */
interface UnreadableRun {
  runId: string;
  error: Error;
}

/** The snapshot before anything is loaded. */
export const INITIAL_SNAPSHOT: ChatRunsSnapshot = {
  messages: [],
  run: null,
  runs: new Map(),
  queued: [],
  status: 'loading',
  isRunning: false,
  isStopping: false,
  isStopRetrying: false,
  spending: null,
  error: null,
};

/** How many of a chat's runs a load reads: enough for every message on screen to find its run. */
const RUNS_PER_LOAD = 100;
/** The longest wait between two attempts of a stop that could not reach the server. */
const MAX_STOP_RETRY_DELAY_MS = 4000;

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
  #runs: RunObject[] = [];
  #spending: BudgetChunk['data'] | null = null;
  #stopRetrying = false;
  #live: LiveMessage | null = null;
  /** The run whose stream failed to apply once: a second failure gives up following it. */
  #recoveredRunId: string | null = null;
  #unreadable: UnreadableRun | null = null;
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
  async send(input: string | RunInput, options: { multitask?: MultitaskStrategy } = {}): Promise<boolean> {
    if (this.#submitting) return false;
    this.#submitting = true;
    this.#error = null;
    this.#notify(true);
    try {
      const run = await this.#options.client.startRun(this.#options.chatId, {
        input: typeof input === 'string' ? { text: input } : input,
        trigger: 'user',
        ...(options.multitask ? { multitask: options.multitask } : {}),
      });
      if (run.status !== 'queued') this.#run = run;
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

  /**
   * Asks the server to stop the active run (or `runId`, such as a queued one). A stop is idempotent, so one
   * that cannot reach the server is retried until it lands; the stream then shows the run ending `aborted`.
   */
  async stop(runId?: string): Promise<void> {
    const target = runId ?? (this.#run && isActiveStatus(this.#run.status) ? this.#run.id : undefined);
    if (!target) return;
    let delay = 500;
    for (;;) {
      try {
        const result = await this.#options.client.stopRun(target);
        this.#stopRetrying = false;
        if (result.run) this.#updateRun(result.run);
        if (this.#error instanceof OutrunApiError && (this.#error.runId === target || this.#error.retryable))
          this.#error = null;
        this.#notify(true);
        if (!this.#follow || runId) await this.sync();
        return;
      } catch (error) {
        if (this.#disposed) return;
        if (error instanceof OutrunApiError && error.retryable) {
          this.#stopRetrying = true;
          this.#notify(true);
          await this.#waitForConnection(delay);
          delay = Math.min(delay * 2, MAX_STOP_RETRY_DELAY_MS);
          continue;
        }
        this.#stopRetrying = false;
        this.#error = asError(error);
        this.#notify(true);
        return;
      }
    }
  }

  /** Waits `ms`, or less when the browser says it is back online. */
  #waitForConnection(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (typeof window !== 'undefined') window.removeEventListener('online', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      if (typeof window !== 'undefined') window.addEventListener('online', done);
    });
  }

  #updateRun(run: RunObject): void {
    this.#runs = this.#runs.some((item) => item.id === run.id)
      ? this.#runs.map((item) => (item.id === run.id ? run : item))
      : [run, ...this.#runs];
    if (!this.#run || this.#run.id === run.id) this.#run = run;
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
      // The runs first: a run that is active now has its assistant message in the message list read after.
      const runs = (await client.listRuns(chatId, { limit: RUNS_PER_LOAD })).items;
      const messages = await client.allMessages(chatId);
      if (generation !== this.#syncGeneration || this.#disposed) return;
      let run = runs.find((candidate) => isActiveStatus(candidate.status)) ?? runs[0] ?? null;
      const message = run
        ? messages.find((candidate) => candidate.id === run!.assistantMessageId)
        : undefined;
      if (run && isActiveStatus(run.status) && message && message.status !== 'streaming') {
        // The run ended between the two reads: its message is final, so read its final status too.
        const settled = await client.getRun(run.id);
        if (generation !== this.#syncGeneration || this.#disposed) return;
        runs.splice(runs.indexOf(run), 1, settled);
        run = settled;
      }
      this.#messages = messages;
      this.#runs = runs;
      if (!this.#live || this.#live.runId !== run?.id || !run || !isActiveStatus(run.status)) this.#run = run;
      this.#loaded = true;
      this.#stale = false;
      if (
        this.#error &&
        !(this.#error instanceof OutrunApiError && this.#error.code === 'run_already_active')
      ) {
        this.#error = null;
      }
      const active = run && isActiveStatus(run.status) ? run : null;
      if (this.#unreadable && this.#unreadable.runId !== active?.id) this.#unreadable = null;
      if (this.#unreadable) {
        // Its stream cannot be applied: each load shows its latest snapshot, and the error stays.
        this.#error = this.#unreadable.error;
      } else if (active && message?.status === 'streaming') {
        if (this.#live?.runId !== active.id) this.#startFollowing(active, message);
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
    // A snapshot's parts are complete through `streamSeq`, a step's end: the stream after it continues them.
    const after = message.streamSeq ?? 0;
    const live: LiveMessage = {
      runId: run.id,
      messageId: message.id,
      projector: MessageProjector.fromParts(after > 0 ? message.parts : []),
    };
    const controller = new AbortController();
    this.#live = live;
    this.#follow = controller;
    this.#spending = null;
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
            // Back online: a banner about the lost connection is stale now.
            if (state.status === 'open' && this.#error instanceof OutrunApiError && this.#error.retryable)
              this.#error = null;
            this.#notify(true);
          },
        });
        for await (const { chunk } of events) {
          if (chunk.type === 'data-run') {
            this.#updateRun((chunk as RunStatusChunk).data);
            this.#notify(true);
          } else if (chunk.type === 'data-budget') {
            // Part of the message, as the server stores it, and what the run has spent so far.
            live.projector.push(chunk);
            this.#spending = (chunk as BudgetChunk).data;
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
        this.#stopFollowing();
        if (error instanceof OutrunApiError) {
          // The stream failed for good: start over from a fresh snapshot, and say why.
          this.#error = error;
          await this.sync();
          this.#error ??= error;
        } else if (this.#recoveredRunId !== run.id) {
          // A chunk could not be applied: a fresh snapshot and its stream get one more try.
          this.#recoveredRunId = run.id;
          await this.sync();
        } else {
          // Again: following it would only fail again, so the run is shown from snapshots and the error stays.
          this.#unreadable = { runId: run.id, error: asError(error) };
          this.#error = this.#unreadable.error;
        }
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
            const latest = (await this.#options.client.listRuns(this.#options.chatId, { limit: 5 })).items;
            const known = new Map(this.#runs.map((run) => [run.id, run]));
            const changed = latest.some((run) => {
              const before = known.get(run.id);
              return (
                !before || before.status !== run.status || before.waiting?.reason !== run.waiting?.reason
              );
            });
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
      const parts = live.projector.parts();
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
    const runs = new Map(this.#runs.map((item) => [item.id, item]));
    if (run) runs.set(run.id, run);
    const queued = this.#runs.filter((item) => item.status === 'queued').reverse();
    let status: ChatRunsStatus;
    if (!this.#loaded) status = 'loading';
    else if (this.#submitting) status = 'submitting';
    else if (this.#follow) status = this.#connection === 'reconnecting' ? 'reconnecting' : 'streaming';
    else status = 'ready';
    this.#snapshot = {
      messages,
      run,
      runs,
      queued,
      status,
      isRunning,
      isStopping: (isRunning && run.stopRequestedAt !== null) || this.#stopRetrying,
      isStopRetrying: this.#stopRetrying,
      spending: isRunning ? this.#spending : null,
      error: this.#error,
    };
    for (const listener of this.#listeners) listener();
  }
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
