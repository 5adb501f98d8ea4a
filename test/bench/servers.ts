// First, as in src/server.ts: the production process's V8 flags.
import '../../src/v8-flags.js';
import { writeFileSync } from 'node:fs';
/**
 * The servers the benchmark compares, each run as its own process so its CPU time and RSS can be
 * read from /proc: BENCH_MODE=bare | bare-lua | decide (decide uses the real service; REDIS_URL
 * selects the Redis store). Prints "ready <port>" when listening.
 */
import Fastify from 'fastify';
import type { Redis } from 'ioredis';
import { envSchema, loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { createService } from '../../src/compose.js';
import { createRedisClient } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { OBSERVE } from '../../src/store/redis-scripts.js';
import { CAPS, DEFAULT_RETENTION } from '../../src/store/store.js';
import { parseClientIp } from '../../src/signals/ip.js';
import { createMetricsApp } from '../../src/routes/metrics-listener.js';
import maxmind, { type AsnResponse, type CityResponse } from 'maxmind';
import { USERS_PER_ROUND, seedIdentity } from './traffic.js';

const mode = process.env.BENCH_MODE ?? 'decide';
/** What a decide passes the store's script by default: 30 days of history, RATE_LIMIT_USER_PER_MIN. */
const HISTORY_MS = DEFAULT_RETENTION.historyMs;
const USER_PER_MINUTE = envSchema.shape.RATE_LIMIT_USER_PER_MIN.parse(undefined);
const port = Number(process.env.PORT ?? 0);

/** A reply of the same size as a typical decide reply, so (a) serialises as much JSON as (b). */
const CANNED = JSON.parse(process.env.BENCH_CANNED_REPLY ?? '{}') as object;

if (mode === 'bare' || mode === 'bare-lua') {
  const app = Fastify({ logger: false });
  // bare-lua is a decide's floor on Redis: production's client (its one write a turn and command
  // deadline, as the decide's store gets) running the store's own script with the store's key and
  // argument layout, the per-user limit included; every key is the user's, as in a decide.
  let redis: Redis | undefined;
  if (mode === 'bare-lua') {
    redis = createRedisClient(process.env.REDIS_URL!, 500) as Redis;
    redis.defineCommand('observe', { numberOfKeys: 9, lua: OBSERVE });
  }
  let n = 0;
  app.post('/v1/decide', async (request) => {
    const body = request.body as { user_id: string; device_id: string };
    if (redis) {
      const tag = `bench:{u:${body.user_id}}`;
      const now = Date.now();
      n = (n + 1) % 1e9;
      await (redis as unknown as { observe(...a: unknown[]): Promise<unknown> }).observe(
        `${tag}:seen`,
        `${tag}:dtrust`,
        `${tag}:ntrust`,
        `${tag}:place`,
        `${tag}:meta`,
        `${tag}:decides`,
        `${tag}:nets`,
        `${tag}:declines`,
        `${tag}:limit`,
        now,
        body.device_id,
        'ip:x',
        'pfx:x',
        'asn:1',
        'cc:SE',
        'pfx:x',
        HISTORY_MS,
        CAPS.devices,
        `${now}:bench:${n}`,
        CAPS.recentEvents,
        '1',
        USER_PER_MINUTE,
      );
    }
    return CANNED;
  });
  await app.listen({ port, host: '127.0.0.1' });
  process.stderr.write(`ready ${(app.server.address() as { port: number }).port}\n`);
} else {
  const config = loadConfig({
    ...process.env,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
    // One bench token stands in for a fleet of login servers: its per-caller limit is lifted, the check
    // still runs. Everything else is production's default: shedding on (event-loop delay and
    // MAX_DECIDES_IN_FLIGHT), the per-user limit, asynchronous logging to stdout.
    RATE_LIMIT_CALLER_PER_MIN: '100000000',
  });
  const redis = config.redis.url ? createRedisClient(config.redis.url, 500) : undefined;
  const store = redis ? createRedisStore({ redis, keyPrefix: config.redis.keyPrefix }) : undefined;
  // As `npm start` logs: pino's default destination, stdout, asynchronous (the bench points it at /dev/null).
  const logger = createLogger(config.log.level);
  const service = await createService(config, { logger, ...(store ? { store } : {}), ...(redis ? { redis } : {}) });
  await seedUsers(service, config.data.geoip);
  await service.app.listen({ port, host: '127.0.0.1' });
  const metrics = createMetricsApp(service.metrics.registry);
  await metrics.listen({ port: 0, host: '127.0.0.1' });
  process.stderr.write(
    `ready ${(service.app.server.address() as { port: number }).port} ${(metrics.server.address() as { port: number }).port}\n`,
  );
}
// BENCH_ALLOC_PROFILE=<file>: SIGUSR2 starts V8's sampling heap profiler, counting what collections
// freed too (where the young generation's churn comes from; BENCH_ALLOC_PROMOTED=1: only what outlived
// a scavenge, which is what makes scavenges slow), and SIGINT writes it.
const allocProfile = process.env.BENCH_ALLOC_PROFILE;
let profiling: import('node:inspector').Session | undefined;
if (allocProfile) {
  const { Session } = await import('node:inspector');
  process.on('SIGUSR2', () => {
    profiling = new Session();
    profiling.connect();
    profiling.post('HeapProfiler.startSampling', {
      samplingInterval: 4096,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: process.env.BENCH_ALLOC_PROMOTED !== '1',
    } as never);
  });
}
process.on('SIGINT', () => {
  if (!profiling || !allocProfile) process.exit(0);
  profiling.post('HeapProfiler.stopSampling', (error, result) => {
    if (!error) writeFileSync(allocProfile, JSON.stringify(result.profile));
    process.exit(0);
  });
});

/**
 * Every user of every round has a verified device and network, granted from where its address
 * really is in the loaded databases (as an Approved step-up would have), so 85% of decides SKIP. The
 * readers opened for it are local, so their copy of each database is collected once seeding is done.
 */
async function seedUsers(
  service: Awaited<ReturnType<typeof createService>>,
  files: { city?: string; asn?: string },
): Promise<void> {
  const city = await maxmind.open<CityResponse>(files.city!);
  const asn = await maxmind.open<AsnResponse>(files.asn!);
  const now = Date.now();
  const users = Number(process.env.BENCH_SEED_USERS ?? USERS_PER_ROUND);
  for (let start = 0; start < users; start += 500) {
    const batch: Array<Promise<void>> = [];
    for (let i = start; i < Math.min(users, start + 500); i++) {
      const seed = seedIdentity(i);
      const ip = parseClientIp(seed.ip);
      const country = city.get(ip.address)?.country?.iso_code;
      const asNumber = asn.get(ip.address)?.autonomous_system_number;
      batch.push(
        service.store.trust(
          {
            user: service.ids.id('user', seed.user),
            device: service.ids.id('device', seed.device),
            ip: service.ids.id('ip', ip.address),
            prefix: service.ids.id('net', ip.prefix),
            ...(country ? { country } : {}),
            ...(asNumber !== undefined ? { asn: asNumber } : {}),
            grantedBy: `seed-${i}`,
            ttlMs: 86_400_000,
            ua: { browser: 'Chrome', os: 'Windows' },
          },
          now,
        ),
      );
    }
    await Promise.all(batch);
  }
}
