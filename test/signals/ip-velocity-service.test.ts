import type { Redis } from 'ioredis';
import t from 'tap';
import { createRedisClient } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { until } from '../helpers/poll.js';
import { startRedis } from '../helpers/redis.js';
import { startTestService, injectDecide } from '../helpers/service.js';

t.test('a failed per-address sync is counted in risk_degraded_total, and decides still answer', async (t) => {
  const server = await startRedis();
  t.teardown(() => server.stop());
  const redis = createRedisClient(server.url, 100) as Redis;
  redis.on('error', () => undefined);
  if (redis.status !== 'ready') await new Promise((r) => redis.once('ready', r));
  const service = await startTestService({}, { store: createRedisStore({ redis, keyPrefix: 'vs:' }), redis });
  t.teardown(() => service.close());
  const decide = () => injectDecide(service, { user_id: 'vs-user', device_id: 'd', ip: '89.160.20.130' });
  t.equal((await decide()).statusCode, 200);
  await server.kill();
  const reply = await decide();
  t.equal(reply.statusCode, 200, 'the decide answers while Redis is down');
  t.equal(reply.json().signals['velocity.ip_decides_1m'], undefined, 'store signals are unknown, as before');
  const waited = await until(
    async () => /risk_degraded_total\{input="ip_velocity_sync"\} [1-9]/.test(await service.metrics.registry.metrics()),
    5000,
  );
  t.ok(waited >= 0, `the failed sync was counted (${waited} ms)`);
});
