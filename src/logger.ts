import pino, { type Logger, type LevelWithSilent } from 'pino';
import pretty from 'pino-pretty';

export interface CreateLoggerOptions {
  /** @default 'info' */
  level?: LevelWithSilent;
  /** `json`: one JSON line per event; `pretty`: one readable line. @default pretty on a terminal, else JSON */
  format?: 'json' | 'pretty';
  /** Where lines go. @default standard output */
  destination?: NodeJS.WritableStream;
}

/** The log format for this process: `LOG_FORMAT` when set, else pretty on a terminal and JSON otherwise. */
export function defaultLogFormat(format?: 'json' | 'pretty'): 'json' | 'pretty' {
  return format ?? (process.stdout.isTTY ? 'pretty' : 'json');
}

interface SerializedError {
  type: string;
  message: string;
  code?: string;
  stack?: string;
}

/**
 * An error as one log field: its type, message and code (in pretty mode one string). The stack is kept only in JSON at `debug` or
 * below, as one string field (JSON escapes its newlines), so no log line ever spans several lines.
 */
function errorSerializer(format: 'json' | 'pretty', withStack: boolean) {
  return (error: unknown): SerializedError | string | unknown => {
    if (!(error instanceof Error)) return error;
    const code = (error as { code?: unknown }).code;
    const cause = error.cause instanceof Error ? `; cause: ${error.cause.message}` : '';
    if (format === 'pretty') {
      return `${error.name}: ${error.message}${cause}${code !== undefined ? ` (${String(code)})` : ''}`;
    }
    return {
      type: error.name,
      message: `${error.message}${cause}`,
      ...(typeof code === 'string' || typeof code === 'number' ? { code: String(code) } : {}),
      ...(withStack && error.stack ? { stack: error.stack } : {}),
    };
  };
}

/** The server's logger: pretty single lines on a terminal, JSON lines elsewhere (DESIGN §7, `LOG_FORMAT`). */
export function createLogger(options: CreateLoggerOptions = {}): Logger {
  const level = options.level ?? 'info';
  const format = defaultLogFormat(options.format);
  const verbose = level === 'debug' || level === 'trace';
  const serialize = errorSerializer(format, format === 'json' && verbose);
  const base = { level, serializers: { err: serialize, error: serialize } };
  if (format === 'json') {
    return options.destination ? pino(base, options.destination) : pino(base);
  }
  // A synchronous stream: lines written just before a fatal exit are not lost in a worker thread.
  const stream = pretty({
    sync: true,
    singleLine: true,
    colorize: options.destination ? false : process.stdout.isTTY,
    // The error (one string, from the serializer above) joins the message line: pino-pretty would print
    // its error keys on lines of their own.
    ignore: 'pid,hostname,err,error',
    messageFormat: (log, messageKey) => {
      const error = log.err ?? log.error;
      const message = String(log[messageKey] ?? '');
      return error === undefined
        ? message
        : `${message} — ${typeof error === 'string' ? error : JSON.stringify(error)}`;
    },
    translateTime: 'SYS:HH:MM:ss.l',
    destination: options.destination ?? process.stdout,
  });
  return pino(base, stream);
}

/**
 * Lets a log line that an outage repeats (one per reconnect, one per event batch) through at most once per
 * `intervalMs`, and counts the ones it held back.
 */
export class LogEvery {
  readonly #intervalMs: number;
  #lastAt = -Infinity;
  #held = 0;

  constructor(intervalMs: number) {
    this.#intervalMs = intervalMs;
  }

  /** When this line may go: how many were held back since the last one that went; else null (hold it). */
  take(now = Date.now()): number | null {
    if (now - this.#lastAt < this.#intervalMs) {
      this.#held += 1;
      return null;
    }
    const held = this.#held;
    this.#lastAt = now;
    this.#held = 0;
    return held;
  }
}
