import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ScheduleService } from '../../triggers/schedule-service.ts';
import { requireId } from '../validation.ts';
import { StartRunBody } from './run-routes.ts';

/** A schedule's fields as a request sends them; `cron` and `at` are checked together by the service. */
const ScheduleFields = {
  /** A 5-field (or 6-field, with seconds) cron expression, read in `timezone`. */
  cron: z.string().min(1).max(200),
  /** An IANA time zone name. @default 'UTC' */
  timezone: z.string().min(1).max(64),
  /** A one-shot due time in the future (ISO 8601 with an offset). */
  at: z.iso.datetime({ offset: true }),
  /** The run's user message: `{text}` or `{parts}`, as in a run request. */
  input: StartRunBody.shape.input,
  /** When the chat is busy at a due time: `skip` (recorded), `enqueue` or `interrupt`. @default 'skip' */
  multitask: z.enum(['skip', 'enqueue', 'interrupt']),
  /** @default true */
  enabled: z.boolean(),
};

/** `POST /v1/chats/:chatId/schedules`: exactly one of `cron` or `at`. */
export const CreateScheduleBody = z
  .object({
    cron: ScheduleFields.cron.optional(),
    timezone: ScheduleFields.timezone.optional(),
    at: ScheduleFields.at.optional(),
    input: ScheduleFields.input,
    multitask: ScheduleFields.multitask.optional(),
    enabled: ScheduleFields.enabled.optional(),
  })
  .strict();

/** `PATCH /v1/schedules/:scheduleId`: any field; `cron` replaces an `at` and the other way round. */
export const UpdateScheduleBody = z
  .object({
    cron: ScheduleFields.cron.optional(),
    timezone: ScheduleFields.timezone.optional(),
    at: ScheduleFields.at.optional(),
    input: ScheduleFields.input.optional(),
    multitask: ScheduleFields.multitask.optional(),
    enabled: ScheduleFields.enabled.optional(),
  })
  .strict();

const ChatParams = z.object({ chatId: z.string() });
const ScheduleParams = z.object({ scheduleId: z.string() });

/** Schedules: private to the chat's owner, like the chat (another user's schedule is `404`). */
export function registerScheduleRoutes(app: FastifyInstance, context: { schedules: ScheduleService }): void {
  const { schedules } = context;
  const chatId = (params: unknown) => requireId('chat', ChatParams.parse(params).chatId);
  const scheduleId = (params: unknown) => requireId('schedule', ScheduleParams.parse(params).scheduleId);

  app.post('/v1/chats/:chatId/schedules', async (request, reply) => {
    const id = chatId(request.params);
    const body = CreateScheduleBody.parse(request.body);
    const schedule = await schedules.create(request.caller, id, body);
    return reply.status(201).send({ schedule });
  });

  app.get('/v1/chats/:chatId/schedules', async (request) =>
    schedules.list(request.caller, chatId(request.params)),
  );

  app.get('/v1/schedules/:scheduleId', async (request) => ({
    schedule: await schedules.get(request.caller, scheduleId(request.params)),
  }));

  app.patch('/v1/schedules/:scheduleId', async (request) => {
    const id = scheduleId(request.params);
    const body = UpdateScheduleBody.parse(request.body);
    return { schedule: await schedules.update(request.caller, id, body) };
  });

  app.delete('/v1/schedules/:scheduleId', async (request, reply) => {
    await schedules.delete(request.caller, scheduleId(request.params));
    return reply.status(204).send();
  });
}
