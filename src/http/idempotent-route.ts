import type { FastifyReply, FastifyRequest } from 'fastify';
import type { IdempotencyClaim, IdempotencyKeys, IdempotentResponse } from '../triggers/idempotency.ts';

/**
 * How a route answers a replay itself, from the first response's stored status and JSON body: a function that
 * sends the answer, or null for the stored JSON.
 */
export type ReplayAnswer = (stored: { status: number; body: unknown }) => (() => Promise<unknown>) | null;

/**
 * Runs a creating route's handler under the request's `Idempotency-Key` header (if any) and sends its
 * answer. The handler returns its status and JSON body instead of sending them; a streaming handler also
 * returns `send`, used for the first response only. A handler that creates in a transaction stores its answer
 * there, with the claim it is given (`IdempotencyClaim.answerIn`; null without a key). A replay answers the
 * stored JSON (`201 {run}`), or what `options.replay` makes of it (a retried streaming start: the run's
 * stream), with the header `Idempotent-Replayed: true`.
 */
export async function withIdempotency(
  idempotency: IdempotencyKeys,
  request: FastifyRequest,
  reply: FastifyReply,
  handler: (claim: IdempotencyClaim | null) => Promise<IdempotentResponse>,
  options: {
    /** Answers a replay other than with the stored JSON. @default the stored JSON */
    replay?: ReplayAnswer;
  } = {},
): Promise<unknown> {
  const header = request.headers['idempotency-key'];
  const result = await idempotency.run(
    {
      workspaceId: request.caller.workspaceId,
      userId: request.caller.userId,
      key: Array.isArray(header) ? header[0] : header,
      method: request.method,
      path: request.url.split('?')[0]!,
      body: request.body,
    },
    handler,
  );
  if (result.replayed) {
    void reply.header('idempotent-replayed', 'true');
    const send = options.replay?.({ status: result.status, body: result.body });
    if (send) return send();
  } else if (result.send) return result.send();
  return reply.status(result.status).send(result.body);
}
