import { parseArgs } from 'node:util';
import { assertRedisReachable } from './bus/redis-reachable.ts';
import { loadConfig, unknownOutrunVariables } from './config.ts';
import { createLogger } from './logger.ts';
import { assertCanListen, describeListenError } from './net/listen-check.ts';
import { assertDatabaseReachable } from './store/database-reachable.ts';

/** How long start-up waits for the database and Redis before failing with a message naming the variable. */
const STARTUP_CHECK_TIMEOUT_MS = 5000;

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
  const logger = createLogger({ level: config.logLevel, format: config.logFormat });
  const unknown = unknownOutrunVariables();
  if (unknown.length > 0) {
    logger.warn({ variables: unknown }, `Outrun reads no such setting: ${unknown.join(', ')} (misspelt?)`);
  }
  if (command !== 'serve' && command !== 'worker' && command !== 'migrate') {
    console.error(`Unknown command "${command}".\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (command === 'worker' && !config.redisUrl) {
    throw new Error(
      'REDIS_URL: `outrun worker` needs it (the run queue lives in Redis); without Redis, `outrun serve` runs the worker in-process.',
    );
  }

  // The configuration and the connections are checked before the engine's modules load, so a wrong
  // variable is reported in seconds.
  logger.debug(
    { database: Boolean(config.databaseUrl), redis: Boolean(config.redisUrl) },
    'checking connections',
  );
  if (config.databaseUrl) {
    await assertDatabaseReachable(config.databaseUrl, { timeoutMs: STARTUP_CHECK_TIMEOUT_MS });
  }
  if (config.redisUrl && command !== 'migrate') {
    await assertRedisReachable(config.redisUrl, { timeoutMs: STARTUP_CHECK_TIMEOUT_MS });
  }
  const { openConfiguredDatabase } = await import('./store/database-startup.ts');

  if (command === 'migrate') {
    const database = await openConfiguredDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      connectTimeoutMs: config.databaseConnectTimeoutMs,
    });
    await database.close();
    logger.info({ store: database.kind }, 'database is up to date');
    return;
  }

  const { resolveModel } = await import('./agent/providers.ts');
  const { createOutrun } = await import('./app.ts');
  const { faultsFromEnv } = await import('./faults.ts');
  checkDefaultModel(resolveModel, config.defaultModel, logger);
  // A server that could never answer must fail before its start takes over runs (which its exit would lose).
  if (command === 'serve') await assertCanListen(config.host, config.port);
  const outrun = await createOutrun({
    logger,
    worker: true,
    faults: faultsFromEnv(process.env),
    // Another server took the database while this one was cut off from it: stop, so that one runs.
    onFatal: () => {
      void outrun.close({ graceMs: 0 }).finally(() => process.exit(1));
    },
  });
  const { generatedAdminKey } = await outrun.start();
  let url: string | null = null;
  if (command === 'serve') {
    try {
      url = await outrun.listen();
    } catch (error) {
      // Taken since the check: the runs this start took over are handed back, not lost.
      await outrun.close().catch(() => {});
      throw describeListenError(error, config.host, config.port);
    }
  }
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

/**
 * Checks `OUTRUN_MODEL`: a malformed or unknown id fails start-up, naming the variable; a provider whose key is
 * not set only warns (start-up goes on; runs on it fail until the key is set and the server restarted).
 */
function checkDefaultModel(
  resolveModel: (options: { modelId: string }) => unknown,
  modelId: string,
  logger: { warn: (object: object, message: string) => void },
): void {
  try {
    resolveModel({ modelId });
  } catch (error) {
    const missingKey = (error as { details?: { envVariable?: unknown } }).details?.envVariable;
    if (missingKey === undefined) throw new Error(`OUTRUN_MODEL: ${(error as Error).message}`);
    logger.warn(
      { model: modelId },
      `OUTRUN_MODEL: ${(error as Error).message} Runs that use the default model will fail until then.`,
    );
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
