import { Redis } from 'ioredis';
import t from 'tap';
import { createRedisStore } from '../../src/store/redis-store.js';
import { loginPathOptions } from '../../src/store/redis-client.js';
import { startRedis } from '../helpers/redis.js';
import { storeContract } from './contract.js';

const server = await startRedis();
t.teardown(() => server.stop());

const clients: Redis[] = [];
async function makeStore() {
  const redis = new Redis(server.url, { ...loginPathOptions(500) });
  await new Promise((r) => redis.once('ready', r));
  clients.push(redis);
  return createRedisStore({ redis, keyPrefix: 'test:' });
}

storeContract(t, 'redis', makeStore);

t.test('redis: every key has a TTL', async (t) => {
  const store = await makeStore();
  const now = Date.now();
  await store.observe({ user: 'ttl-user', device: 'd', ip: 'i', prefix: 'p', asn: 1, country: 'SE' }, now);
  await store.trust({ user: 'ttl-user', device: 'd', ip: 'i', prefix: 'p', grantedBy: 's', ttlMs: 60_000, place: { lat: 1, lon: 2, accuracyKm: 3, travelNet: 'n' } }, now);
  await store.recordDecline('ttl-user', now);
  await store.countSessionOpen('ttl-user', 60_000, now);
  await store.claimOnce('ttl-claim', 60_000, now);
  const keys = server.cli('--scan').split('\n').filter(Boolean);
  t.ok(keys.length >= 8, `${keys.length} keys`);
  const withoutTtl = keys.filter((key) => Number(server.cli('pttl', key).trim()) < 0);
  t.same(withoutTtl, []);
  await store.close();
});
