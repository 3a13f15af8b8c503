import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { BusChannel, BusClosedError, type Bus } from '../src/bus/bus.ts';
import { jsonChannel, type Channel } from '../src/bus/channel.ts';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { RedisBus } from '../src/bus/redis-bus.ts';
import { captureLogger } from './support/logger.ts';

const REDIS_URL = process.env.REDIS_URL;
/** Every channel this file uses lives under this prefix, so parallel runs never meet and cleanup is exact. */
const PREFIX = `outrun-test-bus-${randomBytes(4).toString('hex')}:`;

type BusKind = 'memory' | 'redis';
const BUS_KINDS: BusKind[] = REDIS_URL ? ['memory', 'redis'] : ['memory'];

/** A JSON channel for tests; the same name always means the same channel. */
function named(name: string): Channel<unknown> {
  return jsonChannel<unknown>(name);
}

/** A handler that keeps what it receives. */
function collector() {
  const messages: unknown[] = [];
  return { messages, handler: (message: unknown) => void messages.push(message) };
}

const open: Bus[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((bus) => bus.close()));
});

afterAll(async () => {
  if (!REDIS_URL) return;
  const admin = new Redis(REDIS_URL);
  try {
    const keys = await admin.keys(`${PREFIX}*`);
    if (keys.length > 0) await admin.del(...keys);
  } finally {
    await admin.quit();
  }
});

