import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AgentService } from '../../agents/agent-service.ts';
import { CreateAgentBody, UpdateAgentBody } from '../../agents/agent-schema.ts';
import { PaginationQuery, requireId } from '../validation.ts';

const AgentParams = z.object({ agentId: z.string() });
export const AgentListQuery = PaginationQuery(50, 200);

/** `/v1/agents` (DESIGN §4 "Agents"): reads for the whole workspace, writes for its admins. */
export function registerAgentRoutes(app: FastifyInstance, context: { agents: AgentService }): void {
  const { agents } = context;
  const agentId = (params: unknown) => requireId('agent', AgentParams.parse(params).agentId);

  app.post('/v1/agents', async (request, reply) => {
    const body = CreateAgentBody.parse(request.body);
    return reply.status(201).send(await agents.create(request.caller, body));
  });

  app.get('/v1/agents', async (request) => {
    const query = AgentListQuery.parse(request.query);
    if (query.cursor) requireId('agent', query.cursor);
    return agents.list(request.caller, query);
  });

  app.get('/v1/agents/:agentId', async (request) => ({
    agent: await agents.get(request.caller, agentId(request.params)),
  }));

  app.patch('/v1/agents/:agentId', async (request) => {
    const id = agentId(request.params);
    const body = UpdateAgentBody.parse(request.body ?? {});
    return agents.update(request.caller, id, body);
  });

  app.delete('/v1/agents/:agentId', async (request, reply) => {
    await agents.archive(request.caller, agentId(request.params));
    return reply.status(204).send();
  });
}
