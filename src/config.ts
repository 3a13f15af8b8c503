import { isIP } from 'node:net';
import { z } from 'zod';
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_POOL_SIZE,
  DEFAULT_STATEMENT_TIMEOUT_MS,
} from './store/database.ts';

/** A connection URL with one of `schemes` (without the colon); the message says what to write instead. */
const connectionUrl = (schemes: string[], example: string) =>
  z
    .string()
    .min(1)
    .refine((value) => URL.canParse(value), { message: `not a URL; write it as ${example}` })
    .refine((value) => !URL.canParse(value) || schemes.includes(new URL(value).protocol.slice(0, -1)), {
      message: `use a ${schemes.map((scheme) => `${scheme}://`).join(' or ')} URL, e.g. ${example}`,
    });

/** What Fastify's `trustProxy` takes in a list: an address, a CIDR range, or one of proxy-addr's named ranges. */
function isProxyAddress(entry: string): boolean {
  if (['loopback', 'linklocal', 'uniquelocal'].includes(entry)) return true;
  const [address = '', prefix, ...rest] = entry.split('/');
  const version = isIP(address);
  if (version === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (version === 4 ? 32 : 128);
}

/** The longest delay a Node timer takes (2³¹−1 ms, about 24.8 days); a longer one fires after 1 ms. */
const MAX_TIMER_MS = 2_147_483_647;

/** A duration in milliseconds that a timer waits for: a whole number from `min` to `MAX_TIMER_MS`. */
const timerMs = (min: number) =>
  z.coerce.number().int().min(min).max(MAX_TIMER_MS, `must be at most ${MAX_TIMER_MS} (about 24.8 days)`);

/** The longest a run may wait for a person: ten years (a date that far is still a valid timestamp). */
const MAX_WAIT_TTL_MS = 3650 * 24 * 60 * 60 * 1000;

const ConfigSchema = z.object({
  port: z.coerce.number().int().min(0).max(65_535).default(3000),
  host: z.string().min(1).default('127.0.0.1'),
  databaseUrl: connectionUrl(
    ['postgres', 'postgresql'],
    'postgres://user:password@host:5432/database',
  ).optional(),
  dataDir: z.string().min(1).default('./.outrun'),
  redisUrl: connectionUrl(['redis', 'rediss'], 'redis://host:6379').optional(),
  /** PostgreSQL: how long connecting, or waiting for a pooled connection, may take before a 503. */
  databaseConnectTimeoutMs: timerMs(1).default(DEFAULT_CONNECT_TIMEOUT_MS),
  /** PostgreSQL: how long one statement may run (`statement_timeout`); 0 turns the limit off. */
  databaseStatementTimeoutMs: timerMs(0).default(DEFAULT_STATEMENT_TIMEOUT_MS),
  /**
   * PostgreSQL: connections in the pool that requests and runs share (the group commit and migrations have
   * one each besides). A pool whose connections all stay busy for `databaseConnectTimeoutMs` answers 503.
   */
  databasePoolSize: z.coerce.number().int().min(1).max(1000).default(DEFAULT_POOL_SIZE),
  adminKey: z.string().min(16, 'OUTRUN_ADMIN_KEY must be at least 16 characters').optional(),
  defaultModel: z.string().min(1).default('scripted'),
  bodyLimitBytes: z.coerce
    .number()
    .int()
    .positive()
    .default(1024 * 1024),
  keepAliveMs: timerMs(1).default(15_000),
  leaseMs: timerMs(1).default(30_000),
  sweepIntervalMs: timerMs(1).default(10_000),
  shutdownGraceMs: timerMs(0).default(10_000),
  /**
   * The most runs one worker executes at once; the rest wait `pending` in the queue, so an overloaded worker
   * finishes runs late instead of starving all of them. Beyond `workerBaseConcurrency` a run is admitted only
   * while the event loop keeps up (decision 0016).
   */
  workerConcurrency: z.coerce.number().int().min(1).max(10_000).default(1000),
  /**
   * Runs one worker admits whatever its load (at most `workerConcurrency`). At 100 paced runs (50 tokens/s)
   * one Node 24 process on two cores delivers within 15–30 ms of schedule at p99 in a quiet hour
   * (docs/benchmarks.md).
   */
  workerBaseConcurrency: z.coerce.number().int().min(1).max(10_000).default(100),
  /**
   * Beyond `workerBaseConcurrency`, a worker admits more runs only while its event loop's delay (the p90 over
   * half a second) stays under this many milliseconds. Equal `workerConcurrency` to the base to turn it off.
   */
  workerMaxLoopDelayMs: z.coerce.number().int().min(1).max(10_000).default(30),
  /**
   * How long the first event appended to an idle event log waits for others to share its insert. At 2 ms a
   * paced stream's events share inserts (about a third less PostgreSQL CPU per token, docs/benchmarks.md)
   * for at most 2 ms more latency; under load an insert is always in flight and no event waits for the window.
   */
  eventCoalesceMs: z.coerce.number().min(0).max(50).default(2),
  /**
   * How long a model call may send nothing (no token, no chunk of any kind) while no tool of its run executes,
   * before it is ended and its run fails `model_error` (decision 0025); 0 turns the limit off. 10 minutes: past
   * the longest silence a reasoning model keeps before its first output, short of holding a chat for good.
   */
  modelIdleTimeoutMs: timerMs(0).default(10 * 60 * 1000),
  /** How long a `waiting` run waits for an answer before it ends `aborted`/`wait_expired` (7 days). */
  waitTtlMs: z.coerce
    .number()
    .int()
    .positive()
    .max(MAX_WAIT_TTL_MS, `must be at most ${MAX_WAIT_TTL_MS} (ten years)`)
    .default(7 * 24 * 60 * 60 * 1000),
  /**
   * Days a finished run's events are kept (`OUTRUN_EVENT_RETENTION_DAYS`): after that they are deleted and
   * the run's stream answers `410 events_expired`; the run, its steps and its messages stay. @default forever
   */
  eventRetentionDays: z.coerce.number().int().min(1).max(36_500).optional(),
  /**
   * Days a finished webhook delivery (delivered or failed) is kept, and listed by
   * `GET /v1/webhooks/:id/deliveries`; a delivery still being retried is never deleted.
   */
  webhookDeliveryRetentionDays: z.coerce.number().int().min(1).max(36_500).default(30),
  /** A JSON file of per-model prices: `{"openai:gpt-4o": {"inputPerMillion": 2.5, "outputPerMillion": 10}}`. */
  modelPricesFile: z.string().min(1).optional(),
  maxAttempts: z.coerce.number().int().min(1).max(100).default(3),
  redisPrefix: z.string().min(1).default('outrun'),
  /**
   * The longest the webhook dispatcher sleeps: it wakes at the next due attempt and when this instance records
   * deliveries, so this bounds only how late it finds what another instance recorded and left.
   */
  webhookPollIntervalMs: timerMs(1).default(10_000),
  /**
   * How long a dispatcher's claim on a delivery lasts: a dispatcher that died mid-attempt is retried after it.
   * An attempt times out after 10 s, or half this when that is shorter, so it ends within its claim.
   */
  webhookClaimLeaseMs: timerMs(1).default(60_000),
  /** Requests one API key (or user) may make to `/v1` per minute, shared across instances through Redis; 0 turns the limit off. */
  rateLimitPerMinute: z.coerce.number().int().min(0).default(600),
  /**
   * Failed API-key authentications (an unknown or revoked key) one client address may make per minute, across
   * instances through Redis; past it, a key this instance has not seen work is refused with
   * `429 rate_limited` without being looked up. 0 turns the limit off.
   */
  authFailuresPerMinute: z.coerce.number().int().min(0).default(30),
  /**
   * Which proxies' `X-Forwarded-For` names the client (`OUTRUN_TRUST_PROXY`): comma-separated addresses and
   * CIDR ranges of your proxies (also `loopback`, `linklocal`, `uniquelocal`), or `true` to trust any peer
   * (only when nothing but the proxy can reach the server). Unset, the header is ignored and the client is the
   * connection's peer: behind a proxy, set it, or every client shares the proxy's failed-authentication
   * limit. (A number of hops is not taken: Fastify no longer honours one.) @default false
   */
  trustProxy: z
    .string()
    .optional()
    .transform((value, context): boolean | string[] => {
      const text = (value ?? '').trim();
      if (text === '' || text === 'false') return false;
      if (text === 'true') return true;
      const entries = text
        .split(',')
        .map((entry) => entry.trim())
        .filter(Boolean);
      for (const entry of entries) {
        if (!isProxyAddress(entry)) {
          context.addIssue({
            code: 'custom',
            message: `"${entry}" is not an IP address, a CIDR range, loopback, linklocal or uniquelocal (or write true)`,
          });
          return z.NEVER;
        }
      }
      return entries;
    }),
  /**
   * The longest each instance's schedule runner sleeps: it wakes at the next due time and when this instance
   * writes a schedule, so this bounds only how late it finds a schedule another instance wrote and left.
   */
  schedulePollIntervalMs: timerMs(1).default(10_000),
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
  streamRecheckMs: timerMs(1).default(2_000),
  /** `json`: one JSON line per event; `pretty`: one readable line. Absent: pretty on a terminal, else JSON. */
  logFormat: z.enum(['json', 'pretty']).optional(),
  /** Whether outbound URLs (MCP servers, webhooks) may point at private, loopback or link-local addresses. */
  allowPrivateUrls: z.union([z.boolean(), z.stringbool()]).default(false),
});

/** The server's configuration (DESIGN §7). Every field has a default that works on a laptop. */
export type Config = z.infer<typeof ConfigSchema>;

/** The environment variable each configuration field is read from (DESIGN §7). */
export const CONFIG_VARIABLES = {
  port: 'PORT',
  host: 'HOST',
  databaseUrl: 'DATABASE_URL',
  dataDir: 'OUTRUN_DATA_DIR',
  redisUrl: 'REDIS_URL',
  databaseConnectTimeoutMs: 'OUTRUN_DATABASE_CONNECT_TIMEOUT_MS',
  databaseStatementTimeoutMs: 'OUTRUN_DATABASE_STATEMENT_TIMEOUT_MS',
  databasePoolSize: 'OUTRUN_DATABASE_POOL_SIZE',
  adminKey: 'OUTRUN_ADMIN_KEY',
  defaultModel: 'OUTRUN_MODEL',
  bodyLimitBytes: 'OUTRUN_BODY_LIMIT_BYTES',
  keepAliveMs: 'OUTRUN_KEEP_ALIVE_MS',
  leaseMs: 'OUTRUN_LEASE_MS',
  sweepIntervalMs: 'OUTRUN_SWEEP_INTERVAL_MS',
  shutdownGraceMs: 'OUTRUN_SHUTDOWN_GRACE_MS',
  maxAttempts: 'OUTRUN_MAX_ATTEMPTS',
  redisPrefix: 'OUTRUN_REDIS_PREFIX',
  allowPrivateUrls: 'OUTRUN_ALLOW_PRIVATE_URLS',
  webhookPollIntervalMs: 'OUTRUN_WEBHOOK_POLL_INTERVAL_MS',
  webhookClaimLeaseMs: 'OUTRUN_WEBHOOK_CLAIM_LEASE_MS',
  workerConcurrency: 'OUTRUN_WORKER_CONCURRENCY',
  workerBaseConcurrency: 'OUTRUN_WORKER_BASE_CONCURRENCY',
  workerMaxLoopDelayMs: 'OUTRUN_WORKER_MAX_LOOP_DELAY_MS',
  eventCoalesceMs: 'OUTRUN_EVENT_COALESCE_MS',
  modelIdleTimeoutMs: 'OUTRUN_MODEL_IDLE_TIMEOUT_MS',
  waitTtlMs: 'OUTRUN_WAIT_TTL_MS',
  eventRetentionDays: 'OUTRUN_EVENT_RETENTION_DAYS',
  webhookDeliveryRetentionDays: 'OUTRUN_WEBHOOK_DELIVERY_RETENTION_DAYS',
  modelPricesFile: 'OUTRUN_MODEL_PRICES',
  rateLimitPerMinute: 'OUTRUN_RATE_LIMIT_PER_MINUTE',
  authFailuresPerMinute: 'OUTRUN_AUTH_FAILURES_PER_MINUTE',
  trustProxy: 'OUTRUN_TRUST_PROXY',
  schedulePollIntervalMs: 'OUTRUN_SCHEDULE_POLL_INTERVAL_MS',
  corsOrigins: 'OUTRUN_CORS_ORIGINS',
  metricsToken: 'OUTRUN_METRICS_TOKEN',
  streamRecheckMs: 'OUTRUN_STREAM_RECHECK_MS',
  logLevel: 'LOG_LEVEL',
  logFormat: 'LOG_FORMAT',
} as const satisfies Record<keyof Config, string>;

/**
 * Variables read outside `loadConfig`: provider credentials and endpoints (`src/agent/providers.ts`), and
 * `OUTRUN_FAULTS` (fault injection, tests only).
 */
export const OTHER_VARIABLES = [
  'OPENAI_API_KEY',
  'OPENAI_BASE_URL',
  'ANTHROPIC_API_KEY',
  'ANTHROPIC_BASE_URL',
  'OUTRUN_COMPATIBLE_BASE_URL',
  'OUTRUN_COMPATIBLE_API_KEY',
  'OUTRUN_FAULTS',
] as const;

/**
 * The `OUTRUN_*` variables set in `env` that Outrun does not read: most likely misspelt settings
 * (`OUTRUN_LEASE_MSS`), which would otherwise leave their setting at its default without a word.
 */
export function unknownOutrunVariables(env: NodeJS.ProcessEnv = process.env): string[] {
  const known = new Set<string>([...Object.values(CONFIG_VARIABLES), ...OTHER_VARIABLES]);
  return Object.keys(env)
    .filter((name) => name.startsWith('OUTRUN_') && !known.has(name))
    .sort();
}

/** Fields whose values may hold credentials: an error names the variable but never echoes its value. */
const SECRET_FIELDS = new Set<string>(['adminKey', 'databaseUrl', 'redisUrl', 'metricsToken']);

/** Thrown by `loadConfig`: each problem names the environment variable to fix. */
export class ConfigError extends Error {
  readonly code = 'invalid_configuration';
  constructor(readonly problems: string[]) {
    super(`Invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}

/** Reads the configuration from environment variables; throws a `ConfigError` naming each bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty or only spaces is unset (a number of spaces would read as 0).
  const blank = (value: string | undefined) =>
    value === undefined || value.trim() === '' ? undefined : value;
  const input = Object.fromEntries(
    Object.entries(CONFIG_VARIABLES).map(([field, variable]) => [field, blank(env[variable])]),
  );
  const result = ConfigSchema.safeParse(input);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => {
        const field = String(issue.path[0]) as keyof Config;
        const variable = CONFIG_VARIABLES[field] ?? issue.path.join('.');
        const message = issue.message.replace(new RegExp(`^${variable}:? `), '');
        const shown = SECRET_FIELDS.has(field) ? '' : ` (got ${JSON.stringify(env[variable])})`;
        return `${variable}: ${message}${shown}`;
      }),
    );
  }
  return result.data;
}
