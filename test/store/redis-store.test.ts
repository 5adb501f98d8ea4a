import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import t from 'tap';
import { createRedisStore } from '../../src/store/redis-store.js';
import { createRedisClient } from '../../src/store/redis-client.js';
import { startRedis } from '../helpers/redis.js';
import { storeContract } from './contract.js';

// REDIS_URL wins (a unique key prefix keeps runs apart); otherwise a throwaway redis-server.
const own = process.env.REDIS_URL ? undefined : await startRedis();
const url = process.env.REDIS_URL ?? own!.url;
const prefix = `test-${randomBytes(4).toString('hex')}:`;
t.teardown(async () => {
  const cleaner = new Redis(url);
  const keys = await cleaner.keys(`${prefix}*`);
  if (keys.length) await cleaner.del(...keys);
  await cleaner.quit();
  await own?.stop();
});

async function makeStore() {
  const redis = createRedisClient(url, 500) as Redis;
  await new Promise((r) => redis.once('ready', r));
  return createRedisStore({ redis, keyPrefix: prefix });
}

storeContract(t, 'redis', makeStore);

t.test('redis: every key has a TTL', async (t) => {
  const store = await makeStore();
  const now = Date.now();
  await store.observe({ user: 'ttl-user', device: 'd', ip: 'i', prefix: 'p', asn: 1, country: 'SE' }, now);
  await store.trust(
    {
      user: 'ttl-user',
      device: 'd',
      ip: 'i',
      prefix: 'p',
      grantedBy: 's',
      ttlMs: 60_000,
      place: { lat: 1, lon: 2, accuracyKm: 3, travelNet: 'n' },
    },
    now,
  );
  await store.recordDecline('ttl-user', now);
  await store.countSessionOpen('ttl-user', 'd', 60_000, now);
  await store.claimOnce('ttl-claim', 60_000, now);
  const scanner = new Redis(url);
  const keys = await scanner.keys(`${prefix}*`);
  t.ok(keys.length >= 8, `${keys.length} keys`);
  const withoutTtl: string[] = [];
  for (const key of keys) if ((await scanner.pttl(key)) < 0) withoutTtl.push(key);
  t.same(withoutTtl, []);
  await scanner.quit();
  await store.close();
});
