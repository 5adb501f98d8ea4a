import { Redis } from 'ioredis';
import t from 'tap';
import { loginPathOptions } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { startRedis } from '../helpers/redis.js';
import { startTestService } from '../helpers/service.js';

const server = await startRedis();
t.teardown(() => server.stop());

async function redisService() {
  const redis = new Redis(server.url, loginPathOptions(100));
  redis.on('error', () => undefined);
  await new Promise((r) => redis.once('ready', r));
  return startTestService({ RATE_LIMIT_USER_PER_MIN: '5' }, { store: createRedisStore({ redis, keyPrefix: 'rl:' }), redis });
}

const a = await redisService();
const b = await redisService();
t.teardown(async () => {
  await a.close();
  await b.close();
});

const decide = (service: typeof a, user: string) =>
  service.app.inject({ method: 'POST', url: '/v1/decide', headers: { 'content-type': 'application/json', ...service.auth }, payload: JSON.stringify({ user_id: user, device_id: 'd', ip: '89.160.20.112' }) });

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
