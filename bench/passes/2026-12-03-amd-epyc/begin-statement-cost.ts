/**
 * The CPU a start spends building, compiling and handing over the statement that begins its run, with a
 * driver that sends nothing (docs/benchmarks.md, "The start's statement compiled once"). Run from the
 * repository root, at the commit to measure: npx tsx bench/passes/2026-12-03-amd-epyc/begin-statement-cost.ts
 */
import { DummyDriver, Kysely, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler } from 'kysely';
import { Faults } from '../../../src/faults.ts';
import { Metrics } from '../../../src/metrics.ts';
import { RunService, type BeginRunOptions } from '../../../src/runs/run-service.ts';
import type { Database } from '../../../src/store/schema.ts';

const db = new Kysely<Database>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (kysely) => new PostgresIntrospector(kysely),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
});
const service = new RunService({ db, metrics: new Metrics({ defaultMetrics: false }), faults: new Faults() });
// A streaming start's: one statement, a local claim, the chat and the key checked by the statement.
const options: BeginRunOptions = {
  workspaceId: 'ws_1',
  chatId: 'chat_1',
  userId: 'user_1',
  parts: [{ type: 'text', text: 'hi' }],
  model: 'scripted',
  trigger: 'api',
  localClaim: () => ({ owner: 'instance', leaseExpiresAt: new Date() }),
  chatCheck: { ownerId: 'user_1', agentId: null, keyId: 'key_1' },
};
// The dummy driver returns no row, so every begin ends in an error once its statement was sent.
const begin = () => service.begin(options).catch(() => undefined);

for (let index = 0; index < 2_000; index++) await begin();
const calls = 5_000;
const before = process.cpuUsage();
for (let index = 0; index < calls; index++) await begin();
const used = process.cpuUsage(before);
console.log(
  `${((used.user + used.system) / 1000 / calls).toFixed(3)} ms of CPU per begin (${process.version})`,
);
