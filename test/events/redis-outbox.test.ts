import t from 'tap';
import pino from 'pino';
import { loadConfig } from '../../src/config.js';
import { openStore } from '../../src/open-store.js';
import { createRedisClient } from '../../src/store/redis-client.js';
import { createRedisOutbox } from '../../src/store/outbox-redis.js';
import { startRedis, type RedisProcess } from '../helpers/redis.js';
import { startTestService, testClock, TEST_HASH_KEY, type TestService } from '../helpers/service.js';
import { newSecret, startReceiver, waitFor } from './receiver.js';

const clock = testClock();
const secret = newSecret();
const receiver = await startReceiver(secret, () => Math.floor(clock() / 1000));
const redis = await startRedis();
t.teardown(async () => {
  await receiver.close();
  await redis.stop();
});
const SHARDS = 8;
const streams = () => Array.from({ length: SHARDS }, (_, i) => `risk:{evt:${i}}:stream`);
const backlog = (server: RedisProcess) =>
  streams().reduce((sum, key) => sum + Number(server.cli('XLEN', key).trim() || 0), 0);

/** One replica of the service: its own Redis client and delivery worker, the shared outbox. */
async function replica(leaseMs = 3000): Promise<TestService & { redisClient: { disconnect(): void } }> {
  // A loaded 2-core machine: a 1 s command deadline, so an erase (the event source here) does not time out.
  const env = {
    REDIS_URL: redis.url,
    REDIS_COMMAND_TIMEOUT_MS: '1000',
    EVENTS_URL: receiver.url,
    EVENTS_SECRET: secret,
    EVENTS_INCLUDE_USER_ID: 'true',
  };
  const opened = await openStore(loadConfig({ ...env, ID_HASH_KEY: TEST_HASH_KEY }), {
    logger: pino({ level: 'silent' }),
  });
  const service = await startTestService(env, {
    clock,
    store: opened.store,
    redis: opened.redis!,
    events: { leaseMs, tuning: { pollMs: 20, leaseEveryMs: 150, statsEveryMs: 200, backoffBaseMs: 500 } },
  });
  return Object.assign(service, { redisClient: opened.redis! });
}

/** `count` events for each of `users` users: erasing a user emits device.revoked (reason erase). */
async function emitErases(services: TestService[], users: string[], count: number): Promise<void> {
  let turn = 0;
  for (let i = 0; i < count; i++) {
    for (const user of users) {
      const service = services[turn++ % services.length]!;
      const response = await service.app.inject({ method: 'DELETE', url: `/v1/users/${user}`, headers: service.auth });
      if (response.statusCode !== 204) throw new Error(`erase answered ${response.statusCode}`);
    }
  }
}

function reset(): void {
  receiver.attempts.length = 0;
  receiver.accepted.clear();
  receiver.answer = () => 200;
}

const inOrder = (users: string[], count: number) =>
  users.every(
    (user) => receiver.attempts.filter((d) => d.answered === 200 && d.event.data.user_id === user).length === count,
  );

t.test('a restart with events pending loses nothing (Redis outbox)', async (t) => {
  reset();
  receiver.answer = () => 503;
  const a = await replica();
  const users = Array.from({ length: 6 }, (_, i) => `restart-${i}-${Date.now()}`);
  await emitErases([a], users, 5);
  await waitFor(() => receiver.attempts.length >= 3, 10_000, 'failed attempts by the first process');
  t.equal(backlog(redis), 30, 'all 30 in the streams');
  const atRest = streams()
    .map((key) => redis.cli('XRANGE', key, '-', '+'))
    .join('\n');
  t.notMatch(atRest, 'restart-', 'the raw user ids (EVENTS_INCLUDE_USER_ID=true) are sealed at rest');
  t.notMatch(atRest, '"data"', 'so is the rest of the body (only the type is in clear, for metrics)');
  for (const key of streams()) {
    const ttl = Number(redis.cli('PTTL', key).trim());
    t.ok(ttl === -2 || ttl > 0, `${key} has a lifetime (${ttl})`);
  }
  await a.close();
  receiver.answer = () => 200;
  const b = await replica();
  t.teardown(() => b.close());
  await waitFor(() => receiver.accepted.size >= 30, 15_000, '30 deliveries after the restart');
  t.equal(receiver.accepted.size, 30, 'every event delivered');
  t.ok(
    [...receiver.accepted.values()].every((d) => d.length === 1),
    'each id once',
  );
  t.ok(inOrder(users, 5), 'each user complete');
  t.ok(
    receiver.attempts.every((d) => d.verified),
    'every attempt verifies',
  );
  await waitFor(() => backlog(redis) === 0, 5000, 'the streams to drain');
  t.equal(backlog(redis), 0, 'acknowledged entries leave the streams');
  await b.close();
});

