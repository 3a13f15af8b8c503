import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { QuotaService } from '../../quotas/quota-service.ts';
import { WorkspaceQuotaSchema } from '../../quotas/quota-service.ts';
import type { AuthService } from '../../auth/auth-service.ts';
import type { QuotaReport } from '../../protocol/workspace.ts';

export const UpdateQuotaBody = z.object({ quota: WorkspaceQuotaSchema.nullable() }).strict();

/**
 * The caller's workspace quota: `GET` for anyone in the workspace (with today's usage and what is left),
 * `PATCH {quota}` for its admins. `{quota: null}` removes every limit.
 */
export function registerQuotaRoutes(
  app: FastifyInstance,
  context: { quotas: QuotaService; auth: Pick<AuthService, 'requireAdmin'> },
): void {
  const describe = async (workspaceId: string): Promise<QuotaReport> => {
    const [quota, usage, remaining] = await Promise.all([
      context.quotas.get(workspaceId),
      context.quotas.usage(workspaceId),
      context.quotas.remaining(workspaceId),
    ]);
    return { quota, usage, remaining, resetsInSeconds: context.quotas.secondsToReset() };
  };

  app.get('/v1/workspaces/current/quota', async (request) => describe(request.caller.workspaceId));

  app.patch('/v1/workspaces/current/quota', async (request) => {
    context.auth.requireAdmin(request.caller);
    const body = UpdateQuotaBody.parse(request.body ?? {});
    await context.quotas.set(request.caller.workspaceId, body.quota);
    return describe(request.caller.workspaceId);
  });
}
