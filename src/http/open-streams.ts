import type { Logger } from 'pino';
import { BusChannel, type Bus } from '../bus/bus.ts';

/** How long a shutdown waits for the streams it ended to finish writing. */
const CLOSE_ALL_WAIT_MS = 1_000;

/** How often open streams' keys are re-checked against the database, for revocations the bus missed. */
export const DEFAULT_STREAM_RECHECK_MS = 2_000;

interface OpenStream {
  close: () => void;
  /** When the scoped token that opened the stream expires; the stream closes then. */
  expiresAt?: Date;
}

/**
 * The SSE streams this instance serves, by the API key that authorized them (directly, or by issuing their
 * scoped token). A revoked key's streams close when the bus announces the revocation, and at the latest at
 * the next periodic re-check, so a bus outage delays closing by one interval instead of forever.
 */
export class OpenStreams {
  private readonly byKey = new Map<string, Set<OpenStream>>();
  /** Every stream until it has ended, closed ones included (`closeAll` waits for them). */
  private readonly all = new Set<OpenStream>();
  /** Resolves `closeAll`'s wait once the last stream has ended. */
  private drained: (() => void) | null = null;
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;

  constructor(
    private readonly options: {
      bus: Bus;
      logger: Logger;
      /** Of the given key ids, those that no longer authenticate. */
      invalidKeyIds: (keyIds: string[]) => Promise<string[]>;
      /** @default DEFAULT_STREAM_RECHECK_MS */
      recheckMs?: number;
    },
  ) {}

  /** Tracks a stream; returns the function that forgets it (call it when the stream ends). */
  register(keyId: string, stream: OpenStream): () => void {
    let streams = this.byKey.get(keyId);
    if (!streams) this.byKey.set(keyId, (streams = new Set()));
    streams.add(stream);
    this.all.add(stream);
    return () => {
      this.all.delete(stream);
      if (this.all.size === 0) this.drained?.();
      streams.delete(stream);
      if (streams.size === 0 && this.byKey.get(keyId) === streams) this.byKey.delete(keyId);
    };
  }

  /** The number of open streams (for tests and metrics). */
  get size(): number {
    let count = 0;
    for (const streams of this.byKey.values()) count += streams.size;
    return count;
  }

  /** Closes every stream `keyId` authorized. */
  closeKey(keyId: string): void {
    const streams = this.byKey.get(keyId);
    if (!streams) return;
    this.byKey.delete(keyId);
    for (const stream of streams) stream.close();
  }

  /**
   * Ends every stream (a shutdown, once this instance handed its runs back): each ends cleanly, without
   * `[DONE]`, which tells its reader to reconnect with `Last-Event-ID`, here or on another instance. Resolves
   * once every stream has ended, or after `waitMs`.
   */
  async closeAll(waitMs = CLOSE_ALL_WAIT_MS): Promise<void> {
    for (const keyId of [...this.byKey.keys()]) this.closeKey(keyId);
    if (this.all.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => (this.drained = resolve)),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs))),
    ]);
    clearTimeout(timer);
    this.drained = null;
  }

  /** Subscribes to revocations and starts the periodic re-check. */
  async start(): Promise<void> {
    const recheckMs = this.options.recheckMs ?? DEFAULT_STREAM_RECHECK_MS;
    this.timer = setInterval(() => void this.recheck(), recheckMs);
    this.timer.unref();
    try {
      this.unsubscribe = await this.options.bus.subscribe(BusChannel.apiKeyRevoked, ({ keyId }) =>
        this.closeKey(keyId),
      );
    } catch (error) {
      this.options.logger.warn(
        { err: error },
        'could not subscribe to key revocations; open streams are re-checked periodically',
      );
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.unsubscribe?.().catch(() => undefined);
  }

  /** Closes streams whose key was revoked (or user removed) and streams whose token expired. */
  async recheck(): Promise<void> {
    const now = Date.now();
    for (const [keyId, streams] of this.byKey) {
      for (const stream of streams) {
        if (stream.expiresAt && stream.expiresAt.getTime() <= now) {
          streams.delete(stream);
          stream.close();
        }
      }
      if (streams.size === 0) this.byKey.delete(keyId);
    }
    if (this.byKey.size === 0) return;
    try {
      for (const keyId of await this.options.invalidKeyIds([...this.byKey.keys()])) this.closeKey(keyId);
    } catch (error) {
      this.options.logger.warn({ err: error }, 'could not re-check the keys of open streams');
    }
  }
}
