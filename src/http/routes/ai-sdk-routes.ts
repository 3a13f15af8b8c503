import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { OutrunContext } from '../../app.ts';
import { ConflictError, InvalidRequestError, NotFoundError } from '../../errors.ts';
import type { RunObject, RunWaiting } from '../../protocol/run.ts';
import type { RunRow } from '../../store/schema.ts';
import type { LogEvent } from '../../stream/event-log.ts';
import { FIRST_PAGE } from '../../stream/run-follower.ts';
import { isId } from '../../ids.ts';
import { approvalAlreadyAnswered, findApprovalAnswer } from '../../runs/approval-answer.ts';
import { RunTrigger } from '../../runs/run-status.ts';
import { withIdempotency } from '../idempotent-route.ts';
import { readCheckingKey } from '../key-check.ts';
import { requireId } from '../validation.ts';
import { StartRunBody, startAndAnswer, streamRun } from './run-routes.ts';

/**
 * The request body `useChat` (`@ai-sdk/react`) sends through `DefaultChatTransport`: the chat id, the
 * messages it holds, and what triggered the request. Outrun keeps the history itself, so only the last
 * message (the user's new turn) is used. Of the fields a transport's `body` option adds, `model`,
 * `multitask` and `budget` pass on to the run and any other is refused (400), never silently dropped; the
 * messages keep every field useChat gives them.
 */
export const UseChatBody = z
  .object({
    id: z.string().min(1).max(200),
    messages: z
      .array(z.looseObject({ role: z.string(), parts: z.array(z.looseObject({ type: z.string() })) }))
      .min(1, 'messages must hold the new user message'),
    trigger: z.enum(['submit-message', 'regenerate-message']).optional(),
    messageId: z.string().optional(),
    model: StartRunBody.shape.model,
    multitask: StartRunBody.shape.multitask,
    budget: StartRunBody.shape.budget,
  })
  .strict();

const ChatParams = z.object({ chatId: z.string() });

/** useChat sends the whole history with every request; this route accepts more than the default body limit. */
const USE_CHAT_BODY_LIMIT_FACTOR = 8;

/**
 * AI SDK `useChat` compatibility (v6 UI message streams, `@ai-sdk/react` v3):
 *
 * - `POST /v1/ui/chats` starts a run for the last user message of the `useChat` body (whose `id` is an
 *   Outrun chat id) and answers with its stream;
 * - `GET /v1/ui/chats/:chatId/stream` is the resume endpoint `useChat({ resume: true })` calls: 204 when
 *   the chat has no active run, else the active run's stream replayed from its first event.
 *
 * These paths fit `DefaultChatTransport({ api: '<base>/v1/ui/chats' })` with no other option: its default
 * reconnect URL is `${api}/${chatId}/stream`. The stream is the run's stream with its `data-run` lifecycle
 * chunks marked `transient`, so useChat hands them to `onData` and never adds them to the message.
 */
export function registerAiSdkRoutes(app: FastifyInstance, context: OutrunContext): void {
  const { chats, runs } = context;

  app.post(
    '/v1/ui/chats',
    // A start checks the caller's key in its own statement (`deferKeyCheck`); an answer to approvals first
    // authenticates it.
    {
      bodyLimit: context.config.bodyLimitBytes * USE_CHAT_BODY_LIMIT_FACTOR,
      config: { deferKeyCheck: true },
    },
    async (request, reply) =>
      withIdempotency(context.idempotency, request, reply, async (claim) => {
        const body = UseChatBody.parse(request.body);
        if (!isId('chat', body.id)) {
          throw new InvalidRequestError(
            `"${body.id.slice(0, 80)}" is not an Outrun chat id: create a chat with POST /v1/chats and pass its id to useChat({ id }).`,
            {},
            'invalid_id',
          );
        }
        const last = body.messages[body.messages.length - 1]!;
        // `addToolApprovalResponse` + `sendAutomaticallyWhen`: the assistant message comes back answered.
        const answers = last.role === 'assistant' ? approvalAnswersOf(last.parts) : [];
        if (answers.length > 0) {
          await request.keyCheck?.verify();
          const chat = await chats.getRow(request.caller, body.id);
          const active = await runs.findActive(chat.id);
          if (!active) throw await unasked(context, chat.id, answers, null);
          const after = await context.log.lastSeq(active.id);
          const pending = new Set(
            ((active.waiting as RunWaiting | null)?.reason === 'approval'
              ? (active.waiting as Extract<RunWaiting, { reason: 'approval' }>).approvals
              : []
            )
              .filter((approval) => approval.approved === undefined)
              .map((approval) => approval.approvalId),
          );
          let run: RunObject | null = null;
          for (const answer of answers.filter((candidate) => pending.has(candidate.approvalId))) {
            run = await context.engine.answerApproval({ runId: active.id, ...answer });
          }
          if (!run) throw await unasked(context, chat.id, answers, active);
          // The assistant message goes on where the client has it: only the events after the answer.
          const send = () =>
            streamRun(context, request, reply, {
              runId: active.id,
              after,
              headers: { 'x-outrun-run-id': active.id },
              mapData: toUseChatChunk,
              endAfter: isWaitingEvent,
            });
          return { status: 200, body: { run }, send };
        }
        if (last.role !== 'user') {
          throw new InvalidRequestError(
            'The last message must be the user message to answer.',
            {},
            'invalid_request',
          );
        }
        const parts = last.parts.filter((part) => part.type === 'text' || part.type === 'file');
        const start = StartRunBody.parse({
          input: { parts: parts.map(inputPart) },
          model: body.model,
          multitask: body.multitask,
          budget: body.budget,
          trigger: RunTrigger.user,
        });
        // A replay answers `201 {run}` as JSON; useChat's resume endpoint follows the run from there.
        return startAndAnswer(context, request, reply, {
          chatId: body.id,
          body: start,
          alwaysStream: true,
          mapData: toUseChatChunk,
          endAfter: isWaitingEvent,
          claim,
        });
      }),
  );

  app.get('/v1/ui/chats/:chatId/stream', { config: { deferKeyCheck: true } }, async (request, reply) => {
    const chatId = requireId('chat', ChatParams.parse(request.params).chatId);
    // The chat's ownership (and the caller's key, when this instance knows it: `deferKeyCheck`), its active run,
    // that run's last event and the stream's first page, in one statement.
    const { caller } = request;
    const chat = await readCheckingKey(request.keyCheck, caller.keyId, async (keyId) => {
      const found = await runs.activeOfOwnedChat({
        chatId,
        workspaceId: caller.workspaceId,
        userId: caller.userId,
        keyId,
        firstPage: FIRST_PAGE,
      });
      if (!found) throw new NotFoundError('chat', chatId);
      return found;
    });
    chats.rememberAgent(chatId, chat.agentId);
    const active = chat.run;
    if (!active) return reply.status(204).send();
    // The response ends where the run waits, as the one that started it did: a waiting run is replayed up
    // to now; a running one is followed until it next starts waiting (an earlier wait was answered).
    const now = active.lastSeq;
    const waiting = active.status === 'waiting';
    // Replayed from the first event: useChat rebuilds the message from `start`, so its text shows once.
    return streamRun(context, request, reply, {
      runId: active.id,
      after: 0,
      firstPage: active.firstEvents,
      headers: { 'x-outrun-run-id': active.id },
      mapData: toUseChatChunk,
      endAfter: (event) => (waiting ? event.seq >= now : event.seq > now && isWaitingEvent(event)),
    });
  });
}

