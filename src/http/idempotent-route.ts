import type { FastifyReply, FastifyRequest } from 'fastify';
import type { IdempotencyKeys, IdempotentResponse } from '../triggers/idempotency.ts';

/**
 * Runs a creating route's handler under the request's `Idempotency-Key` header (if any) and sends its
 * answer. The handler returns its status and JSON body instead of sending them; a streaming handler also
 * returns `send`, used for the first response only: a replay answers the stored JSON (`201 {run}`) with
 * the header `Idempotent-Replayed: true`.
 */
export async function withIdempotency(
  idempotency: IdempotencyKeys,
  request: FastifyRequest,
  reply: FastifyReply,
  handler: () => Promise<IdempotentResponse>,
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
  if (result.replayed) void reply.header('idempotent-replayed', 'true');
  else if (result.send) return result.send();
  return reply.status(result.status).send(result.body);
}
