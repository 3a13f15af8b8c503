import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { OutrunContext } from '../../app.ts';
import type { Caller } from '../../auth/auth-service.ts';
import { EventsExpiredError, NotFoundError, OutrunError, RunAlreadyActiveError } from '../../errors.ts';
import { ChatAgentMismatchError, type OwnerRead } from '../../runs/run-service.ts';
import type { StartChatRunOptions } from '../../runs/run-engine.ts';
import { readCheckingKey, type DeferredKeyCheck } from '../key-check.ts';
import { newId } from '../../ids.ts';
import { toRunObject, type RunObject } from '../../runs/run-object.ts';
import { isTerminalStatus, RunTrigger } from '../../runs/run-status.ts';
import { withIdempotency } from '../idempotent-route.ts';
import { BudgetSchema, ModelOptionsSchema, MultitaskSchema } from '../../agents/agent-schema.ts';
import type { LogEvent } from '../../stream/event-log.ts';
import type { IdempotencyClaim, IdempotentResponse } from '../../triggers/idempotency.ts';
import { openRunStream, sendRunStream, type RunStreamOptions } from '../sse.ts';
import { isDatabaseUnavailableError } from '../../store/transient.ts';
import { PaginationQuery, parseSequence, requireId } from '../validation.ts';

const TextPart = z.object({ type: z.literal('text'), text: z.string().min(1).max(200_000) }).strict();
/**
 * A file part's URL: `http:` or `https:` (the model's provider downloads it) or `data:` (inline). Any other
 * scheme, or a string that is not a URL, is refused here rather than failing the run once it has begun.
 */
const FileUrl = z
  .url({ protocol: /^(https?|data)$/, error: 'must be an http:, https: or data: URL' })
  .max(1_000_000);
const FilePart = z
  .object({
    type: z.literal('file'),
    mediaType: z.string().min(1).max(200),
    url: FileUrl,
    filename: z.string().max(500).optional(),
  })
  .strict();

/** The largest `metadata` a run keeps. */
const METADATA_MAX_BYTES = 16_384;

export const StartRunBody = z
  .object({
    input: z.union([
      z.object({ text: z.string().min(1, 'input.text must not be empty').max(200_000) }).strict(),
      z
        .object({
          parts: z
            .array(z.discriminatedUnion('type', [TextPart, FilePart]))
            .min(1)
            .max(100),
        })
        .strict(),
    ]),
    model: z.string().min(1).max(200).optional(),
    modelOptions: ModelOptionsSchema.optional(),
    /** When the chat already has an active run: refuse (409), stop it and start this one, or queue behind it. */
    multitask: MultitaskSchema.optional(),
    /** What the run may spend; overrides the agent's. `maxOutputTokens` here is the v1 spelling of `modelOptions.maxOutputTokens`. */
    budget: BudgetSchema.extend({ maxOutputTokens: z.int().min(1).max(1_000_000).optional() })
      .strict()
      .optional(),
    /** Kept on the run as it is, for the caller's own bookkeeping. */
    metadata: z
      .record(z.string().max(100), z.json())
      .refine((value) => JSON.stringify(value).length <= METADATA_MAX_BYTES, {
        message: `metadata must be at most ${METADATA_MAX_BYTES} bytes of JSON`,
      })
      .optional(),
    trigger: z.enum([RunTrigger.user, RunTrigger.api]).optional(),
  })
  .strict();
export type StartRunBody = z.infer<typeof StartRunBody>;

const ChatParams = z.object({ chatId: z.string() });
/** `POST /v1/runs/:runId/approvals`: the answer to one pending tool call. */
export const ApprovalBody = z
  .object({
    approvalId: z.string().min(1).max(200),
    approved: z.boolean(),
    reason: z.string().max(2000).optional(),
  })
  .strict();
/** `POST /v1/runs/:runId/continue`: the raised budget of a run its budget paused. */
export const ContinueBody = z.object({ budget: BudgetSchema }).strict();
export const StopChatBody = z.object({ includeQueued: z.boolean().optional() }).strict().optional();
const RunParams = z.object({ runId: z.string() });
export const RunListQuery = PaginationQuery(20, 100);
export const StreamQuery = z.object({ after: z.unknown().optional() });

