import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { LanguageModel } from 'ai';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { CompactionStore } from './agent/compaction-store.ts';
import { ModelPrices } from './agent/prices.ts';
import { resolveModel } from './agent/providers.ts';
import { McpClientPool } from './agent/mcp-tools.ts';
import { createDefaultToolRegistry, type ToolRegistry } from './agent/tools.ts';
import { AgentService } from './agents/agent-service.ts';
import type { RunConfig } from './protocol/agent.ts';
import { AuthService } from './auth/auth-service.ts';
import type { Bus } from './bus/bus.ts';
import { MemoryBus } from './bus/memory-bus.ts';
import { RedisBus } from './bus/redis-bus.ts';
import { ChatService } from './chats/chat-service.ts';
import type { Clock } from './clock.ts';
import { loadConfig, type Config } from './config.ts';
import { Faults } from './faults.ts';
import { createRequestRateLimiter, type RequestRateLimiter } from './http/rate-limit.ts';
import { createLogger } from './logger.ts';
import { buildServer } from './http/server.ts';
import { Metrics } from './metrics.ts';
import { BullMqQueue } from './queue/bullmq-queue.ts';
import { MemoryQueue } from './queue/memory-queue.ts';
import type { RunQueue } from './queue/queue.ts';
import { QuotaService } from './quotas/quota-service.ts';
import { Lifecycle, type TransitionResult } from './runs/lifecycle.ts';
import { isTerminalStatus } from './runs/run-status.ts';
import { runWebhooksListener } from './webhooks/run-webhooks.ts';
import { RunEngine } from './runs/run-engine.ts';
import { RunExecutor } from './runs/run-executor.ts';
import { RunService } from './runs/run-service.ts';
import { assertRedisReachable } from './bus/redis-reachable.ts';
import type { DatabaseHandle, Db } from './store/database.ts';
import { openConfiguredDatabase } from './store/database-startup.ts';
import {
  EventCompactor,
  PGLITE_COMPACTION_BATCH_EVENTS,
  VACUUM_AFTER_EVENTS,
} from './stream/event-compactor.ts';
import { EventLog } from './stream/event-log.ts';
import { IdempotencyKeys } from './triggers/idempotency.ts';
import { ScheduleRunner } from './triggers/schedule-runner.ts';
import { ScheduleService } from './triggers/schedule-service.ts';
import { WebhookDispatcher } from './webhooks/webhook-dispatcher.ts';
import { WebhookService } from './webhooks/webhook-service.ts';
import { LISTEN_BACKLOG } from './http/listen-backlog.ts';

/** How long start-up waits for the Redis server of `REDIS_URL` to answer before failing. */
const REDIS_STARTUP_TIMEOUT_MS = 5000;
/** `OUTRUN_EVENT_RETENTION_DAYS` is in days. */
const DAY_MS = 24 * 60 * 60 * 1000;

/** Everything a request handler or a test needs: the services of one Outrun instance. */
export interface OutrunContext {
  config: Config;
  db: Db;
  auth: AuthService;
  chats: ChatService;
  runs: RunService;
  lifecycle: Lifecycle;
  engine: RunEngine;
  executor: RunExecutor;
  log: EventLog;
  /** Compacts finished runs' events into pages, after each ending and on every sweep. */
  compactor: EventCompactor;
  metrics: Metrics;
  logger: Logger;
  faults: Faults;
  tools: ToolRegistry;
  resolveModel: (modelId: string) => LanguageModel;
  /** Set once shutdown began: the instance finishes what it has and takes nothing new. */
  draining: boolean;
  webhooks: WebhookService;
  /** Sends the webhook outbox; `nudge()` it after committing a transaction that recorded deliveries. */
  webhookDispatcher: WebhookDispatcher;
  idempotency: IdempotencyKeys;
  agents: AgentService;
  /** This process's MCP clients, reused by every run; closed on shutdown. */
  mcp: McpClientPool;
  /** Signals between instances (the HTTP layer listens for key revocations). */
  bus: Bus;
  /** Workspace quotas: the start path calls `assertCanStart`, the budget check `remaining`. */
  quotas: QuotaService;
  /** Per-key request limits on `/v1`: in Redis with `REDIS_URL`, in memory otherwise. */
  rateLimiter: RequestRateLimiter;
  schedules: ScheduleService;
  /** Fires due schedules; every instance runs one. */
  scheduler: ScheduleRunner;
}

