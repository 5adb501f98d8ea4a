/**
 * ID_HASH_KEY rotation under load on a real Redis: a replica still on the old key and one on the new
 * key (the old as ID_HASH_KEY_PREVIOUS) decide for the same users at once; afterwards every trusted
 * device still SKIPs, the users' state sits under the new pseudonyms, and a step-up opened before the
 * rotation still teaches trust when its verdict arrives after it.
 */
import type { AddressInfo } from 'node:net';
import { Cluster, type Redis } from 'ioredis';
import t from 'tap';
import { createSimulator, simulatorCredentials } from '../../src/didit/simulator.js';
import { enforceClientDeadlines } from '../../src/store/command-deadline.js';
import { createRedisClient, loginPathOptions } from '../../src/store/redis-client.js';
import { createMemoryStore } from '../../src/store/memory-store.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import type { Store } from '../../src/store/store.js';
import { startRedis, startRedisCluster } from '../helpers/redis.js';
import { CHROME_WINDOWS, startTestService, testClock, type TestService } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

const OLD_KEY = 'o1:old-rotation-hash-key-0123456789abcdef';
const NEW_KEY = 'n2:new-rotation-hash-key-fedcba9876543210';
const PREFIX = 'rot:';
const USERS = 100;
// One address per user: a hundred users behind one address would trip the per-address velocity rules.
const ipOf = (user: string) => `81.2.69.${10 + (Number(user.split('-').pop()) || 0)}`;

const server = await startRedis();
t.teardown(() => server.stop());
const cluster = await startRedisCluster();
t.teardown(() => cluster.stop());

/** Production's client options on either topology (the Cluster with its offline queue off, as production). */
async function client(topology: 'redis' | 'cluster'): Promise<Redis | Cluster> {
  const redis =
    topology === 'redis'
      ? (createRedisClient(server.url, 500) as Redis)
      : enforceClientDeadlines(
          new Cluster(cluster.nodes, { redisOptions: loginPathOptions(), enableOfflineQueue: false }),
          500,
        );
  redis.on('error', () => undefined);
  if (redis.status !== 'ready') await new Promise((r) => redis.once('ready', r));
  return redis;
}
const clock = testClock(Date.now());
const credentials = simulatorCredentials();
const simulator = createSimulator({
  ...credentials,
  publicBaseUrl: 'http://127.0.0.1:1',
  clock,
  retryDelaysMs: [20, 50],
});
await simulator.app.listen({ port: 0, host: '127.0.0.1' });
t.teardown(() => simulator.app.close());
const diditBase = `http://127.0.0.1:${(simulator.app.server.address() as AddressInfo).port}`;

/** One replica: its own Redis client, as a separate process would have. */
async function replica(topology: 'redis' | 'cluster', env: Record<string, string>): Promise<TestService> {
  const redis = await client(topology);
  const service = await startTestService(
    { DIDIT_TIMEOUT_MS: '1500', REDIS_KEY_PREFIX: PREFIX, STEPUP_GLOBAL_MAX_PER_MIN: '600', ...env },
    {
      clock,
      store: createRedisStore({ redis, keyPrefix: PREFIX }),
      redis,
      didit: {
        baseUrl: diditBase,
        apiKey: credentials.apiKey,
        webhookSecrets: [credentials.webhookSecret],
        workflows: credentials.workflows,
      },
    },
  );
  await service.app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => service.close());
  return service;
}

async function decide(service: TestService, user: string, device: string) {
  const reply = await service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...service.auth },
    payload: { user_id: user, device_id: device, ip: ipOf(user), user_agent: CHROME_WINDOWS },
  });
  if (reply.statusCode !== 200) throw new Error(`decide ${reply.statusCode}: ${reply.body}`);
  return reply.json() as { action: string; degraded: string[]; verification?: { session_id: string } };
}

type Decision = Awaited<ReturnType<typeof decide>>;

/** Users in waves of ten at once: concurrent, yet within what a shared 2-core machine answers before the store deadline. */
async function inWaves(users: string[], work: (user: string) => Array<Promise<Decision>>): Promise<Decision[]> {
  const out: Decision[] = [];
  for (let i = 0; i < users.length; i += 10) out.push(...(await Promise.all(users.slice(i, i + 10).flatMap(work))));
  return out;
}