export function registerRunRoutes(app: FastifyInstance, context: OutrunContext): void {
  const { chats, runs, engine } = context;

  /**
   * The caller's run, or 404; for a scoped token, only a run of its chat. With a key the server did not check
   * (`request.keyCheck`, on a `deferKeyCheck` route), the read checks the key too (`readCheckingKey`).
   */
  const ownedRun = (caller: Caller, runId: string, keyCheck?: DeferredKeyCheck | null) =>
    readCheckingKey(keyCheck, caller.keyId, async (keyId) => {
      const row = await runs.getForOwner(ownerOf(caller, runId, keyId));
      if (!row) throw new NotFoundError('run', runId);
      return row;
    });

  // The start checks the caller's key in its own statement when this instance knows the key (`deferKeyCheck`).
  app.post('/v1/chats/:chatId/runs', { config: { deferKeyCheck: true } }, async (request, reply) =>
    withIdempotency(
      context.idempotency,
      request,
      reply,
      async (claim) => {
        const chatId = requireId('chat', ChatParams.parse(request.params).chatId);
        const body = StartRunBody.parse(request.body);
        return startAndAnswer(context, request, reply, { chatId, body, claim });
      },
      // A retried streaming start answers as the first one did: the run's stream from event 1.
      {
        replay: (stored) =>
          wantsEventStream(request) ? replayStartStream(context, request, reply, stored) : null,
      },
    ),
  );

  app.get('/v1/chats/:chatId/runs', async (request) => {
    const chatId = requireId('chat', ChatParams.parse(request.params).chatId);
    const query = RunListQuery.parse(request.query);
    if (query.cursor) requireId('run', query.cursor);
    await chats.getRow(request.caller, chatId);
    const rows = await runs.listForChat({ chatId, limit: query.limit + 1, cursor: query.cursor });
    const items = rows.slice(0, query.limit).map(toRunObject);
    return { items, nextCursor: rows.length > query.limit ? items[items.length - 1]!.id : null };
  });

  app.get('/v1/chats/:chatId/runs/latest', async (request) => {
    const chatId = requireId('chat', ChatParams.parse(request.params).chatId);
    await chats.getRow(request.caller, chatId);
    const [row] = await runs.listForChat({ chatId, limit: 1 });
    if (!row) return { run: null, message: null };
    const message = row.assistant_message_id ? await chats.message(row.assistant_message_id) : null;
    return { run: toRunObject(row), message };
  });

  app.post('/v1/chats/:chatId/stop', async (request) => {
    const chatId = requireId('chat', ChatParams.parse(request.params).chatId);
    const body = StopChatBody.parse(request.body);
    await chats.getRow(request.caller, chatId);
    return engine.stopChat(chatId, { includeQueued: body?.includeQueued });
  });

  app.get('/v1/runs/:runId', async (request) => {
    const runId = requireId('run', RunParams.parse(request.params).runId);
    return { run: toRunObject(await ownedRun(request.caller, runId)) };
  });

  app.post('/v1/runs/:runId/stop', async (request) => {
    const runId = requireId('run', RunParams.parse(request.params).runId);
    await ownedRun(request.caller, runId);
    return engine.stopRun(runId);
  });

  app.post('/v1/runs/:runId/approvals', async (request) => {
    const runId = requireId('run', RunParams.parse(request.params).runId);
    const body = ApprovalBody.parse(request.body);
    await ownedRun(request.caller, runId);
    return { run: await engine.answerApproval({ runId, ...body }) };
  });

  app.post('/v1/runs/:runId/continue', async (request) => {
    const runId = requireId('run', RunParams.parse(request.params).runId);
    const body = ContinueBody.parse(request.body);
    await ownedRun(request.caller, runId);
    return { run: await engine.continueRun({ runId, budget: body.budget }) };
  });

  // The ownership read checks the caller's key too when this instance knows the key (`deferKeyCheck`).
  app.get('/v1/runs/:runId/stream', { config: { deferKeyCheck: true } }, async (request, reply) => {
    const runId = requireId('run', RunParams.parse(request.params).runId);
    // The header wins over the query: a browser EventSource reconnects to the same URL with the header.
    const after =
      parseSequence(request.headers['last-event-id'], 'Last-Event-ID') ??
      parseSequence(StreamQuery.parse(request.query).after, 'after') ??
      0;
    return streamOwnedRun(context, request, reply, { runId, after });
  });
}

/**
 * Answers with the stream of a run the caller may read, from the event after `after` (DESIGN §5). The
 * stream's first read checks ownership (and a key this instance did not check) in the same statement: one
 * round trip to a resume's first event. 404 for a run the caller may not read, 410 once its events are gone.
 */