export interface CreateOutrunOptions {
  /** Configuration; fields left out come from the environment and then the defaults. */
  config?: Partial<Config>;
  /** An open database (tests pass one loaded from a migrated template). Absent: opened from the config. */
  database?: DatabaseHandle;
  logger?: Logger;
  faults?: Faults;
  /** The tools the agent may call. @default the built-ins: echo, current_time, calculator, schedule_followup */
  tools?: ToolRegistry;
  /** Resolves a model id to an AI SDK model. @default `resolveModel` over the providers' env variables */
  resolveModel?: (modelId: string) => LanguageModel;
  bus?: Bus;
  queue?: RunQueue;
  /** Whether this instance executes runs. @default true */
  worker?: boolean;
  /** Where leases and the sweeper read the time. @default the system clock */
  clock?: Clock;
  /** Whether this instance is alone on its database (embedded mode). @default true without REDIS_URL */
  singleInstance?: boolean;
  /** Per-key request limits. @default `OUTRUN_RATE_LIMIT_PER_MINUTE`, counted in Redis with `REDIS_URL` */
  rateLimiter?: RequestRateLimiter;
  /** How long an interrupt (a start's or a schedule's) waits for the run it stopped to end. @default 10000 */
  interruptWaitMs?: number;
  /**
   * Called when this instance must stop: on PostgreSQL, another server took the database's instance lock in a
   * mode this one cannot share while this one had lost its connection (src/store/instance-lock.ts).
   * @default closes the instance
   */
  onFatal?: (error: Error) => void;
}

export interface Outrun extends OutrunContext {
  server: FastifyInstance;
  database: DatabaseHandle;
  /** Seeds the admin, settles what a previous process left and starts the worker. Returns a new admin key, if one was generated. */
  start(): Promise<{ generatedAdminKey: string | null }>;
  /** Listens on the configured host and port; returns the base URL. */
  listen(): Promise<string>;
  /** Graceful shutdown: stop accepting, let runs finish or settle them, close the database. */
  close(options?: { graceMs?: number }): Promise<void>;
}

