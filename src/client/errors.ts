/**
 * An error answered by the Outrun API (`{"error": {"code", "message", …}}`), or a request that could not
 * reach it at all (`status: 0`, `code: "network_error"`).
 */
export class OutrunApiError extends Error {
  /** HTTP status; 0 when the server could not be reached. */
  readonly status: number;
  /** Stable snake_case error code, such as `run_already_active`, `unauthorized`, `chat_not_found`. */
  readonly code: string;
  /** For `409 run_already_active`: the run that is active on the chat. */
  readonly runId: string | undefined;
  /** Every field of the error body besides `code` and `message`. */
  readonly details: Record<string, unknown>;

  constructor(options: {
    status: number;
    code: string;
    message: string;
    details?: Record<string, unknown>;
    cause?: unknown;
  }) {
    super(options.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'OutrunApiError';
    this.status = options.status;
    this.code = options.code;
    this.details = options.details ?? {};
    this.runId = typeof this.details.runId === 'string' ? this.details.runId : undefined;
  }

  /** Whether retrying the same request later may succeed: no connection, a timeout, 429 or a 5xx. */
  get retryable(): boolean {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }

  /** Builds the error from a non-2xx response, reading its JSON error body when there is one. */
  static async fromResponse(response: Response): Promise<OutrunApiError> {
    let body: unknown;
    try {
      const text = await response.text();
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    const error = (body as { error?: Record<string, unknown> } | undefined)?.error;
    if (error && typeof error.code === 'string') {
      const { code, message, ...details } = error;
      return new OutrunApiError({
        status: response.status,
        code,
        message: typeof message === 'string' ? message : `Request failed with status ${response.status}.`,
        details,
      });
    }
    return new OutrunApiError({
      status: response.status,
      code: response.status >= 500 ? 'server_error' : 'http_error',
      message: `Request failed with status ${response.status}${response.statusText ? ` ${response.statusText}` : ''}.`,
    });
  }

  static network(cause: unknown): OutrunApiError {
    return new OutrunApiError({
      status: 0,
      code: 'network_error',
      message: 'Could not reach the Outrun server.',
      cause,
    });
  }
}

/** Whether `error` is the abort of a request or a wait (by `AbortController.abort()`). */
export function isAbortError(error: unknown): boolean {
  return (
    typeof error === 'object' &&
    error !== null &&
    'name' in error &&
    ((error as { name: unknown }).name === 'AbortError' ||
      (error as { name: unknown }).name === 'TimeoutError')
  );
}