/**
 * A `useChat` response ends when its run starts waiting: the client is then `ready`, and an approval
 * answered with `addToolApprovalResponse` is sent back (`sendAutomaticallyWhen`) to continue the run.
 */
function isWaitingEvent(event: LogEvent): boolean {
  if (!event.data.includes('"waiting"')) return false;
  const chunk = JSON.parse(event.data) as { type?: unknown; data?: { status?: unknown } };
  return chunk.type === 'data-run' && chunk.data?.status === 'waiting';
}

/** The approval answers in an assistant message's tool parts (state `approval-responded`). */
/** How many of a chat's latest runs a repeated approval answer is looked for in. */
const ANSWERED_LOOKBACK_RUNS = 10;

/**
 * The error for approval answers the chat's active run does not ask for, as `POST /v1/runs/:runId/approvals`
 * answers them: one the chat's recent runs had answered is `409 approval_already_answered` with its `approved`;
 * otherwise `404 approval_not_found` while the active run waits for an approval, `409 run_not_waiting` when it
 * does not (or there is none).
 */
async function unasked(
  context: OutrunContext,
  chatId: string,
  answers: { approvalId: string }[],
  active: RunRow | null,
): Promise<Error> {
  const recent = await context.runs.listForChat({ chatId, limit: ANSWERED_LOOKBACK_RUNS });
  for (const { approvalId } of answers) {
    for (const run of recent) {
      const earlier = await findApprovalAnswer({ log: context.log, runId: run.id, approvalId });
      if (earlier) return approvalAlreadyAnswered(earlier);
    }
  }
  if ((active?.waiting as RunWaiting | null)?.reason === 'approval') {
    return new NotFoundError('approval', answers[0]!.approvalId);
  }
  return new ConflictError('run_not_waiting', 'This chat has no run waiting for an approval.');
}

function approvalAnswersOf(
  parts: Record<string, unknown>[],
): { approvalId: string; approved: boolean; reason?: string }[] {
  const answers: { approvalId: string; approved: boolean; reason?: string }[] = [];
  for (const part of parts) {
    const approval = part.approval as { id?: unknown; approved?: unknown; reason?: unknown } | undefined;
    if (part.state !== 'approval-responded' || typeof approval?.id !== 'string') continue;
    if (typeof approval.approved !== 'boolean') continue;
    answers.push({
      approvalId: approval.id,
      approved: approval.approved,
      ...(typeof approval.reason === 'string' ? { reason: approval.reason } : {}),
    });
  }
  return answers;
}

/** The fields of a text or file part that a run takes as input. */
function inputPart(part: Record<string, unknown>): Record<string, unknown> {
  if (part.type === 'text') return { type: 'text', text: part.text };
  return { type: 'file', mediaType: part.mediaType, url: part.url, filename: part.filename };
}

/** Marks a `data-run` chunk transient; every other chunk passes through as the log holds it. */
export function toUseChatChunk(data: string): string {
  if (!data.includes('"data-run"')) return data;
  const chunk = JSON.parse(data) as { type?: unknown };
  return chunk.type === 'data-run' ? JSON.stringify({ ...chunk, transient: true }) : data;
}
