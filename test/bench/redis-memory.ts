/**
 * Bytes per user in Redis: 100,000 synthetic users, each with a sighting and a trust grant, plus one
 * heavy user with 10,000 devices and networks (caps must hold). `npm run bench:memory`.
 */
import { Redis } from 'ioredis';
import { createRedisStore } from '../../src/store/redis-store.js';
import { createPseudonymiser } from '../../src/store/pseudonymise.js';
import { CAPS } from '../../src/store/store.js';
import { startRedis } from '../helpers/redis.js';

const USERS = Number(process.env.USERS ?? 100_000);
const server = await startRedis();
const redis = new Redis(server.url, { enableAutoPipelining: true });
const store = createRedisStore({ redis, keyPrefix: 'risk:' });
const ids = createPseudonymiser({ kid: 'b1', secret: 'bench-secret-0123456789abcdefghij' });
const baseline = Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
const now = Date.now();

for (let start = 0; start < USERS; start += 500) {
  const batch = [];
  for (let i = start; i < Math.min(start + 500, USERS); i++) {
    const user = ids.id('user', `user-${i}`);
    const grant = {
      user,
      device: ids.id('device', `dev-${i}`),
      ip: ids.id('ip', `10.0.${i % 256}.${i % 200}`),
      prefix: ids.id('net', `10.0.${i % 256}.${i % 200}`),
      asn: 7922,
      country: 'US',
    };
    batch.push(
      store.observe(grant, now).then(() =>
        store.trust(
          {
            ...grant,
            grantedBy: `s-${i}`,
            ttlMs: 90 * 86_400_000,
            place: { lat: 40.7, lon: -74, accuracyKm: 20, travelNet: ids.id('net', `10.0.${i % 256}.0/24`) },
            ua: { browser: 'Chrome', os: 'Windows' },
          },
          now,
        ),
      ),
    );
  }
  await Promise.all(batch);
}
const used = Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
const sample: number[] = [];
for (let i = 0; i < 1000; i++) {
  const user = ids.id('user', `user-${Math.floor((i * USERS) / 1000)}`);
  const keys = await redis.keys(`risk:{u:${user}}*`);
  let bytes = 0;
  for (const key of keys) bytes += Number(await redis.memory('USAGE', key));
  sample.push(bytes);
}
sample.sort((a, b) => a - b);

const heavy = ids.id('user', 'heavy-user');
for (let i = 0; i < 10_000; i++) {
  const g = {
    user: heavy,
    device: ids.id('device', `heavy-${i}`),
    ip: ids.id('ip', `h-${i}`),
    prefix: ids.id('net', `h-${i}`),
  };
  await store.observe(g, now + i);
  if (i % 10 === 0) await store.trust({ ...g, grantedBy: `h-${i}`, ttlMs: 86_400_000 }, now + i);
}
const heavyKeys = await redis.keys(`risk:{u:${heavy}}*`);
let heavyBytes = 0;
for (const key of heavyKeys) heavyBytes += Number(await redis.memory('USAGE', key));
const devices = await redis.hlen(`risk:{u:${heavy}}:dtrust`);
const networks = await redis.hlen(`risk:{u:${heavy}}:ntrust`);
const noTtl = [];
for (const key of await redis.keys('risk:*')) if ((await redis.pttl(key)) < 0) noTtl.push(key);

console.log(
  JSON.stringify(
    {
      users: USERS,
      used_memory_delta_bytes: used - baseline,
      bytes_per_user_mean: Math.round((used - baseline) / USERS),
      memory_usage_per_user_p50: sample[Math.floor(sample.length * 0.5)],
      memory_usage_per_user_p99: sample[Math.floor(sample.length * 0.99)],
      keys: await redis.dbsize(),
      heavy_user: {
        sightings: 10_000,
        trusted_devices_kept: devices,
        networks_kept: networks,
        caps: CAPS,
        bytes: heavyBytes,
      },
      keys_without_ttl: noTtl.length,
    },
    null,
    2,
  ),
);
await redis.quit();
await server.stop();
