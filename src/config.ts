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
  maxAttempts: z.coerce.number().int().min(1).max(100).default(3),
  redisPrefix: z.string().min(1).default('outrun'),
  /** How often the webhook dispatcher looks for due deliveries. */
  webhookPollIntervalMs: z.coerce.number().int().positive().default(1000),
  /** How often each instance's schedule runner looks for due schedules. */
  schedulePollIntervalMs: z.coerce.number().int().positive().default(1000),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
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
    maxAttempts: blank(env.OUTRUN_MAX_ATTEMPTS),
    redisPrefix: blank(env.OUTRUN_REDIS_PREFIX),
    allowPrivateUrls: blank(env.OUTRUN_ALLOW_PRIVATE_URLS),
    webhookPollIntervalMs: blank(env.OUTRUN_WEBHOOK_POLL_INTERVAL_MS),
    schedulePollIntervalMs: blank(env.OUTRUN_SCHEDULE_POLL_INTERVAL_MS),
    logLevel: blank(env.LOG_LEVEL),
  });
  if (!result.success) {
    const problems = result.error.issues
      .map((issue) => `${issue.path.join('.')}: ${issue.message}`)
      .join('; ');
    throw new Error(`Invalid configuration: ${problems}`);
  }
  return result.data;
}