/** Every key matching, on every master of a Cluster. */
const scan = async (redis: Redis | Cluster, pattern: string) => {
  const keys: string[] = [];
  for (const node of redis instanceof Cluster ? redis.nodes('master') : [redis]) {
    let cursor = '0';
    do {
      const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== '0');
  }
  return keys;
};

for (const topology of ['redis', 'cluster'] as const) {
  t.test(
    `${topology}: rotate under load: no trust grant is lost, keys move, a pre-rotation step-up still grants`,
    async (t) => {
      const before = await replica(topology, { ID_HASH_KEY: OLD_KEY });
      const users = Array.from({ length: USERS }, (_, i) => `rot-user-${i}`);
      for (const user of users) await trustDirectly(before, { user, device: 'home', ip: ipOf(user) }, clock());
      // The fixture must hold: on the old key every trusted device SKIPs.
      const baseline = await inWaves(users, (user) => [decide(before, user, 'home')]);
      t.equal(
        baseline.filter((d) => d.action === 'SKIP').length,
        USERS,
        'before the rotation every trusted device SKIPs',
      );

      // A step-up opened before the rotation, its verdict still to come.
      await trustDirectly(before, { user: 'late-user', device: 'home', ip: ipOf('late-user') }, clock());
      const stepUp = await decide(before, 'late-user', 'new-phone');
      t.equal(stepUp.action, 'PASSIVE', 'a new device of a known user steps up');
      const sessionId = stepUp.verification!.session_id;
      t.ok(sessionId);

      // The rotation: a replica with the new key, the old as previous, while the old replica still serves.
      const after = await replica(topology, { ID_HASH_KEY: NEW_KEY, ID_HASH_KEY_PREVIOUS: OLD_KEY });
      const load = await inWaves(users, (user) => [
        decide(after, user, 'home'),
        decide(before, user, 'home'),
        decide(after, user, 'home'),
        decide(before, user, 'home'),
      ]);
      const fromNew = load.filter((_, i) => i % 2 === 0);
      const answered = fromNew.filter((d) => d.degraded.length === 0);
      // A decide past its store deadline on this shared machine is degraded, and then never SKIPs (by design).
      t.ok(
        answered.length >= fromNew.length / 2,
        `${answered.length} of ${fromNew.length} decides of the new replica had the store's answer`,
      );
      t.equal(
        answered.filter((d) => d.action === 'SKIP').length,
        answered.length,
        `each of them SKIPs, during the migration too`,
      );
      t.equal(
        fromNew.filter((d) => d.degraded.length > 0 && d.action === 'SKIP').length,
        0,
        'no degraded decide SKIPs',
      );

      // After the load: every trusted device still SKIPs, on the new key.
      const final: Decision[] = [];
      for (const user of users) final.push(await decide(after, user, 'home'));
      t.equal(final.filter((d) => d.degraded.length > 0).length, 0, 'one at a time, no decide is degraded');
      t.equal(
        final.filter((d) => d.action === 'SKIP').length,
        USERS,
        `every one of ${USERS} trusted devices still SKIPs`,
      );

      // Keys moved: the trust sits under the new pseudonyms, and nothing of the users is left under the old
      // ones but the pending index (left to lapse: a session matches no context under the new pseudonyms).
      const redis = await client(topology);
      t.teardown(() => redis.quit());
      const newIds = after.ids;
      const oldIds = newIds.previous!;
      let migrated = 0;
      for (const user of users) {
        const trust = await redis.hget(`${PREFIX}{u:${newIds.id('user', user)}}:dtrust`, newIds.id('device', 'home'));
        if (trust?.startsWith('test-grant|')) migrated += 1;
      }
      t.equal(migrated, USERS, 'each trust entry is under the new user and device pseudonyms');
      const leftOver: string[] = [];
      for (const user of users)
        leftOver.push(
          ...(await scan(redis, `${PREFIX}{u:${oldIds.id('user', user)}}*`)).filter((key) => !key.endsWith(':pending')),
        );
      t.same(leftOver, [], 'no family of any user is left under the old pseudonyms');
      const noTtl: string[] = [];
      for (const key of await scan(redis, `${PREFIX}{u:*`)) if ((await redis.pttl(key)) < 0) noTtl.push(key);
      t.same(noTtl, [], 'every key still has a TTL');

      // The verdict of the pre-rotation session arrives at the new replica and still teaches trust.
      simulator.webhookUrl = `http://127.0.0.1:${(after.app.server.address() as AddressInfo).port}/v1/webhooks/didit`;
      const codes = await simulator.complete(sessionId, 'Approved');
      t.same(codes, [200, 200], 'both deliveries accepted');
      const status = await after.app.inject({
        method: 'GET',
        url: `/v1/sessions/${sessionId}?user_id=late-user`,
        headers: after.auth,
      });
      t.equal(status.statusCode, 200, 'the status API finds the session by the raw user id under either key');
      t.equal(status.json().outcome, 'allow');
      const stranger = await after.app.inject({
        method: 'GET',
        url: `/v1/sessions/${sessionId}?user_id=rot-user-1`,
        headers: after.auth,
      });
      t.equal(stranger.statusCode, 404, 'another user id matches under neither key');
      const learnt = await decide(after, 'late-user', 'new-phone');
      t.equal(learnt.action, 'SKIP', 'the device approved in a pre-rotation session SKIPs on the new key');
      const listed = async () =>
        (
          (await after.app.inject({ method: 'GET', url: '/v1/users/late-user/devices', headers: after.auth })).json()
            .devices as Array<{ device: string }>
        )
          .map((d) => d.device)
          .sort();
      t.same(
        await listed(),
        [oldIds.id('device', 'home'), newIds.id('device', 'new-phone')].sort(),
        'the device not seen since the rotation is listed under its previous pseudonym',
      );
      t.equal((await decide(after, 'late-user', 'home')).action, 'SKIP', 'and SKIPs when it comes back');
      t.same(
        await listed(),
        [newIds.id('device', 'home'), newIds.id('device', 'new-phone')].sort(),
        'then both are listed under the new pseudonyms',
      );

      // Erasure reaches both pseudonyms: state the old replica wrote after the migration too.
      await decide(before, 'late-user', 'home');
      const erased = await after.app.inject({ method: 'DELETE', url: '/v1/users/late-user', headers: after.auth });
      t.equal(erased.statusCode, 204);
      t.same(
        await scan(redis, `${PREFIX}{u:${oldIds.id('user', 'late-user')}}*`),
        [],
        'nothing left under the old pseudonym',
      );
      t.same(
        await scan(redis, `${PREFIX}{u:${newIds.id('user', 'late-user')}}*`),
        [],
        'nothing left under the new pseudonym',
      );
    },
  );
}

