import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { OutrunContext } from '../../app.ts';
import type { ScopedToken } from '../../protocol/credentials.ts';
import { MAX_TOKEN_TTL_SECONDS } from '../../auth/scoped-tokens.ts';
import { TokenScope } from '../../protocol/credentials.ts';
import { requireId } from '../validation.ts';

/** How long a scoped token lives when the request does not say. */
const DEFAULT_TOKEN_TTL_SECONDS = 3_600;

export const CreateTokenBody = z
  .object({
    chatId: z.string().min(1),
    scopes: z
      .array(z.enum([TokenScope.read, TokenScope.write]))
      .min(1)
      .max(2),
    ttlSeconds: z.int().min(1).max(MAX_TOKEN_TTL_SECONDS).default(DEFAULT_TOKEN_TTL_SECONDS),
  })
  .strict();

/** Scoped tokens for browsers (DESIGN §4): one chat, read or read-and-write, at most a day. */
export function registerTokenRoutes(app: FastifyInstance, context: OutrunContext): void {
  app.post('/v1/tokens', async (request, reply) => {
    const body = CreateTokenBody.parse(request.body);
    requireId('chat', body.chatId);
    const issued = await context.auth.issueToken(request.caller, body);
    const token: ScopedToken = { ...issued, chatId: body.chatId, scopes: [...new Set(body.scopes)] };
    return reply.status(201).send(token);
  });
}
