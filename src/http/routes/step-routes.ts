import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { OutrunContext } from '../../app.ts';
import { NotFoundError } from '../../errors.ts';
import { requireId } from '../validation.ts';

const RunParams = z.object({ runId: z.string() });

/** One finished step of a run, as the run inspector shows it. */
export interface RunStepObject {
  /** 1-based step number. */
  step: number;
  parts: unknown[];
  usage: Record<string, number> | null;
  /** What the step cost in US dollars; null when its model has no price. */
  costUsd: number | null;
  /** Sequence number of the step's `finish-step` event. */
  lastSeq: number;
  startedAt: string;
  finishedAt: string;
}

/** Read-only access to a run's recorded steps (`run_steps`), for the run inspector. */
export function registerStepRoutes(app: FastifyInstance, context: OutrunContext): void {
  app.get('/v1/runs/:runId/steps', async (request) => {
    const runId = requireId('run', RunParams.parse(request.params).runId);
    const run = await context.runs.getForOwner({
      runId,
      workspaceId: request.caller.workspaceId,
      userId: request.caller.userId,
    });
    if (!run) throw new NotFoundError('run', runId);
    const rows = await context.runs.listSteps(runId);
    const items: RunStepObject[] = rows.map((row) => ({
      step: row.step,
      parts: row.parts,
      usage: row.usage,
      costUsd: row.cost_usd,
      lastSeq: row.last_seq,
      startedAt: row.started_at.toISOString(),
      finishedAt: row.finished_at.toISOString(),
    }));
    return { items };
  });
}
