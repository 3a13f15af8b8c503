import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { OutrunContext } from '../../app.ts';
import { requireId } from '../validation.ts';

export const CreateWorkspaceBody = z.object({ name: z.string().trim().min(1).max(200) });
export const CreateUserBody = z.object({
  workspaceId: z.string().min(1),
  email: z.email().max(320),
  role: z.enum(['admin', 'member']).optional(),
});

export function registerAdminRoutes(app: FastifyInstance, context: OutrunContext): void {
  app.get('/v1/me', async (request) => context.auth.me(request.caller));

  app.post('/v1/admin/workspaces', async (request, reply) => {
    context.auth.requireAdmin(request.caller);
    const body = CreateWorkspaceBody.parse(request.body);
    return reply.status(201).send({ workspace: await context.auth.createWorkspace(body.name) });
  });

  app.post('/v1/admin/users', async (request, reply) => {
    context.auth.requireAdmin(request.caller);
    const body = CreateUserBody.parse(request.body);
    requireId('workspace', body.workspaceId);
    return reply.status(201).send(await context.auth.createUser(body));
  });
}
