import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { AuthService } from '../../auth/auth-service.ts';
import { urlHasCredentials } from '../../net/outbound-url.ts';
import { WEBHOOK_EVENTS } from '../../protocol/webhook.ts';
import type { WebhookService } from '../../webhooks/webhook-service.ts';
import { PaginationQuery, requireId } from '../validation.ts';

/** A webhook's URL as a request sends it; the service checks its scheme and addresses. */
const WebhookUrl = z
  .string()
  .min(1)
  .max(2_000)
  // Every member may list webhooks, URLs as they are: a receiver checks the signature, not a password.
  .refine((url) => !urlHasCredentials(url), {
    message: 'a webhook URL cannot carry a user or password; the receiver checks the signature instead',
  });
const WebhookEvents = z.array(z.enum(WEBHOOK_EVENTS)).min(1).max(WEBHOOK_EVENTS.length);

export const CreateWebhookBody = z.object({ url: WebhookUrl, events: WebhookEvents.optional() }).strict();

/** `PATCH /v1/webhooks/:webhookId`: at least one field, each checked as on create. */
export const UpdateWebhookBody = z
  .object({ url: WebhookUrl.optional(), events: WebhookEvents.optional(), enabled: z.boolean().optional() })
  .strict()
  .refine((body) => Object.values(body).some((value) => value !== undefined), {
    message: 'Send at least one of url, events and enabled.',
  });
const WebhookParams = z.object({ webhookId: z.string() });
const DeliveryParams = z.object({ webhookId: z.string(), deliveryId: z.string() });
export const WebhookListQuery = PaginationQuery(20, 100);
export const DeliveryListQuery = PaginationQuery(20, 100);

/**
 * `/v1/webhooks`: workspace admins only, reads included. A delivery carries the run it reports, whoever's it
 * is (chats are private to their owner), and a URL may hold a token in its query string.
 */
export function registerWebhookRoutes(
  app: FastifyInstance,
  context: { auth: AuthService; webhooks: WebhookService },
): void {
  const { auth, webhooks } = context;
  const webhookId = (params: unknown) => requireId('webhook', WebhookParams.parse(params).webhookId);

  app.post('/v1/webhooks', async (request, reply) => {
    auth.requireAdmin(request.caller);
    const body = CreateWebhookBody.parse(request.body);
    return reply.status(201).send(await webhooks.create(request.caller, body));
  });

  app.get('/v1/webhooks', async (request) => {
    const query = WebhookListQuery.parse(request.query);
    if (query.cursor) requireId('webhook', query.cursor);
    auth.requireAdmin(request.caller);
    return webhooks.list(request.caller, query);
  });

  app.get('/v1/webhooks/:webhookId', async (request) => {
    const id = webhookId(request.params);
    auth.requireAdmin(request.caller);
    return { webhook: await webhooks.get(request.caller, id) };
  });

  app.patch('/v1/webhooks/:webhookId', async (request) => {
    const id = webhookId(request.params);
    auth.requireAdmin(request.caller);
    const body = UpdateWebhookBody.parse(request.body);
    return { webhook: await webhooks.update(request.caller, id, body) };
  });

  app.post('/v1/webhooks/:webhookId/rotate-secret', async (request) => {
    const id = webhookId(request.params);
    auth.requireAdmin(request.caller);
    return webhooks.rotateSecret(request.caller, id);
  });

  app.post('/v1/webhooks/:webhookId/deliveries/:deliveryId/retry', async (request) => {
    const params = DeliveryParams.parse(request.params);
    const id = requireId('webhook', params.webhookId);
    const deliveryId = requireId('delivery', params.deliveryId);
    auth.requireAdmin(request.caller);
    return { delivery: await webhooks.retryDelivery(request.caller, id, deliveryId) };
  });

  app.delete('/v1/webhooks/:webhookId', async (request, reply) => {
    const id = webhookId(request.params);
    auth.requireAdmin(request.caller);
    await webhooks.delete(request.caller, id);
    return reply.status(204).send();
  });

  app.get('/v1/webhooks/:webhookId/deliveries', async (request) => {
    const id = webhookId(request.params);
    const query = DeliveryListQuery.parse(request.query);
    if (query.cursor) requireId('delivery', query.cursor);
    auth.requireAdmin(request.caller);
    return webhooks.deliveries(request.caller, id, query);
  });
}