function streamOwnedRun(
  context: OutrunContext,
  request: FastifyRequest,
  reply: FastifyReply,
  options: { runId: string; after: number; headers?: Record<string, string> },
): Promise<void> {
  const { runId } = options;
  const { caller } = request;
  let status: string | undefined;
  return streamRun(context, request, reply, {
    ...options,
    readFirst: (page) =>
      readCheckingKey(request.keyCheck, caller.keyId, async (keyId) => {
        const owned = await context.runs.readOwned({ ...ownerOf(caller, runId, keyId), ...page });
        if (!owned) throw new NotFoundError('run', runId);
        if (owned.eventsDeletedAt)
          throw new EventsExpiredError(runId, new Date(owned.eventsDeletedAt).toISOString());
        status = owned.status;
        return owned.events;
      }),
    ended: async () => status !== undefined && isTerminalStatus(status),
  });
}

/**
 * The replay of a streaming start (`Idempotency-Key`): the stream of the run the first request started, from
 * event 1, replayed and then followed, with the first answer's `x-outrun-run-id`. Null (the stored JSON) when
 * the stored answer holds no run.
 */
function replayStartStream(
  context: OutrunContext,
  request: FastifyRequest,
  reply: FastifyReply,
  stored: { body: unknown },
): (() => Promise<void>) | null {
  const runId = (stored.body as { run?: { id?: unknown } } | null)?.run?.id;
  if (typeof runId !== 'string') return null;
  return () =>
    streamOwnedRun(context, request, reply, { runId, after: 0, headers: { 'x-outrun-run-id': runId } });
}

/**
 * A creating route's start: `201 {run}`, or with `Accept: text/event-stream` (or `alwaysStream`) the run's
 * stream. A stream is subscribed before its run begins, under the id the run will have, so it hears every
 * event live from the first and reads nothing from the log (one round trip less per start). A replay (see
 * `withIdempotency`) does not come here: the route answers it from the stored `{run}`, which the transaction
 * that begins the run stores (`claim`): a request that dies once its run committed has answered.
 */
export async function startAndAnswer(
  context: OutrunContext,
  request: FastifyRequest,
  reply: FastifyReply,
  options: {
    /** The caller's chat, checked by the start (see `startRun`). */
    chatId: string;
    body: StartRunBody;
    /** Answer with the stream whatever the request accepts (useChat's endpoint). */
    alwaysStream?: boolean;
    mapData?: (data: string) => string;
    endAfter?: (event: LogEvent) => boolean;
    /** The request's `Idempotency-Key` claim: the start's answer is stored with its run. */
    claim?: IdempotencyClaim | null;
  },
): Promise<IdempotentResponse> {
  const { claim } = options;
  // The answer below, `201 {run}`, with the run as begun.
  const answerIn: StartInTransaction | undefined = claim
    ? (tx, run) => claim.answerIn(tx, { status: 201, body: { run } })
    : undefined;
  if (!options.alwaysStream && !wantsEventStream(request)) {
    return {
      status: 201,
      body: {
        run: await startRun(context, request, options.chatId, options.body, { inTransaction: answerIn }),
      },
    };
  }
  const runId = newId('run');
  const stream = openRunStream(
    request,
    reply,
    runStreamOptions(context, {
      runId,
      after: 0,
      fresh: true,
      headers: { 'x-outrun-run-id': runId },
      mapData: options.mapData,
      endAfter: options.endAfter,
    }),
  );
  try {
    // A bus that cannot subscribe (Redis down) fails the start before anything is written: a 503.
    await stream.subscribed;
    const run = await startRun(context, request, options.chatId, options.body, {
      runId,
      inTransaction: answerIn,
    });
    return { status: 201, body: { run }, send: stream.send };
  } catch (error) {
    stream.cancel();
    throw error;
  }
}

/**
 * Starts a run on a chat the caller may use; the engine resolves its agent and applies `multitask`. The chat
 * is not read first: the statement that begins the run checks that it is the caller's and has the agent the
 * start assumed (the one this instance saw last, else none), one round trip less on the way to the first
 * token. A wrong agent costs that statement and a second start. When the start fails before its statement
 * checked the chat (a bad model, a quota), the chat is read then, so a missing chat still answers 404 first,
 * and a chat whose agent was not the one assumed gets the answer of its own agent's configuration.
 *
 * A key the server did not check for this request (`request.keyCheck`) is checked by the same statement;
 * whatever the start fails with, the key is authenticated first, so a key that no longer authenticates
 * answers 401 before anything else, as on every route (docs/decisions/0012-key-checked-in-the-statement.md),
 * unless the database did not answer: then a 503 at once (`DeferredKeyCheck.settleBeforeError`).
 */
