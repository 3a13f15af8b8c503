/**
 * Errors Outrun shows to callers. Each has a stable snake_case `code` and the HTTP status it maps to;
 * `details` are merged into the error body next to `code` and `message`. The HTTP layer maps these in
 * one place (`src/http/error-mapper.ts`); anything else becomes a 500 `internal_error` with no stack.
 */
export class OutrunError extends Error {
  readonly code: string;
  readonly status: number;
  readonly details: Record<string, unknown>;

  constructor(options: { code: string; status: number; message: string; details?: Record<string, unknown> }) {
    super(options.message);
    this.name = new.target.name;
    this.code = options.code;
    this.status = options.status;
    this.details = options.details ?? {};
  }
}

export class InvalidRequestError extends OutrunError {
  constructor(message: string, details?: Record<string, unknown>, code = 'invalid_request') {
    super({ code, status: 400, message, details });
  }
}

export class UnauthorizedError extends OutrunError {
  constructor(message = 'A valid API key is required: send `Authorization: Bearer <key>`.') {
    super({ code: 'unauthorized', status: 401, message });
  }
}

export class ForbiddenError extends OutrunError {
  constructor(message = 'This route needs an admin API key.') {
    super({ code: 'forbidden', status: 403, message });
  }
}

export class NotFoundError extends OutrunError {
  constructor(resource: 'chat' | 'run' | 'workspace' | 'agent' | 'route', id?: string) {
    super({
      code: `${resource}_not_found`,
      status: 404,
      message: id ? `No ${resource} with id ${id}.` : `No such ${resource}.`,
    });
  }
}

export class RunAlreadyActiveError extends OutrunError {
  constructor(runId: string) {
    super({
      code: 'run_already_active',
      status: 409,
      message: 'A run is already active on this chat; follow it or stop it first.',
      details: { runId },
    });
  }
}

export class ConflictError extends OutrunError {
  constructor(code: string, message: string, details?: Record<string, unknown>) {
    super({ code, status: 409, message, details });
  }
}

/** A model id the server cannot serve: unknown provider, or a provider without its API key. */
export class ModelUnavailableError extends OutrunError {
  constructor(message: string, details?: Record<string, unknown>) {
    super({ code: 'model_unavailable', status: 400, message, details });
  }
}
