import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { OutrunContext } from '../../app.ts';
import { requireId } from '../validation.ts';

const ListQuery = z.object({ userId: z.string().optional() });
const CreateBody = z.object({ name: z.string().trim().min(1).max(200) }).strict();
const KeyParams = z.object({ keyId: z.string() });

/** API keys (DESIGN §4): list, create (the key is shown once), revoke (at once, on every instance). */
export function registerApiKeyRoutes(app: FastifyInstance, context: OutrunContext): void {
  const { auth } = context;

  app.get('/v1/api-keys', async (request) => {
    const { userId } = ListQuery.parse(request.query);
    if (userId !== undefined) requireId('user', userId);
    return { items: await auth.listApiKeys(request.caller, { userId }) };
  });

  app.post('/v1/api-keys', async (request, reply) => {
    const body = CreateBody.parse(request.body);
    return reply.status(201).send(await auth.createApiKey(request.caller, body));
  });

  app.delete('/v1/api-keys/:keyId', async (request) => {
    const keyId = requireId('key', KeyParams.parse(request.params).keyId);
    return { apiKey: await auth.revokeApiKey(request.caller, keyId) };
  });
}
