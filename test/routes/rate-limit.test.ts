import { Redis } from 'ioredis';
import t from 'tap';
import { createRedisClient } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { startRedis } from '../helpers/redis.js';
import { startTestService } from '../helpers/service.js';

const server = await startRedis();
t.teardown(() => server.stop());

async function redisService() {
  const redis = createRedisClient(server.url, 100) as Redis;
  redis.on('error', () => undefined);
  await new Promise((r) => redis.once('ready', r));
  return startTestService(
    { RATE_LIMIT_USER_PER_MIN: '5' },
    { store: createRedisStore({ redis, keyPrefix: 'rl:' }), redis },
  );
}

const a = await redisService();
const b = await redisService();
t.teardown(async () => {
  await a.close();
  await b.close();
});

const decide = (service: typeof a, user: string) =>
  service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...service.auth },
    payload: JSON.stringify({ user_id: user, device_id: 'd', ip: '89.160.20.112' }),
  });

t.test('two instances sharing Redis allow exactly N per user per window', async (t) => {
  const statuses: number[] = [];
  for (let i = 0; i < 15; i++) statuses.push((await decide(i % 2 ? a : b, 'limited-user')).statusCode);
  t.equal(statuses.filter((s) => s === 200).length, 5);
  t.equal(statuses.filter((s) => s === 429).length, 10);
  const limited = await decide(a, 'limited-user');
  t.equal(limited.statusCode, 429);
  t.equal(limited.json().code, 'RISK_ERR_RATE_LIMITED');
  t.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After says when');
  t.equal((await decide(a, 'another-user')).statusCode, 200, 'other users are not affected');
});

t.test('with Redis down the limiter falls back per process: no 500, no leak, still limited', async (t) => {
  await server.kill();
  const replies = [];
  for (let i = 0; i < 8; i++) replies.push(await decide(a, 'fallback-user'));
  const statuses = replies.map((r) => r.statusCode);
  t.notOk(statuses.includes(500));
  t.equal(statuses.filter((s) => s === 200).length, 5, 'the local window holds N');
  for (const r of replies) t.notOk(r.body.includes('Connection is closed'), 'no internal message');
  for (const r of replies.filter((r) => r.statusCode === 200)) t.not(r.json().action, 'SKIP');
  await server.restart();
});

t.test(
  'the per-caller budget is counted in this process: 429 with Retry-After past it, other callers unaffected',
  async (t) => {
    const service = await startTestService({
      API_TOKENS: 'busy:busy-token-0123456789abcdef,quiet:quiet-token-0123456789abcdef',
      RATE_LIMIT_CALLER_PER_MIN: '3',
    });
    t.teardown(() => service.close());
    const call = (token: string, i: number) =>
      service.app.inject({
        method: 'POST',
        url: '/v1/decide',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        payload: { user_id: `caller-user-${i}`, device_id: 'd', ip: '89.160.20.112' },
      });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await call('busy-token-0123456789abcdef', i)).statusCode);
    t.same(statuses, [200, 200, 200, 429, 429]);
    const refused = await call('busy-token-0123456789abcdef', 9);
    t.equal(refused.json().code, 'RISK_ERR_RATE_LIMITED');
    t.ok(
      Number(refused.headers['retry-after']) >= 1 && Number(refused.headers['retry-after']) <= 60,
      'Retry-After within the minute',
    );
    t.equal((await call('quiet-token-0123456789abcdef', 10)).statusCode, 200, 'another caller has its own budget');
    const metric = await service.metrics.registry.getSingleMetricAsString('risk_rate_limited_total');
    t.match(metric, /risk_rate_limited_total\{limit="caller"\} 3/);
    t.match(metric, /risk_rate_limited_total\{limit="user"\} 0/);
  },
);

t.test(
  'a decide is one script on Redis: the per-user limit rides in it, a refused decide records nothing',
  async (t) => {
    const redis = createRedisClient(server.url, 100) as Redis;
    redis.on('error', () => undefined);
    await new Promise((r) => redis.once('ready', r));
    const service = await startTestService(
      { RATE_LIMIT_USER_PER_MIN: '2' },
      { store: createRedisStore({ redis, keyPrefix: 'rl2:' }), redis },
    );
    t.teardown(() => service.close());
    const monitor = new Redis(server.url);
    t.teardown(() => monitor.disconnect());
    const commands: string[][] = [];
    const feed = await monitor.monitor();
    // Commands a script runs are logged too, with source "lua": only what the service sends counts.
    feed.on('monitor', (_time: string, args: string[], source: string) => {
      if (source !== 'lua') commands.push(args);
    });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await decide(service as typeof a, 'one-call-user')).statusCode);
    await new Promise((r) => setTimeout(r, 100));
    feed.disconnect();
    t.same(statuses, [200, 200, 429]);
    const names = commands.map((c) => c[0]!.toLowerCase());
    const history = commands.filter((c) => /^eval/i.test(c[0]!) && c[3]?.endsWith(':seen'));
    // The per-address window is synced once a second for all decides together, never per decide.
    // The decision record (rule effectiveness) is written after the reply, never awaited by it
    // (test/events/effectiveness-failures.test.ts: a hung records store does not hold a decide).
    const records = commands.filter((c) => /^eval/i.test(c[0]!) && c.some((arg) => arg.includes('{dr:')));
    const others = commands.filter(
      (c) => !history.includes(c) && !records.includes(c) && !(/^eval/i.test(c[0]!) && c[3]?.includes('{ipv:')),
    );
    t.equal(history.length, 3, 'one script per decide (the history, with the limit in it), limited or not');
    // The journal batches records (one script per shard per flush): counted by the record keys written.
    const recordKeys = records.flatMap((c) => c.filter((arg) => /\{dr:\d+\}:r:/.test(arg)));
    t.equal(
      recordKeys.length,
      2,
      'one decision record per answered decide, off the reply path; none for the refused one',
    );
    t.same(
      others.map((c) => c[0]),
      [],
      'nothing else on the decide path',
    );
    t.notOk(
      names.some((c) => c === 'multi' || c === 'incr'),
      'no MULTI and no separate counter',
    );
    const seen = await monitor.keys('rl2:*:decides');
    t.equal(seen.length, 1);
    t.equal(await monitor.zcard(seen[0]!), 2, 'the refused decide was not recorded in the history');
  },
);
