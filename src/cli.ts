import { parseArgs } from 'node:util';
import pino from 'pino';
import { createOutrun } from './app.ts';
import { loadConfig } from './config.ts';
import { faultsFromEnv } from './faults.ts';
import { createDatabase } from './store/database.ts';

const USAGE = `Usage: outrun <command>

Commands:
  serve     HTTP API and web app, plus a worker that executes runs (the default)
  worker    a worker only: executes runs, serves no HTTP (needs REDIS_URL for its queue)
  migrate   bring the database schema up to date, then exit

Configuration comes from the environment: PORT, HOST, DATABASE_URL, OUTRUN_DATA_DIR, REDIS_URL,
OUTRUN_ADMIN_KEY, OUTRUN_MODEL, provider keys (OPENAI_API_KEY, ANTHROPIC_API_KEY, OUTRUN_COMPATIBLE_BASE_URL).
See the README for the full list.`;

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { help: { type: 'boolean', short: 'h' } },
  });
  const command = positionals[0] ?? 'serve';
  if (values.help || command === 'help') {
    console.log(USAGE);
    return;
  }
  const config = loadConfig();
  const logger = pino({ level: config.logLevel });

  if (command === 'migrate') {
    const database = await createDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
    await database.close();
    logger.info({ store: database.kind }, 'database is up to date');
    return;
  }
  if (command === 'worker' && !config.redisUrl) {
    throw new Error(
      '`outrun worker` needs REDIS_URL: without Redis, `outrun serve` runs the worker in-process.',
    );
  }
  if (command !== 'serve' && command !== 'worker') {
    console.error(`Unknown command "${command}".\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }

  const outrun = await createOutrun({ logger, worker: true, faults: faultsFromEnv(process.env) });
  const { generatedAdminKey } = await outrun.start();
  let url: string | null = null;
  if (command === 'serve') url = await outrun.listen();
  logger.info({ url, store: outrun.database.kind, model: config.defaultModel }, 'outrun is ready');
  if (generatedAdminKey) {
    // Printed once, on the first start; only its hash is stored.
    console.log(
      [
        '',
        '  Outrun generated an admin API key. It is shown only this once; keep it somewhere safe:',
        '',
        `    ${generatedAdminKey}`,
        '',
        url ? `  Sign in to the web app: ${url}/#key=${generatedAdminKey}` : '',
        url
          ? `  Or try the API:         curl -H "Authorization: Bearer ${generatedAdminKey}" ${url}/v1/me`
          : '',
        '',
      ].join('\n'),
    );
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: finishing or settling active runs');
    outrun.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