export async function startRun(
  context: OutrunContext,
  request: FastifyRequest,
  chatId: string,
  body: StartRunBody,
  options: {
    /** The new run's id, when chosen beforehand. */
    runId?: string;
    /** Writes that commit with the run (the key's answer). */
    inTransaction?: StartInTransaction;
  } = {},
): Promise<RunObject> {
  const { runId, inTransaction } = options;
  const { caller, keyCheck } = request;
  const { maxOutputTokens, ...budget } = body.budget ?? {};
  const start = (agentId: string | null) =>
    context.engine.startChatRun({
      runId,
      workspaceId: caller.workspaceId,
      userId: caller.userId,
      chatId,
      agentId,
      checkChat: {
        ownerId: caller.userId,
        keyId: keyCheck && !keyCheck.settled ? caller.keyId : undefined,
      },
      parts: 'text' in body.input ? [{ type: 'text', text: body.input.text }] : body.input.parts,
      trigger: body.trigger ?? RunTrigger.api,
      overrides: {
        model: body.model,
        modelOptions:
          maxOutputTokens === undefined ? body.modelOptions : { maxOutputTokens, ...body.modelOptions },
        budget: body.budget ? budget : undefined,
        multitask: body.multitask,
      },
      metadata: body.metadata,
      inTransaction,
    });
  const assumed = context.chats.agentOf(chatId) ?? null;
  try {
    const run = await start(assumed);
    keyCheck?.checkedByStatement();
    return run;
  } catch (error) {
    if (error instanceof ChatAgentMismatchError) {
      // The statement checks the key before the chat's agent.
      keyCheck?.checkedByStatement();
      context.chats.rememberAgent(chatId, error.agentId);
      return start(error.agentId);
    }
    await keyCheck?.settleBeforeError(error);
    // The statement checked the chat, or the database did not answer it (and would not answer the read below
    // either): its answer stands.
    if (
      isChatNotFound(error) ||
      error instanceof RunAlreadyActiveError ||
      isDatabaseUnavailableError(error)
    ) {
      throw error;
    }
    const chat = await context.chats.getRow(caller, chatId);
    if (chat.agent_id !== assumed) return start(chat.agent_id);
    throw error;
  }
}

/** Writes a start joins to the transaction that begins its run (`BeginRunOptions.inTransaction`). */
type StartInTransaction = NonNullable<StartChatRunOptions['inTransaction']>;

const isChatNotFound = (error: unknown) => error instanceof OutrunError && error.code === 'chat_not_found';

export function wantsEventStream(request: FastifyRequest): boolean {
  return (request.headers.accept ?? '').includes('text/event-stream');
}

/** Answers with a run's stream from the event after `after` (DESIGN §5). */
export function streamRun(
  context: OutrunContext,
  request: FastifyRequest,
  reply: FastifyReply,
  options: StreamRunOptions,
): Promise<void> {
  return sendRunStream(request, reply, runStreamOptions(context, options));
}

/** What a route says of its stream; `runStreamOptions` adds the server's parts (see `RunStreamOptions`). */
type StreamRunOptions = Pick<
  RunStreamOptions,
  'runId' | 'fresh' | 'headers' | 'mapData' | 'endAfter' | 'readFirst' | 'firstPage'
> & {
  after: number;
  /**
   * Whether the run was terminal when the route looked (final: it spares a look-up). Asked only once the
   * access check has resolved.
   */
  ended?: () => Promise<boolean>;
};

/** A route's stream options, completed with the server's log, keep-alive, metrics and the run's status look-up. */
function runStreamOptions(context: OutrunContext, options: StreamRunOptions): RunStreamOptions {
  const { ended, ...streamOptions } = options;
  return {
    ...streamOptions,
    log: context.log,
    keepAliveMs: context.config.keepAliveMs,
    metrics: context.metrics,
    isFinished: async () => {
      if (await ended?.()) return true;
      const row = await context.runs.get(options.runId);
      return !row || isTerminalStatus(row.status);
    },
  };
}

/** A read of `runId` as `caller` may see it (`RunService.getForOwner`), checking `keyId` when given. */
function ownerOf(caller: Caller, runId: string, keyId: string | undefined): OwnerRead {
  return {
    runId,
    workspaceId: caller.workspaceId,
    userId: caller.userId,
    keyId,
    chatId: caller.token?.chatId,
  };
}