describe.each(BUS_KINDS)('bus conformance on %s', (kind) => {
  function createBus(options: { logger?: pino.Logger } = {}): Bus {
    const logger = options.logger ?? pino({ level: 'silent' });
    const bus =
      kind === 'memory'
        ? new MemoryBus({ logger })
        : new RedisBus({ url: REDIS_URL!, keyPrefix: PREFIX, logger });
    open.push(bus);
    return bus;
  }

  it('delivers each message to every subscriber of its channel, in publish order', async () => {
    const bus = createBus();
    const first = collector();
    const second = collector();
    await bus.subscribe(named('ordered'), first.handler);
    await bus.subscribe(named('ordered'), second.handler);
    const sent = Array.from({ length: 50 }, (_, index) => ({ index }));
    for (const message of sent) await bus.publish(named('ordered'), message);
    await vi.waitFor(() => expect(second.messages).toHaveLength(sent.length));
    expect(first.messages).toEqual(sent);
    expect(second.messages).toEqual(sent);
  });

  it('keeps publish order for messages published without waiting', async () => {
    const bus = createBus();
    const received = collector();
    await bus.subscribe(named('unawaited'), received.handler);
    const sent = Array.from({ length: 100 }, (_, index) => index);
    await Promise.all(sent.map((index) => bus.publish(named('unawaited'), index)));
    await vi.waitFor(() => expect(received.messages).toHaveLength(sent.length));
    expect(received.messages).toEqual(sent);
  });

  it('does not deliver to subscribers of other channels', async () => {
    const bus = createBus();
    const short = collector();
    const long = collector();
    const other = collector();
    await bus.subscribe(named('run-events:1'), short.handler);
    await bus.subscribe(named('run-events:10'), long.handler);
    await bus.subscribe(named('other'), other.handler);
    await bus.publish(named('run-events:1'), 'one');
    await bus.publish(named('run-events:10'), 'ten');
    // Messages from one publisher arrive in order, so once this one is in, the ones before it are too.
    await bus.publish(named('other'), 'barrier');
    await vi.waitFor(() => expect(other.messages).toEqual(['barrier']));
    expect(short.messages).toEqual(['one']);
    expect(long.messages).toEqual(['ten']);
  });

  it('says whether a subscription would hear the next message at once: in-process always, networked once confirmed', async () => {
    const bus = createBus();
    const channel = named('listening');
    const networked = kind !== 'memory';
    await vi.waitFor(() => expect(bus.ready()).toBe(true));
    expect(bus.listening(channel)).toBe(!networked);
    const subscribing = bus.subscribe(channel, collector().handler);
    // Asked for, not confirmed yet.
    expect(bus.listening(channel)).toBe(!networked);
    const unsubscribe = await subscribing;
    expect(bus.listening(channel)).toBe(true);
    expect(bus.listening(named('listening-other'))).toBe(!networked);
    await unsubscribe();
    expect(bus.listening(channel)).toBe(!networked);
    await bus.close();
    expect(bus.listening(channel)).toBe(false);
  });

  it('delivers nothing to a channel nobody subscribes to, and publishing there succeeds', async () => {
    const bus = createBus();
    await expect(bus.publish(named('nobody-listens'), { any: 'thing' })).resolves.toBeUndefined();
  });

  it('stops delivering once unsubscribed, and unsubscribing twice is harmless', async () => {
    const bus = createBus();
    const leaving = collector();
    const staying = collector();
    const unsubscribe = await bus.subscribe(named('leave'), leaving.handler);
    await bus.subscribe(named('leave'), staying.handler);
    await bus.publish(named('leave'), 1);
    await vi.waitFor(() => expect(staying.messages).toEqual([1]));
    await unsubscribe();
    await unsubscribe();
    await bus.publish(named('leave'), 2);
    await vi.waitFor(() => expect(staying.messages).toEqual([1, 2]));
    expect(leaving.messages).toEqual([1]);
  });

  it('delivers nothing more to a handler once unsubscribed, even during the delivery of a message', async () => {
    const bus = createBus();
    const removed = collector();
    const barrier = collector();
    let unsubscribeRemoved: () => Promise<void> = async () => {};
    await bus.subscribe(named('in-flight'), () => void unsubscribeRemoved());
    unsubscribeRemoved = await bus.subscribe(named('in-flight'), removed.handler);
    await bus.subscribe(named('in-flight'), barrier.handler);
    await bus.publish(named('in-flight'), 'first');
    await bus.publish(named('in-flight'), 'second');
    await vi.waitFor(() => expect(barrier.messages).toEqual(['first', 'second']));
    expect(removed.messages).toEqual([]);
  });

  it('delivers again to a channel whose last subscriber left and a new one arrived at once', async () => {
    const bus = createBus();
    const received = collector();
    const unsubscribe = await bus.subscribe(named('again'), () => {});
    const leaving = unsubscribe();
    await bus.subscribe(named('again'), received.handler);
    await leaving;
    await bus.publish(named('again'), 'hello');
    await vi.waitFor(() => expect(received.messages).toEqual(['hello']));
  });

  it('delivers twice to one function subscribed twice, until each subscription ends', async () => {
    const bus = createBus();
    const received = collector();
    const unsubscribeFirst = await bus.subscribe(named('twice'), received.handler);
    await bus.subscribe(named('twice'), received.handler);
    await bus.publish(named('twice'), 'a');
    await vi.waitFor(() => expect(received.messages).toEqual(['a', 'a']));
    await unsubscribeFirst();
    await bus.publish(named('twice'), 'b');
    await vi.waitFor(() => expect(received.messages).toEqual(['a', 'a', 'b']));
  });

  it('delivers on many channels at once, each message to its own channel', async () => {
    const bus = createBus();
    const channels = Array.from({ length: 200 }, (_, index) => `run-events:many-${index}`);
    const received = new Map<string, unknown[]>();
    await Promise.all(
      channels.map((channel) => {
        const messages: unknown[] = [];
        received.set(channel, messages);
        return bus.subscribe(named(channel), (message) => messages.push(message));
      }),
    );
    await Promise.all(channels.map((channel) => bus.publish(named(channel), { channel })));
    await vi.waitFor(() => {
      for (const channel of channels) expect(received.get(channel)).toEqual([{ channel }]);
    });
  });

  it('delivers nested JSON values intact', async () => {
    const bus = createBus();
    const received = collector();
    await bus.subscribe(named('json'), received.handler);
    const message = {
      runId: 'run_1',
      events: [
        { seq: 1, data: '{"type":"text-delta","delta":"ü ✓ \\n"}', terminal: false },
        { seq: 2, data: '{"type":"finish"}', terminal: true },
      ],
      nested: { list: [1, -2.5, null, [true, false]], empty: {}, text: 'line\nbreak "quoted"' },
    };
    await bus.publish(named('json'), message);
    await vi.waitFor(() => expect(received.messages).toHaveLength(1));
    expect(received.messages[0]).toEqual(message);
  });

  it("carries a run's events with their JSON text intact on the run-events channel", async () => {
    const bus = createBus();
    const received = collector();
    const channel = BusChannel.runEvents('run_typed');
    await bus.subscribe(channel, received.handler);
    const message = {
      runId: 'run_typed',
      events: [
        { seq: 1, data: '{"type":"text-delta",\n"delta":"ü ✓ 😀 \\u0000 \\n"}', terminal: false },
        { seq: 2, data: '{"type":"data-run","data":{"status":"succeeded"}}', terminal: true },
      ],
    };
    await bus.publish(channel, message);
    await vi.waitFor(() => expect(received.messages).toHaveLength(1));
    expect(received.messages[0]).toEqual(message);
  });

  it('carries stop and key-revocation signals on their own channels', async () => {
    const bus = createBus();
    const stops = collector();
    const revocations = collector();
    await bus.subscribe(BusChannel.runStop, stops.handler);
    await bus.subscribe(BusChannel.apiKeyRevoked, revocations.handler);
    await bus.publish(BusChannel.apiKeyRevoked, { keyId: 'key_1' });
    await bus.publish(BusChannel.runStop, { runId: 'run_1' });
    await vi.waitFor(() => expect(stops.messages).toEqual([{ runId: 'run_1' }]));
    expect(revocations.messages).toEqual([{ keyId: 'key_1' }]);
  });

  it('is ready once open and subscribed, and not once closed', async () => {
    const bus = createBus();
    await bus.subscribe(named('readiness'), () => {});
    await bus.publish(named('readiness'), 1);
    expect(bus.ready()).toBe(true);
    await bus.close();
    expect(bus.ready()).toBe(false);
  });

  it('keeps delivering to other handlers when one throws or rejects, and logs the failure', async () => {
    const { logger, records } = captureLogger();
    const bus = createBus({ logger });
    const received = collector();
    await bus.subscribe(named('faulty'), () => {
      throw new Error('handler broke');
    });
    await bus.subscribe(named('faulty'), (async () => {
      throw new Error('async handler broke');
    }) as (message: unknown) => void);
    await bus.subscribe(named('faulty'), received.handler);
    await expect(bus.publish(named('faulty'), 1)).resolves.toBeUndefined();
    await bus.publish(named('faulty'), 2);
    await vi.waitFor(() => expect(received.messages).toEqual([1, 2]));
    await vi.waitFor(() => {
      const failures = records.filter((record) => record.msg === 'a bus handler failed');
      expect(failures).toHaveLength(4);
      expect(failures.every((record) => record.channel === 'faulty')).toBe(true);
    });
  });

  it('rejects publish and subscribe once closed, and unsubscribing afterwards is harmless', async () => {
    const bus = createBus();
    const unsubscribe = await bus.subscribe(named('closing'), () => {});
    await bus.close();
    await bus.close();
    await expect(bus.publish(named('closing'), 1)).rejects.toThrow(BusClosedError);
    await expect(bus.subscribe(named('closing'), () => {})).rejects.toThrow(BusClosedError);
    await expect(unsubscribe()).resolves.toBeUndefined();
  });
});

