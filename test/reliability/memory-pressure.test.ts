/**
 * Issue #16 §2b: Redis memory pressure never changes a decision silently. Every key has a TTL, so
 * every evicting policy (volatile-* included) may drop a declines counter or a pending step-up:
 * production refuses them at start and in readiness. Under `noeviction` a full Redis refuses writes:
 * readiness says so and decisions are degraded, never SKIP. On a real redis-server with `maxmemory`.
 */
import { spawn } from 'node:child_process';
import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { EvictingRedisError, openStore } from '../../src/open-store.js';
import { createRedisClient, waitForReady } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { createPseudonymiser, parseHashKey } from '../../src/store/pseudonymise.js';
import { DIDIT_ENV } from '../helpers/config-env.js';
import { productionEntry, startServerProcess, type ServerProcess } from '../helpers/process.js';
import { freePort, startRedis } from '../helpers/redis.js';
import { until } from '../helpers/poll.js';
import { CHROME_WINDOWS } from '../helpers/service.js';

const TOKEN = 'memory-pressure-token-0123456789';
const HASH_KEY = 'mp:memory-pressure-hash-key-0123456789ab';
const PREFIX = 'mp:';
const ids = createPseudonymiser(parseHashKey(HASH_KEY));
const entry = productionEntry();
const EVICTING = [
  'allkeys-lru',
  'allkeys-lfu',
  'allkeys-random',
  'volatile-lru',
  'volatile-lfu',
  'volatile-random',
  'volatile-ttl',
];
// With REDIS_URL the simulator is refused: a (never contacted) Didit is configured.
const env = (url: string, over: Record<string, string> = {}) => ({
  ...DIDIT_ENV,
  REDIS_URL: url,
  REDIS_KEY_PREFIX: PREFIX,
  ID_HASH_KEY: HASH_KEY,
  API_TOKENS: `tests:${TOKEN}`,
  RATE_LIMIT_USER_PER_MIN: '100000',
  LOG_LEVEL: 'warn',
  TOR_LIST_MAX_AGE_HOURS: '0',
  ...over,
});

/** The real entry point, expected to refuse to start: its exit code and output. */
async function refusedStart(vars: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, entry, {
    env: {
      ...process.env,
      PORT: String(await freePort()),
      METRICS_PORT: String(await freePort()),
      SIMULATOR_PORT: String(await freePort()),
      ...vars,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(killer);
  return { code, output };
}

async function decide(server: ServerProcess, user: string, ip = '89.160.20.112', device = 'phone') {
  const response = await fetch(`${server.base}/v1/decide`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: user, device_id: device, ip, user_agent: CHROME_WINDOWS }),
  });
  return { status: response.status, body: (await response.json()) as { action: string; degraded: string[] } };
}

async function readyz(server: ServerProcess) {
  const response = await fetch(`${server.base}/readyz`);
  return { status: response.status, body: (await response.json()) as { failing: string[] } };
}

const memoryOf = (info: string) => Number(/^used_memory:(\d+)/m.exec(info)![1]);

t.test(
  'every evicting maxmemory-policy is refused at start unless REDIS_ALLOW_EVICTION=true, and in readiness',
  async (t) => {
    const redis = await startRedis();
    t.teardown(() => redis.stop());
    // Every policy through openStore (what server.ts calls); one through the real process.
    for (const policy of EVICTING) {
      redis.cli('config', 'set', 'maxmemory-policy', policy);
      const refused = await openStore(loadConfig(env(redis.url)), { logger: createLogger('silent') }).then(
        (opened) => opened.store.close().then(() => undefined),
        (error: Error) => error,
      );
      t.ok(refused instanceof EvictingRedisError, `${policy}: refused`);
    }
    const { code, output } = await refusedStart(env(redis.url));
    t.not(code, 0, 'volatile-ttl: the process refuses to start');
    t.match(
      output,
      new RegExp(`maxmemory-policy evicts keys on 127\\.0\\.0\\.1:${redis.port} \\(volatile-ttl\\)`),
      'and says why',
    );
    redis.cli('config', 'set', 'maxmemory-policy', 'noeviction');
    const opened = await openStore(loadConfig(env(redis.url)), { logger: createLogger('silent') });
    t.equal(opened.store.kind, 'redis', 'noeviction: opened');
    await opened.store.close();
    redis.cli('config', 'set', 'maxmemory-policy', 'volatile-lru');
    const allowed = await startServerProcess(env(redis.url, { REDIS_ALLOW_EVICTION: 'true' }), entry);
    t.teardown(() => allowed.child.kill('SIGKILL'));
    t.equal((await readyz(allowed)).status, 200, 'explicitly allowed: it starts and is ready');
    t.match(allowed.output(), /may evict keys/, 'with a warning');
    allowed.child.kill('SIGKILL');

    redis.cli('config', 'set', 'maxmemory-policy', 'noeviction');
    const server = await startServerProcess(env(redis.url), entry);
    t.teardown(() => server.child.kill('SIGKILL'));
    t.match(await readyz(server), { status: 200, body: { failing: [] } }, 'noeviction: ready');
    redis.cli('config', 'set', 'maxmemory-policy', 'allkeys-lru');
    t.match(
      await readyz(server),
      { status: 503, body: { failing: ['store_eviction_policy'] } },
      'reconfigured while running: not ready',
    );
    redis.cli('config', 'set', 'maxmemory-policy', 'noeviction');
    t.equal((await readyz(server)).status, 200);
  },
);