t.test('a migration that fails or hangs is a store failure: degraded, never SKIP, and it answers', async (t) => {
  for (const [name, migrate] of [
    [
      'fails',
      async () => {
        throw new Error('migration refused');
      },
    ],
    ['hangs', () => new Promise<void>(() => undefined)],
  ] as const) {
    const memory = createMemoryStore();
    const store: Store = { ...memory, migrate };
    const service = await startTestService({ ID_HASH_KEY: NEW_KEY, ID_HASH_KEY_PREVIOUS: OLD_KEY }, { store });
    t.teardown(() => service.close());
    // A trusted device under the new key: only the failed migration stands between it and SKIP.
    await trustDirectly(service, { user: 'stuck-user', device: 'home', ip: ipOf('rot-user-7') }, Date.now());
    const reply = await service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': 'application/json', ...service.auth },
      payload: { user_id: 'stuck-user', device_id: 'home', ip: ipOf('rot-user-7'), user_agent: CHROME_WINDOWS },
    });
    t.equal(reply.statusCode, 200, `${name}: answered`);
    t.same(reply.json().degraded, ['store'], `${name}: the store is reported degraded`);
    t.not(reply.json().action, 'SKIP', `${name}: no SKIP without the history`);
    const healthy = await startTestService({ ID_HASH_KEY: NEW_KEY, ID_HASH_KEY_PREVIOUS: OLD_KEY }, { store: memory });
    t.teardown(() => healthy.close());
    const control = await healthy.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': 'application/json', ...healthy.auth },
      payload: { user_id: 'stuck-user', device_id: 'home', ip: ipOf('rot-user-7'), user_agent: CHROME_WINDOWS },
    });
    t.equal(
      control.json().action,
      'SKIP',
      `${name}: the same store with a working migration SKIPs (the fixture holds)`,
    );
  }
});