/** Builds one Outrun instance: store, event log, run engine and HTTP server, wired together. */
export async function createOutrun(options: CreateOutrunOptions = {}): Promise<Outrun> {
  const config = { ...loadConfig(), ...stripUndefined(options.config ?? {}) };
  const logger = options.logger ?? createLogger({ level: config.logLevel, format: config.logFormat });
  // An unreachable Redis fails start-up within seconds, naming REDIS_URL, instead of retrying forever.
  if (config.redisUrl && (!options.bus || !options.queue)) {
    await assertRedisReachable(config.redisUrl, { timeoutMs: REDIS_STARTUP_TIMEOUT_MS });
  }
  const singleInstance = options.singleInstance ?? !config.redisUrl;
  /** Closes this instance (set once it exists). */
  let closeInstance = async (): Promise<void> => {};
  const database =
    options.database ??
    (await openConfiguredDatabase({
      databaseUrl: config.databaseUrl,
      dataDir: config.dataDir,
      connectTimeoutMs: config.databaseConnectTimeoutMs,
      statementTimeoutMs: config.databaseStatementTimeoutMs,
      poolSize: config.databasePoolSize,
      instanceLock: singleInstance ? 'exclusive' : 'shared',
      onInstanceLockTaken: (error) => (options.onFatal ? options.onFatal(error) : void closeInstance()),
      logger,
    }));
  const db = database.db;
  const faults = options.faults ?? new Faults();
  const metrics = new Metrics();
  // With Redis, instances share stop signals and live events (pub/sub) and a durable run queue (BullMQ).
  const bus =
    options.bus ??
    (config.redisUrl
      ? new RedisBus({ url: config.redisUrl, keyPrefix: `${config.redisPrefix}:`, logger })
      : new MemoryBus({ logger }));
  // A base at or over the maximum is a fixed count: WorkerSlots then keeps no load limit.
  const workerLoad = { base: config.workerBaseConcurrency, maxLoopDelayMs: config.workerMaxLoopDelayMs };
  const queue =
    options.queue ??
    (config.redisUrl
      ? new BullMqQueue({
          url: config.redisUrl,
          prefix: config.redisPrefix,
          logger,
          concurrency: config.workerConcurrency,
          load: workerLoad,
        })
      : new MemoryQueue({ logger, concurrency: config.workerConcurrency, load: workerLoad }));
  metrics.readAdmissionLimit = () => queue.admissionLimit?.();
  metrics.readPoolUsage = () => database.poolUsage?.();
  // A written schedule may be due sooner than any instance's runner sleeps.
  const schedules: ScheduleService = new ScheduleService({
    db,
    clock: options.clock,
    onWrite: () => scheduler.written(),
    // `agents` is built below; the schedule routes call this only once the app is up.
    configs: {
      runConfig: (config): Promise<RunConfig> => agents.runConfig(config),
      builtInToolsTokens: (config) => agents.builtInToolsTokens(config),
    },
  });
  const tools = options.tools ?? createDefaultToolRegistry({ followups: schedules });
  const resolve = options.resolveModel ?? ((modelId: string) => resolveModel({ modelId }));
  const instanceId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;

  const log = new EventLog({
    db,
    appendDb: database.appendDb,
    bus,
    metrics,
    logger,
    faults,
    coalesceMs: config.eventCoalesceMs,
  });
  const compactor = new EventCompactor({
    log,
    logger,
    metrics,
    // PGlite has no autovacuum: without one now and then, compacted rows' space would never be reused.
    vacuumAfterEvents: database.kind === 'pglite' ? VACUUM_AFTER_EVENTS : undefined,
    // PGlite runs every statement on this thread: small batches, with the event loop free between them.
    maxBatchEvents: database.kind === 'pglite' ? PGLITE_COMPACTION_BATCH_EVENTS : undefined,
    retentionMs: config.eventRetentionDays === undefined ? undefined : config.eventRetentionDays * DAY_MS,
  });
  const runs = new RunService({ db, metrics, faults });
  /** Status changes whose transaction recorded webhook deliveries, until their `afterCommit`. */
  const recordedDeliveries = new WeakSet<TransitionResult>();
  const prices = ModelPrices.fromFile(config.modelPricesFile);
  const lifecycle = new Lifecycle({
    db,
    log,
    queue,
    metrics,
    logger,
    faults,
    prices,
    listeners: [runWebhooksListener((change) => recordedDeliveries.add(change))],
    afterCommit: (change) => {
      // A status change that recorded deliveries: send them now rather than at the next poll. One that
      // recorded none (no webhook subscribed) costs the dispatcher no pass.
      if (recordedDeliveries.delete(change)) webhookDispatcher.nudge();
      // A finished run never gets another event: its log is compacted in the background.
      if (isTerminalStatus(change.run.status)) compactor.schedule(change.run.id);
    },
  });
  const chats = new ChatService(db);
  const mcp = new McpClientPool({ allowPrivateUrls: config.allowPrivateUrls, logger });
  const agents = new AgentService({
    db,
    tools,
    resolveModel: resolve,
    mcp,
    defaultModel: config.defaultModel,
    allowPrivateUrls: config.allowPrivateUrls,
  });
  const quotas = new QuotaService({ db, clock: options.clock });
  const executor: RunExecutor = new RunExecutor({
    runs,
    lifecycle,
    chats,
    log,
    tools,
    resolveModel: resolve,
    metrics,
    logger,
    faults,
    instanceId,
    leaseMs: config.leaseMs,
    clock: options.clock,
    mcp,
    prices,
    compactions: new CompactionStore({ db }),
    quotas,
    waitTtlMs: config.waitTtlMs,
    modelIdleMs: config.modelIdleTimeoutMs,
    continueRun: (run, runConfig) => engine.startContinuation(run, runConfig),
  });
  const engine: RunEngine = new RunEngine({
    db,
    runs,
    lifecycle,
    executor,
    configs: agents,
    resolveModel: resolve,
    prices,
    quotas,
    log,
    compactor,
    bus,
    queue,
    metrics,
    logger,
    faults,
    clock: options.clock,
    interruptWaitMs: options.interruptWaitMs,
    singleInstance,
    sweepIntervalMs: config.sweepIntervalMs,
    leaseMs: config.leaseMs,
    maxAttempts: config.maxAttempts,
    worker: options.worker,
  });
  const auth = new AuthService({ db, bus, logger });
  const webhookDispatcher = new WebhookDispatcher({
    db,
    logger,
    metrics,
    allowPrivateUrls: config.allowPrivateUrls,
    pollIntervalMs: config.webhookPollIntervalMs,
    claimLeaseMs: config.webhookClaimLeaseMs,
    deliveryRetentionMs: config.webhookDeliveryRetentionDays * DAY_MS,
  });
  const webhooks = new WebhookService({
    db,
    allowPrivateUrls: config.allowPrivateUrls,
    // A retried delivery is due at once: send it now rather than at the next poll.
    onDeliveriesDue: () => webhookDispatcher.nudge(),
  });
  const idempotency = new IdempotencyKeys({ db });
  const rateLimiter =
    options.rateLimiter ??
    createRequestRateLimiter({
      perMinute: config.rateLimitPerMinute,
      authFailuresPerMinute: config.authFailuresPerMinute,
      redis:
        config.redisUrl && (config.rateLimitPerMinute > 0 || config.authFailuresPerMinute > 0)
          ? rateLimitRedis(config.redisUrl, logger)
          : undefined,
      keyPrefix: config.redisPrefix,
    });
  const scheduler = new ScheduleRunner({
    db,
    engine,
    logger,
    metrics,
    clock: options.clock,
    pollIntervalMs: config.schedulePollIntervalMs,
    bus,
    instanceId,
  });
  const context: OutrunContext = {
    config,
    db,
    auth,
    chats,
    runs,
    lifecycle,
    engine,
    executor,
    log,
    compactor,
    metrics,
    logger,
    faults,
    tools,
    resolveModel: resolve,
    draining: false,
    webhooks,
    webhookDispatcher,
    idempotency,
    agents,
    mcp,
    bus,
    quotas,
    rateLimiter,
    schedules,
    scheduler,
  };
  const server = buildServer(context);
  let closed: Promise<void> | null = null;
  const instance: Outrun = {
    ...context,
    server,
    database,
    async start() {
      const { generatedKey, adminKeyRevokedAt } = await auth.seedAdmin({ adminKey: config.adminKey });
      if (adminKeyRevokedAt) {
        logger.warn(
          { revokedAt: adminKeyRevokedAt.toISOString() },
          'OUTRUN_ADMIN_KEY names a key that was revoked: it does not authenticate. Set a new OUTRUN_ADMIN_KEY ' +
            'to get the owner’s access back.',
        );
      }
      await engine.start();
      webhookDispatcher.start();
      await scheduler.start();
      return { generatedAdminKey: generatedKey };
    },
    async listen() {
      return server.listen({ port: config.port, host: config.host, backlog: LISTEN_BACKLOG });
    },
    close(closeOptions = {}) {
      closed ??= (async () => {
        // Streams stay open and requests are served through the grace period; `/readyz` says 503 so a
        // load balancer sends new work elsewhere. Unfinished runs are then handed back, not aborted.
        context.draining = true;
        // No schedule starts a run on an instance that is handing its runs back.
        await scheduler.stop();
        await engine.shutdown({ graceMs: closeOptions.graceMs ?? config.shutdownGraceMs });
        await server.close();
        await log.drain();
        await compactor.close();
        await webhookDispatcher.stop();
        await mcp.close();
        await rateLimiter.close();
        await bus.close();
        if (!options.database) await database.close();
      })();
      return closed;
    },
  };
  closeInstance = () => instance.close();
  return instance;
}

/**
 * The rate limiter's own Redis connection. Commands fail at once while it is not connected (no offline
 * queue), so the limiter counts in memory during an outage instead of holding requests.
 */
function rateLimitRedis(url: string, logger: Logger): Redis {
  const redis = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  let reported = false;
  redis.on('error', (error: Error) => {
    if (!reported) logger.warn({ err: error }, 'rate limiter: Redis unavailable, counting in memory');
    reported = true;
  });
  redis.on('ready', () => {
    reported = false;
  });
  return redis;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