t.test('two replicas share the shards and never deliver an event twice', async (t) => {
  reset();
  const a = await replica();
  const b = await replica();
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const holders = () =>
    new Set(Array.from({ length: SHARDS }, (_, i) => redis.cli('GET', `risk:{evt:${i}}:lease`).trim()).filter(Boolean));
  await waitFor(() => holders().size === 2, 10_000, 'both replicas to hold shards');
  const users = Array.from({ length: 40 }, (_, i) => `pair-${i}-${Date.now()}`);
  await emitErases([a, b], users, 5);
  await waitFor(() => receiver.accepted.size >= 200, 20_000, '200 deliveries');
  await new Promise((r) => setTimeout(r, 500));
  t.equal(receiver.attempts.length, 200, 'exactly one attempt per event');
  t.equal(receiver.accepted.size, 200);
  for (const user of users) {
    const seq = receiver.attempts
      .filter((d) => d.event.data.user_id === user)
      .map((d) => Date.parse(d.event.timestamp));
    t.ok(
      seq.length === 5 && seq.every((v, i) => i === 0 || v >= seq[i - 1]!),
      `${user.split('-').slice(0, 2).join('-')}: five, in order`,
    );
  }
  const delivered = async (s: TestService) =>
    (await s.metrics.events.get()).values
      .filter((v) => v.labels.result === 'delivered')
      .reduce((n, v) => n + v.value, 0);
  const [byA, byB] = [await delivered(a), await delivered(b)];
  t.comment(`replica A delivered ${byA}, replica B ${byB}`);
  t.ok(byA > 0 && byB > 0, 'both replicas did part of the work');
  t.equal(byA + byB, 200);
});

t.test(
  'a crashed replica: another claims its pending events after the lease lapses; duplicates only for what it had in flight',
  async (t) => {
    reset();
    receiver.answer = () => 503;
    // Leases of 3 s: long enough that a stalled event loop on a loaded machine does not lose one.
    const a = await replica(3000);
    const users = Array.from({ length: 5 }, (_, i) => `crash-${i}-${Date.now()}`);
    await emitErases([a], users, 4);
    await waitFor(
      () => receiver.attempts.length >= 5,
      10_000,
      'attempts by the replica that will crash (one per user)',
    );
    const attemptedByA = new Set(receiver.attempts.map((d) => d.id));
    // The crash, as Redis sees it: the connection drops, nothing is acknowledged, no lease is given back.
    a.redisClient.disconnect();
    receiver.answer = () => 200;
    const started = Date.now();
    const b = await replica(3000);
    t.teardown(async () => {
      await b.close();
      await a.close().catch(() => undefined);
    });
    await waitFor(() => receiver.accepted.size >= 20, 15_000, 'the other replica to deliver everything');
    t.comment(`taken over and delivered ${Date.now() - started} ms after the crash (lease 3000 ms)`);
    t.equal(receiver.accepted.size, 20, 'no event lost');
    const twice = [...receiver.accepted.entries()].filter(([, d]) => d.length > 1).map(([id]) => id);
    t.ok(
      twice.every((id) => attemptedByA.has(id)),
      `a duplicate (${twice.length}) only for an event the crashed replica had attempted; the id dedupes it`,
    );
    t.ok(inOrder(users, 4) || twice.length > 0, 'each user complete');
  },
);

t.test('a shard lease is held by one consumer at a time; a surplus is handed over only when given back', async (t) => {
  const clients = [createRedisClient(redis.url, 1000), createRedisClient(redis.url, 1000)];
  t.teardown(() => {
    for (const c of clients) c.disconnect();
  });
  await Promise.all(
    clients.map(
      (c) => new Promise((resolve) => (c.status === 'ready' ? resolve(undefined) : c.once('ready', resolve))),
    ),
  );
  const [a, b] = clients.map((c) =>
    createRedisOutbox({ redis: c, keyPrefix: 'lease-test:', maxEntries: 100, ttlMs: 60_000, leaseMs: 5000 }),
  );
  const first = await a!.leases(0);
  t.equal(first.held.length, SHARDS, 'alone, it takes every shard');
  const second = await b!.leases(0);
  t.same(second.held, [], 'a second consumer takes nothing that is held');
  const again = await a!.leases(0);
  t.equal(again.held.length, SHARDS, 'the holder keeps its leases');
  t.equal(again.surplus, SHARDS / 2, 'and learns it holds more than its share');
  for (const shard of again.held.slice(0, again.surplus)) await a!.releaseShard(shard);
  const shared = await b!.leases(0);
  t.equal(shared.held.length, SHARDS / 2, 'given back, the other consumer takes them');
  t.same(new Set([...shared.held, ...(await a!.leases(0)).held]).size, SHARDS, 'every shard held, none twice');
  await a!.release();
  await b!.release();
});