describe.runIf(REDIS_URL)('RedisBus', () => {
  const admins: Redis[] = [];
  afterEach(async () => {
    await Promise.all(admins.splice(0).map((admin) => admin.quit()));
  });

  function createAdmin(): Redis {
    const admin = new Redis(REDIS_URL!);
    admins.push(admin);
    return admin;
  }

  function createBus(options: { keyPrefix?: string; logger?: pino.Logger } = {}): RedisBus {
    const bus = new RedisBus({
      url: REDIS_URL!,
      keyPrefix: options.keyPrefix ?? PREFIX,
      logger: options.logger ?? pino({ level: 'silent' }),
    });
    open.push(bus);
    return bus;
  }

  async function subscriberCount(admin: Redis, channel: string): Promise<number> {
    const reply = (await admin.pubsub('NUMSUB', PREFIX + channel)) as [string, number];
    return Number(reply[1]);
  }

  it('delivers messages published by one instance to subscribers on another', async () => {
    const publisher = createBus();
    const subscriber = createBus();
    const remote = collector();
    const local = collector();
    await subscriber.subscribe(named('run-stop'), remote.handler);
    await publisher.subscribe(named('run-stop'), local.handler);
    await publisher.publish(named('run-stop'), { runId: 'run_a' });
    await subscriber.publish(named('run-stop'), { runId: 'run_b' });
    await vi.waitFor(() => expect(remote.messages).toHaveLength(2));
    await vi.waitFor(() => expect(local.messages).toHaveLength(2));
    // Order holds per publishing instance only: each instance has its own message first (delivered at once).
    expect(local.messages).toEqual([{ runId: 'run_a' }, { runId: 'run_b' }]);
    expect(remote.messages).toEqual([{ runId: 'run_b' }, { runId: 'run_a' }]);
  });

  it('hands its own publishes to its handlers at once and once, not again when Redis sends them back', async () => {
    const own = createBus();
    const other = createBus();
    const mine = collector();
    const theirs = collector();
    await own.subscribe(named('run-stop'), mine.handler);
    await other.subscribe(named('run-stop'), theirs.handler);
    const publishing = own.publish(named('run-stop'), { runId: 'run_own_1' });
    // Delivered locally during the publish call, before any round trip to Redis.
    expect(mine.messages).toEqual([{ runId: 'run_own_1' }]);
    await publishing;
    await own.publish(named('run-stop'), { runId: 'run_own_2' });
    await vi.waitFor(() => expect(theirs.messages).toHaveLength(2));
    // A marker from the other instance arrives after Redis has sent every copy of the own messages back.
    await other.publish(named('run-stop'), { runId: 'run_marker' });
    await vi.waitFor(() => expect(mine.messages).toHaveLength(3));
    await sleep(50);
    expect(mine.messages).toEqual([{ runId: 'run_own_1' }, { runId: 'run_own_2' }, { runId: 'run_marker' }]);
  });

  it('delivers an identical message published by another instance as well as its own', async () => {
    const first = createBus();
    const second = createBus();
    const atFirst = collector();
    const atSecond = collector();
    await first.subscribe(named('run-stop'), atFirst.handler);
    await second.subscribe(named('run-stop'), atSecond.handler);
    await Promise.all([
      first.publish(named('run-stop'), { runId: 'run_same' }),
      second.publish(named('run-stop'), { runId: 'run_same' }),
    ]);
    await vi.waitFor(() => expect(atFirst.messages).toHaveLength(2));
    await vi.waitFor(() => expect(atSecond.messages).toHaveLength(2));
    await sleep(100);
    expect(atFirst.messages).toHaveLength(2);
    expect(atSecond.messages).toHaveLength(2);
  });

  it('keeps buses with different key prefixes apart', async () => {
    const ours = createBus();
    const theirs = createBus({ keyPrefix: `${PREFIX}other:` });
    const ourMessages = collector();
    const theirMessages = collector();
    await ours.subscribe(named('shared-name'), ourMessages.handler);
    await theirs.subscribe(named('shared-name'), theirMessages.handler);
    await theirs.publish(named('shared-name'), 'theirs');
    await ours.publish(named('shared-name'), 'ours');
    await vi.waitFor(() => expect(ourMessages.messages).toEqual(['ours']));
    await vi.waitFor(() => expect(theirMessages.messages).toEqual(['theirs']));
  });

  it('holds one Redis subscription per channel and drops it when the last local handler leaves', async () => {
    const admin = createAdmin();
    const bus = createBus();
    const unsubscribers = await Promise.all([1, 2, 3].map(() => bus.subscribe(named('shared'), () => {})));
    expect(await subscriberCount(admin, 'shared')).toBe(1);
    await unsubscribers[0]!();
    await unsubscribers[1]!();
    expect(await subscriberCount(admin, 'shared')).toBe(1);
    await unsubscribers[2]!();
    expect(await subscriberCount(admin, 'shared')).toBe(0);
  });

  it('ignores a message that is not JSON and keeps delivering', async () => {
    const { logger, records } = captureLogger();
    const admin = createAdmin();
    const bus = createBus({ logger });
    const received = collector();
    await bus.subscribe(named('malformed'), received.handler);
    await admin.publish(`${PREFIX}malformed`, '{"runId": "run_1", events: [');
    await bus.publish(named('malformed'), { ok: true });
    await vi.waitFor(() => expect(received.messages).toEqual([{ ok: true }]));
    expect(records.some((record) => record.msg === 'ignored a malformed bus message')).toBe(true);
  });

  it('subscribes again after its subscriber connection drops', async () => {
    const admin = createAdmin();
    const bus = createBus();
    const received = collector();
    await bus.subscribe(named('reconnect'), received.handler);
    const clients = (await admin.client('LIST')) as string;
    const line = clients.split('\n').find((entry) => entry.includes(` name=${PREFIX}bus-subscriber `));
    const id = line?.match(/\bid=(\d+)/)?.[1];
    expect(id).toBeDefined();
    await admin.client('KILL', 'ID', id!);
    // What is published while the subscriber is away is lost, as the port allows: publish until one arrives,
    // from another instance (the bus's own publishes reach its handlers without Redis).
    const publisher = createBus();
    let attempt = 0;
    await vi.waitFor(
      async () => {
        await publisher.publish(named('reconnect'), { attempt: ++attempt });
        expect(received.messages.length).toBeGreaterThan(0);
      },
      { timeout: 10_000, interval: 100 },
    );
    expect(await subscriberCount(admin, 'reconnect')).toBe(1);
  });

  it('resolves subscribe only once Redis holds the subscription, even on a bus still connecting', async () => {
    const admin = createAdmin();
    const bus = createBus();
    await bus.subscribe(named('confirmed'), () => {});
    expect(await subscriberCount(admin, 'confirmed')).toBe(1);
    expect(bus.ready()).toBe(true);
  });

  it('puts each run event on the wire with its data verbatim', async () => {
    const admin = createAdmin();
    const bus = createBus();
    const payloads: Buffer[] = [];
    admin.on('messageBuffer', (_channel: Buffer, payload: Buffer) => payloads.push(payload));
    await admin.subscribe(`${PREFIX}run-events:run_wire`);
    const data = '{"type":"text-delta","delta":"say \\"hi\\"\\n"}';
    await bus.publish(BusChannel.runEvents('run_wire'), {
      runId: 'run_wire',
      events: [{ seq: 4, data, terminal: false }],
    });
    await vi.waitFor(() => expect(payloads).toHaveLength(1));
    expect(payloads[0]!.toString()).toBe(
      `run-events/1 run_wire 1\n4 0 ${Buffer.byteLength(data)}\n${data}\n`,
    );
  });

  it('ignores a malformed run-events message and keeps delivering', async () => {
    const { logger, records } = captureLogger();
    const admin = createAdmin();
    const bus = createBus({ logger });
    const received = collector();
    const channel = BusChannel.runEvents('run_malformed');
    await bus.subscribe(channel, received.handler);
    await admin.publish(`${PREFIX}${channel.name}`, '{"runId":"run_malformed","events":[]}');
    await bus.publish(channel, { runId: 'run_malformed', events: [] });
    await vi.waitFor(() => expect(received.messages).toEqual([{ runId: 'run_malformed', events: [] }]));
    expect(records.some((record) => record.msg === 'ignored a malformed bus message')).toBe(true);
  });

  it('gives every one of 30 instances started at once the subscription it asked for', async () => {
    // Each instance subscribes at a different moment of its connection's handshake: a SUBSCRIBE written
    // before the ready check used to cost the instance its subscription for the life of the process.
    const keyPrefix = `${PREFIX}fleet-${randomBytes(3).toString('hex')}:`;
    const received = new Set<number>();
    const fleet = await Promise.all(
      Array.from({ length: 30 }, async (_, index) => {
        const bus = createBus({ keyPrefix });
        await sleep(index % 15);
        await bus.subscribe(BusChannel.runStop, () => void received.add(index));
        return bus;
      }),
    );
    const other = createBus({ keyPrefix });
    await other.publish(BusChannel.runStop, { runId: 'run_everywhere' });
    await vi.waitFor(() => expect(received.size).toBe(fleet.length), { timeout: 1000, interval: 20 });
  });

  it('quits both of its connections on close', async () => {
    const admin = createAdmin();
    const keyPrefix = `${PREFIX}closing-${randomBytes(3).toString('hex')}:`;
    const bus = createBus({ keyPrefix });
    await bus.subscribe(named('anything'), () => {});
    await bus.publish(named('anything'), 1);
    const names = async () =>
      ((await admin.client('LIST')) as string)
        .split('\n')
        .filter((entry) => entry.includes(` name=${keyPrefix}`)).length;
    expect(await names()).toBeGreaterThanOrEqual(2);
    await bus.close();
    await vi.waitFor(async () => expect(await names()).toBe(0));
  });
});