t.test(
  'a flood of unique users into a Redis at maxmemory (noeviction): not ready, decisions degraded and never SKIP; sizing measured',
  async (t) => {
    const redis = await startRedis(['--maxmemory', '6mb', '--maxmemory-policy', 'noeviction']);
    t.teardown(() => redis.stop());
    const server = await startServerProcess(env(redis.url), entry);
    t.teardown(() => server.child.kill('SIGKILL'));
    const client = createRedisClient(redis.url, 2000);
    await waitForReady(client, 5000);
    t.teardown(() => client.disconnect());
    const store = createRedisStore({ redis: client, keyPrefix: PREFIX });

    // A returning user on a trusted device and network, and a user with two declines today.
    const now = Date.now();
    const trusted = {
      user: ids.id('user', 'mp-trusted'),
      device: ids.id('device', 'phone'),
      ip: ids.id('ip', '89.160.20.112'),
      prefix: ids.id('net', '89.160.20.0/24'),
      asn: 29518,
      country: 'SE',
    };
    await decide(server, 'mp-trusted');
    await store.trust({ ...trusted, grantedBy: 'mp-session', ttlMs: 86_400_000 }, now);
    await store.recordDecline(ids.id('user', 'mp-decliner'), now);
    await store.recordDecline(ids.id('user', 'mp-decliner'), now);
    const trustedBefore = await decide(server, 'mp-trusted');
    const declinerBefore = await decide(server, 'mp-decliner', '89.160.20.113');
    t.equal(trustedBefore.body.action, 'SKIP', 'before: the trusted user skips');
    t.equal(declinerBefore.body.action, 'ACTIVE_3D', 'before: two declines → ACTIVE_3D');

    // Sizing: 200 first-time sign-ins (each opens a step-up through the simulator), as production writes them.
    const memoryBefore = memoryOf(redis.cli('info', 'memory'));
    const keysBefore = Number(redis.cli('dbsize'));
    const address = (i: number) => `89.160.${20 + (Math.floor(i / 250) % 30)}.${1 + (i % 250)}`;
    for (let i = 0; i < 200; i += 20)
      await Promise.all(Array.from({ length: 20 }, (_, j) => decide(server, `mp-sizing-${i + j}`, address(i + j))));
    const perUnknownBytes = (memoryOf(redis.cli('info', 'memory')) - memoryBefore) / 200;
    const perUnknownKeys = (Number(redis.cli('dbsize')) - keysBefore) / 200;
    t.comment(
      `an unknown user's first sign-in: ${Math.round(perUnknownBytes)} bytes of used_memory and ${perUnknownKeys.toFixed(1)} keys`,
    );
    t.ok(perUnknownBytes > 0 && perUnknownKeys >= 1);

    // The flood: unique users until Redis is full (bounded: 20,000 sign-ins or 60 s).
    const started = Date.now();
    let sent = 0;
    let full = false;
    const outcomes: Record<string, number> = {};
    while (!full && sent < 20_000 && Date.now() - started < 60_000) {
      const batch = await Promise.all(
        Array.from({ length: 25 }, (_, j) => decide(server, `mp-flood-${sent + j}`, address(sent + j))),
      );
      sent += 25;
      for (const d of batch) {
        const key = `${d.status} ${d.body.action}${d.body.degraded.length ? ' degraded' : ''}`;
        outcomes[key] = (outcomes[key] ?? 0) + 1;
      }
      // Redis's own word, not the service's: a write from outside is refused with OOM.
      full = redis.cli('set', 'mp-probe', 'x').startsWith('OOM');
    }
    t.comment(
      `flood: ${sent} sign-ins in ${Date.now() - started} ms until Redis refused writes (OOM): ${JSON.stringify(outcomes)}; ${redis.cli('dbsize').trim()} keys in 6 MB`,
    );
    t.ok(full, 'Redis reached maxmemory and refused writes');
    t.notOk(
      Object.keys(outcomes).some((k) => !k.startsWith('200 ')),
      'every sign-in answered 200',
    );

    // At the limit, keys with short windows expire and writes pass again for a moment: hold Redis
    // firmly over its limit, as a growing working set would.
    redis.cli('config', 'set', 'maxmemory', String(memoryOf(redis.cli('info', 'memory')) - 512 * 1024));
    t.match(redis.cli('set', 'mp-probe', 'x'), /^OOM/);
    const readyMs = await until(async () => (await readyz(server)).status === 503, 5000);
    t.ok(readyMs >= 0, 'readiness turned 503');
    t.ok(
      (await readyz(server)).body.failing.includes('store_memory_full'),
      `failing: ${JSON.stringify((await readyz(server)).body.failing)}`,
    );
    const trustedFull = await decide(server, 'mp-trusted');
    const declinerFull = await decide(server, 'mp-decliner', '89.160.20.113');
    for (const [who, d] of [
      ['trusted', trustedFull],
      ['decliner', declinerFull],
    ] as const) {
      t.equal(d.status, 200);
      t.not(d.body.action, 'SKIP', `${who}: never SKIP while writes fail`);
      t.ok(d.body.degraded.includes('store'), `${who}: degraded ${JSON.stringify(d.body.degraded)}`);
    }
    t.equal(
      Number(redis.cli('exists', `${PREFIX}{u:${ids.id('user', 'mp-decliner')}}:declines`)),
      1,
      'nothing was evicted: the declines counter is still there',
    );

    redis.cli('config', 'set', 'maxmemory', '0');
    t.ok((await until(async () => (await readyz(server)).status === 200, 5000)) >= 0, 'room again: ready');
    t.equal(
      (await decide(server, 'mp-decliner', '89.160.20.113')).body.action,
      'ACTIVE_3D',
      'and the two declines still count',
    );
  },
);
