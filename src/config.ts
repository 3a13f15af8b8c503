import { z } from 'zod';
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_STATEMENT_TIMEOUT_MS } from './store/database.ts';

const ConfigSchema = z.object({
  port: z.coerce.number().int().min(0).max(65_535).default(3000),
  host: z.string().min(1).default('127.0.0.1'),
  databaseUrl: z.string().min(1).optional(),
  dataDir: z.string().min(1).default('./.outrun'),
  redisUrl: z.string().min(1).optional(),
  /** PostgreSQL: how long connecting, or waiting for a pooled connection, may take before a 503. */
  databaseConnectTimeoutMs: z.coerce.number().int().positive().default(DEFAULT_CONNECT_TIMEOUT_MS),
  /** PostgreSQL: how long one statement may run (`statement_timeout`); 0 turns the limit off. */
  databaseStatementTimeoutMs: z.coerce.number().int().min(0).default(DEFAULT_STATEMENT_TIMEOUT_MS),
  adminKey: z.string().min(16, 'OUTRUN_ADMIN_KEY must be at least 16 characters').optional(),
  defaultModel: z.string().min(1).default('scripted'),
  bodyLimitBytes: z.coerce
    .number()
    .int()
    .positive()
    .default(1024 * 1024),
  keepAliveMs: z.coerce.number().int().positive().default(15_000),
  leaseMs: z.coerce.number().int().positive().default(30_000),
  sweepIntervalMs: z.coerce.number().int().positive().default(10_000),
  shutdownGraceMs: z.coerce.number().int().min(0).default(10_000),
  /**
   * Runs one worker executes at once; the rest wait `pending` in the queue, so an overloaded worker finishes
   * runs late instead of starving all of them. 100 keeps delivery p99 near 60 ms on two cores
   * (docs/benchmarks.md); 1,000 concurrent runs saturate them.
   */
  workerConcurrency: z.coerce.number().int().min(1).max(10_000).default(100),
  /** How long a `waiting` run waits for an answer before it ends `aborted`/`wait_expired` (7 days). */
  waitTtlMs: z.coerce
    .number()
    .int()
    .positive()
    .default(7 * 24 * 60 * 60 * 1000),
  /** A JSON file of per-model prices: `{"openai:gpt-4o": {"inputPerMillion": 2.5, "outputPerMillion": 10}}`. */
  modelPricesFile: z.string().min(1).optional(),
  maxAttempts: z.coerce.number().int().min(1).max(100).default(3),
  redisPrefix: z.string().min(1).default('outrun'),
  /** How often the webhook dispatcher looks for due deliveries. */
  webhookPollIntervalMs: z.coerce.number().int().positive().default(1000),
  /** How long a dispatcher's claim on a delivery lasts: a dispatcher that died mid-attempt is retried after it. */
  webhookClaimLeaseMs: z.coerce.number().int().positive().default(60_000),
  /** Requests one API key (or user) may make to `/v1` per minute, shared across instances through Redis; 0 turns the limit off. */
  rateLimitPerMinute: z.coerce.number().int().min(0).default(600),
  /** How often each instance's schedule runner looks for due schedules. */
  schedulePollIntervalMs: z.coerce.number().int().positive().default(1000),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Browser origins allowed to call the API cross-origin (`OUTRUN_CORS_ORIGINS`, comma-separated). @default none */
  corsOrigins: z
    .string()
    .optional()
    .transform((value, context) => {
      const origins = (value ?? '')
        .split(',')
        .map((origin) => origin.trim())
        .filter(Boolean);
      for (const origin of origins) {
        if (origin === '*') continue;
        let parsed: URL | undefined;
        try {
          parsed = new URL(origin);
        } catch {
          parsed = undefined;
        }
        if (!parsed || parsed.origin !== origin) {
          context.addIssue({
            code: 'custom',
            message: `OUTRUN_CORS_ORIGINS: "${origin}" is not an origin; write scheme://host[:port], comma-separated`,
          });
        }
      }
      return origins;
    })
    .pipe(z.array(z.string())),
  /** When set, `GET /metrics` needs `Authorization: Bearer <token>` (`OUTRUN_METRICS_TOKEN`). */
  metricsToken: z.string().min(16, 'OUTRUN_METRICS_TOKEN must be at least 16 characters').optional(),
  /** How often open streams' keys are re-checked for revocations the bus did not deliver. */
  streamRecheckMs: z.coerce.number().int().positive().default(2_000),
  /** Whether outbound URLs (MCP servers, webhooks) may point at private, loopback or link-local addresses. */
  allowPrivateUrls: z.union([z.boolean(), z.stringbool()]).default(false),
});

/** The server's configuration (DESIGN §7). Every field has a default that works on a laptop. */
export type Config = z.infer<typeof ConfigSchema>;

/** Reads the configuration from environment variables; throws a readable error on a bad value. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const blank = (value: string | undefined) => (value === '' ? undefined : value);
  const result = ConfigSchema.safeParse({
    port: blank(env.PORT),
    host: blank(env.HOST),
    databaseUrl: blank(env.DATABASE_URL),
    dataDir: blank(env.OUTRUN_DATA_DIR),
    redisUrl: blank(env.REDIS_URL),
    databaseConnectTimeoutMs: blank(env.OUTRUN_DATABASE_CONNECT_TIMEOUT_MS),
    databaseStatementTimeoutMs: blank(env.OUTRUN_DATABASE_STATEMENT_TIMEOUT_MS),
    adminKey: blank(env.OUTRUN_ADMIN_KEY),
    defaultModel: blank(env.OUTRUN_MODEL),
    bodyLimitBytes: blank(env.OUTRUN_BODY_LIMIT_BYTES),
    keepAliveMs: blank(env.OUTRUN_KEEP_ALIVE_MS),
    leaseMs: blank(env.OUTRUN_LEASE_MS),
    sweepIntervalMs: blank(env.OUTRUN_SWEEP_INTERVAL_MS),
    shutdownGraceMs: blank(env.OUTRUN_SHUTDOWN_GRACE_MS),
    workerConcurrency: blank(env.OUTRUN_WORKER_CONCURRENCY),
    waitTtlMs: blank(env.OUTRUN_WAIT_TTL_MS),
    modelPricesFile: blank(env.OUTRUN_MODEL_PRICES),
    maxAttempts: blank(env.OUTRUN_MAX_ATTEMPTS),
    redisPrefix: blank(env.OUTRUN_REDIS_PREFIX),
    allowPrivateUrls: blank(env.OUTRUN_ALLOW_PRIVATE_URLS),
    webhookPollIntervalMs: blank(env.OUTRUN_WEBHOOK_POLL_INTERVAL_MS),
    webhookClaimLeaseMs: blank(env.OUTRUN_WEBHOOK_CLAIM_LEASE_MS),
    rateLimitPerMinute: blank(env.OUTRUN_RATE_LIMIT_PER_MINUTE),
    schedulePollIntervalMs: blank(env.OUTRUN_SCHEDULE_POLL_INTERVAL_MS),
    logLevel: blank(env.LOG_LEVEL),
    corsOrigins: blank(env.OUTRUN_CORS_ORIGINS),
    metricsToken: blank(env.OUTRUN_METRICS_TOKEN),
    streamRecheckMs: blank(env.OUTRUN_STREAM_RECHECK_MS),
  });
  if (!result.success) {
    const problems = result.error.issues
      .map((issue) => `${issue.path.join('.')}: ${issue.message}`)
      .join('; ');
    throw new Error(`Invalid configuration: ${problems}`);
  }
  return result.data;
}
