import { Migrator, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import * as initial from './migrations/0001-initial.ts';
import * as lifecycle from './migrations/0002-lifecycle.ts';
import * as agents from './migrations/0003-agents.ts';
import * as triggers from './migrations/0004-triggers.ts';
import * as access from './migrations/0005-access.ts';
import * as budgets from './migrations/0007-budgets.ts';
import * as quotasCompaction from './migrations/0008-quotas-compaction.ts';
import * as schedules from './migrations/0006-schedules.ts';
import * as eventPages from './migrations/0009-event-pages.ts';
import * as endingFallBack from './migrations/0010-ending-fall-back.ts';
import * as eventRowsWithoutTime from './migrations/0011-event-rows-without-time.ts';
import * as eventPagesByLastSeq from './migrations/0012-event-pages-by-last-seq.ts';
import * as eventRetention from './migrations/0013-event-retention.ts';
import * as webhookDeliveryRetention from './migrations/0014-webhook-delivery-retention.ts';
import * as spendOutsideSteps from './migrations/0015-spend-outside-steps.ts';
import * as lostExecutions from './migrations/0016-lost-executions.ts';
import * as webhookSecretRotation from './migrations/0017-webhook-secret-rotation.ts';
import * as idempotencyKeysPerUser from './migrations/0018-idempotency-keys-per-user.ts';
import * as continuationOwed from './migrations/0019-continuation-owed.ts';

/** Migrations are imported statically so they work the same from source, a bundle or a test. */
const migrations: Record<string, Migration> = {
  '0001-initial': initial,
  '0002-lifecycle': lifecycle,
  '0003-agents': agents,
  '0004-triggers': triggers,
  '0005-access': access,
  '0007-budgets': budgets,
  '0008-quotas-compaction': quotasCompaction,
  '0006-schedules': schedules,
  '0009-event-pages': eventPages,
  '0010-ending-fall-back': endingFallBack,
  '0011-event-rows-without-time': eventRowsWithoutTime,
  '0012-event-pages-by-last-seq': eventPagesByLastSeq,
  '0013-event-retention': eventRetention,
  '0014-webhook-delivery-retention': webhookDeliveryRetention,
  '0015-spend-outside-steps': spendOutsideSteps,
  '0016-lost-executions': lostExecutions,
  '0017-webhook-secret-rotation': webhookSecretRotation,
  '0018-idempotency-keys-per-user': idempotencyKeysPerUser,
  '0019-continuation-owed': continuationOwed,
};

class StaticMigrationProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations;
  }
}

/** Outrun's migrations on `db` (tests move a database to an earlier version with it). */
export function createMigrator(db: Kysely<unknown>): Migrator {
  // Migrations are additive and independent: one written later with a lower number still runs.
  return new Migrator({ db, provider: new StaticMigrationProvider(), allowUnorderedMigrations: true });
}

/** Brings the schema up to date. Safe to call on every start and from several processes at once. */
export async function migrateToLatest(db: Kysely<unknown>): Promise<string[]> {
  const { error, results } = await createMigrator(db).migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
