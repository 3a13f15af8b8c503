import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { OutrunContext } from '../../app.ts';
import { requireId } from '../validation.ts';

const Quota = z
  .object({
    tokensPerDay: z.int().min(0).optional(),
    costUsdPerDay: z.number().min(0).optional(),
    runsPerMinute: z.int().min(0).optional(),
  })
  .strict();
const WorkspaceName = z.string().trim().min(1).max(200);
const CreateWorkspaceBody = z.object({ name: WorkspaceName, quota: Quota.nullable().optional() }).strict();
const UpdateWorkspaceBody = z
  .object({ name: WorkspaceName.optional(), quota: Quota.nullable().optional() })
  .strict();
const WorkspaceParams = z.object({ workspaceId: z.string() });
const CreateUserBody = z
  .object({
    workspaceId: z.string().min(1),
    email: z.email().max(320),
    role: z.enum(['admin', 'member']).optional(),
  })
  .strict();
const UserParams = z.object({ userId: z.string() });

/**
 * Identity and administration (DESIGN §4): the owner manages workspaces; the owner or a workspace's admin
 * manages that workspace's users.
 */
export function registerAdminRoutes(app: FastifyInstance, context: OutrunContext): void {
  const { auth } = context;

  app.get('/v1/me', async (request) => {
    auth.requireApiKey(request.caller);
    return auth.me(request.caller);
  });

  app.post('/v1/admin/workspaces', async (request, reply) => {
    auth.requireOwner(request.caller);
    const body = CreateWorkspaceBody.parse(request.body);
    return reply.status(201).send({ workspace: await auth.createWorkspace(request.caller, body) });
  });

  app.patch('/v1/admin/workspaces/:workspaceId', async (request) => {
    auth.requireOwner(request.caller);
    const workspaceId = requireId('workspace', WorkspaceParams.parse(request.params).workspaceId);
    const body = UpdateWorkspaceBody.parse(request.body ?? {});
    return { workspace: await auth.updateWorkspace(request.caller, workspaceId, body) };
  });

  app.post('/v1/admin/users', async (request, reply) => {
    auth.requireAdmin(request.caller);
    const body = CreateUserBody.parse(request.body);
    requireId('workspace', body.workspaceId);
    return reply.status(201).send(await auth.createUser(request.caller, body));
  });

  app.delete('/v1/admin/users/:userId', async (request, reply) => {
    auth.requireAdmin(request.caller);
    const userId = requireId('user', UserParams.parse(request.params).userId);
    await auth.removeUser(request.caller, userId);
    return reply.status(204).send();
  });
}
