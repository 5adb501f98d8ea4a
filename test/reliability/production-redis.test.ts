/**
 * Issue #16 §1: production's own wiring on real Redis and on a real Cluster. The service runs as
 * production runs it (`node dist/…/server.js`, configured only by its environment, its own client
 * options from src/store/redis-client.ts); the test talks to it over HTTP only. The test's own
 * Redis client seeds pending step-ups and reads back what the service wrote.
 */
import type { Cluster, Redis } from 'ioredis';
import t from 'tap';
import { createRedisClient, waitForReady } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { startServerProcess } from '../helpers/process.js';
import {
  approved,
  decide,
  deliver,
  deliverLikeDidit,
  entry,
  metric,
  pendingSession,
  PREFIX,
  readyz,
  serviceEnv,
  simulator,
} from '../helpers/production.js';
import { freePort, startRedis, startRedisCluster } from '../helpers/redis.js';
import { until } from '../helpers/poll.js';
import { countBy } from '../helpers/count.js';

t.teardown(() => simulator.app.close());

/** Every key the service wrote, with its TTL, on every master. */
async function keyTtls(client: Redis | Cluster): Promise<Map<string, number>> {
  const nodes =
    'nodes' in client && typeof (client as Cluster).nodes === 'function' && (client as Cluster).isCluster
      ? (client as Cluster).nodes('master')
      : [client as Redis];
  const ttls = new Map<string, number>();
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) ttls.set(key, await node.pttl(key));
    } while (cursor !== '0');
  }
  return ttls;
}

interface Backend {
  readonly url: string;
  /** Make the store unavailable to the service, then available again with its data intact. */
  down(): Promise<void>;
  up(): Promise<void>;
  stop(): Promise<void>;
}

function suite(name: string, start: () => Promise<Backend>, withLimits = false) {
  t.test(`${name}: production wiring through HTTP`, async (t) => {
    const backend = await start();
    const server = await startServerProcess(serviceEnv(backend.url), entry);
    simulator.webhookUrl = `${server.base}/v1/webhooks/didit`;
    // The test's client: production's factory, a generous deadline (it is not on a login path).
    const client = createRedisClient(backend.url, 2000);
    client.on('error', () => undefined);
    await waitForReady(client, 10_000);
    const store = createRedisStore({ redis: client, keyPrefix: PREFIX });
    t.teardown(async () => {
      server.child.kill('SIGKILL');
      await server.exited();
      client.disconnect();
      await backend.stop();
    });

    t.test('ready on the store the environment names', async (t) => {
      t.equal((await readyz(server)).status, 200);
      t.match((await readyz(server)).body, { status: 'ready', store: 'redis', failing: [] });
    });

    t.test(
      'a step-up end to end: decide opens a Didit session, the signed verdict trusts the device, the next decide skips',
      async (t) => {
        const users = Array.from({ length: 10 }, (_, i) => `e2e-${name}-${i}`);
        for (const user of users) {
          const first = await decide(server, user);
          t.equal(first.status, 200);
          t.not(first.body.action, 'SKIP', `${user}: a new user and device is stepped up`);
          t.same(first.body.degraded, []);
          t.equal(first.body.verification.status, 'created');
          const codes = await simulator.complete(first.body.verification.session_id, 'Approved');
          t.same(
            codes,
            codes.map(() => 200),
            `the webhooks (In Progress, Approved) were accepted on the first delivery: ${codes}`,
          );
          const again = await decide(server, user);
          t.equal(again.body.action, 'SKIP', `${user}: the verified device on the same network skips`);
          t.same(again.body.degraded, []);
        }
        t.equal(
          await metric(server, /risk_webhook_events_total\{result="verified"\} (\d+)/),
          20,
          'In Progress and Approved, each applied once',
        );
      },
    );

    t.test('retention comes from the environment: trust 7 days, history 3 days, every key with a TTL', async (t) => {
      const ttls = await keyTtls(client);
      const day = 86_400_000;
      const family = (suffix: string) => [...ttls].filter(([key]) => key.endsWith(suffix)).map(([, ttl]) => ttl);
      t.ok(family(':dtrust').length >= 10, `${family(':dtrust').length} trust keys`);
      for (const ttl of family(':dtrust'))
        t.ok(ttl > 6.9 * day && ttl <= 7 * day, `trust TTL ${(ttl / day).toFixed(3)} days`);
      for (const ttl of family(':seen'))
        t.ok(ttl > 2.9 * day && ttl <= 3 * day, `sighting TTL ${(ttl / day).toFixed(3)} days`);
      t.ok(family(':seen').length >= 10);
      t.same(
        [...ttls].filter(([, ttl]) => ttl < 0).map(([key]) => key),
        [],
        `${ttls.size} keys, none without a TTL`,
      );
    });

    t.test('1,000 events × 5 concurrent deliveries through HTTP → exactly 1,000 grants', async (t) => {
      const sessions: Array<Awaited<ReturnType<typeof pendingSession>>> = [];
      for (let i = 0; i < 1000; i += 50)
        sessions.push(...(await Promise.all(Array.from({ length: 50 }, () => pendingSession(store)))));
      const verifiedBefore = await metric(server, /risk_webhook_events_total\{result="verified"\} (\d+)/);
      const results: Record<string, number> = {};
      const retried = { count: 0 };
      const started = Date.now();
      // Ten events at a time, each delivered five times at once: 50 requests in flight.
      for (let i = 0; i < sessions.length; i += 10) {
        const batch = sessions.slice(i, i + 10).flatMap((s) => {
          const event = approved(s);
          return Array.from({ length: 5 }, () => deliverLikeDidit(server, event.body, event.headers, retried));
        });
        for (const r of await Promise.all(batch))
          results[`${r.status} ${r.body.result}`] = (results[`${r.status} ${r.body.result}`] ?? 0) + 1;
      }
      t.comment(`${name}: 5,000 deliveries in ${Date.now() - started} ms; ${retried.count} redeliveries after a 503`);
      t.same(results, { '200 verified': 1000, '200 duplicate': 4000 });
      t.equal(
        (await metric(server, /risk_webhook_events_total\{result="verified"\} (\d+)/)) - verifiedBefore,
        1000,
        'the service applied 1,000 verdicts',
      );
      let trusted = 0;
      let doubled = 0;
      for (const s of sessions) {
        const devices = await store.listDevices(s.u, Date.now());
        if (devices.length === 1) trusted += 1;
        if (devices.length > 1) doubled += 1;
      }
      t.equal(trusted, 1000, '1,000 users hold exactly one trusted device');
      t.equal(doubled, 0);
    });

    if (withLimits) {
      t.test(
        'the rate limits on this store: two replicas share the per-user and the per-source webhook limits',
        async (t) => {
          // Their own key prefix: the per-source webhook counter must not include the deliveries above.
          const limited = serviceEnv(backend.url, {
            RATE_LIMIT_USER_PER_MIN: '10',
            RATE_LIMIT_WEBHOOK_PER_MIN: '20',
            REDIS_KEY_PREFIX: 'lim:',
          });
          const replicas = await Promise.all([startServerProcess(limited, entry), startServerProcess(limited, entry)]);
          t.teardown(async () => {
            for (const r of replicas) r.child.kill('SIGKILL');
            await Promise.all(replicas.map((r) => r.exited()));
          });
          const user = `limited-${name}-${Date.now()}`;
          // One at a time, alternating replicas: on a busy machine a burst can pass the 100 ms store
          // deadline, and a decide whose store call timed out is limited per process (degraded), by design.
          const decides: Array<Awaited<ReturnType<typeof decide>>> = [];
          for (let i = 0; i < 16; i++) decides.push(await decide(replicas[i % 2]!, user));
          const counts = countBy(decides, (d) => d.status);
          t.same(counts, { 200: 10, 429: 6 }, 'exactly 10 decides a minute for one user across both replicas');
          for (const d of decides.filter((d) => d.status === 429)) {
            t.equal(d.body.code, 'RISK_ERR_RATE_LIMITED');
            t.ok(Number(d.headers.get('retry-after')) >= 1, 'Retry-After');
          }
          t.same(
            decides.filter((d) => d.status === 200 && d.body.degraded.length > 0).length,
            0,
            'the limit was counted by the store, not by the per-process fallback',
          );
          const event = approved(await pendingSession(store)); // unbound under lim:, still counted
          const deliveries: number[] = [];
          for (let i = 0; i < 30; i++)
            deliveries.push((await deliver(replicas[i % 2]!, event.body, event.headers)).status);
          const webhookCounts = countBy(deliveries, (c) => c);
          // Signed deliveries are verified first and never refused for volume: only failed ones are limited (per process).
          t.same(webhookCounts, { 200: 30 }, 'every authentic delivery answered, across both replicas');
        },
      );
    }

    t.test(
      'store down → the webhook answers 503 (Didit retries) and decide degrades; back up → applied exactly once',
      async (t) => {
        const s = await pendingSession(store);
        const event = approved(s);
        await backend.down();
        const down = await deliver(server, event.body, event.headers);
        t.equal(down.status, 503, 'a temporary failure: 5xx so Didit retries');
        t.match(down.body, { code: 'RISK_ERR_UNAVAILABLE' });
        t.notMatch(JSON.stringify(down.body), /Connection|ECONN|timeout/i, 'no driver text leaks');
        const degraded = await decide(server, `down-${name}`);
        t.equal(degraded.status, 200);
        t.not(degraded.body.action, 'SKIP');
        t.ok(degraded.body.degraded.length > 0, `degraded: ${JSON.stringify(degraded.body.degraded)}`);
        t.equal((await readyz(server)).status, 503, 'not ready while the store is down');
        await backend.up();
        const readyMs = await until(async () => (await readyz(server)).status === 200, 10_000);
        t.ok(readyMs >= 0, `ready again ${readyMs} ms after the store came back`);
        t.match(
          await deliver(server, event.body, event.headers),
          { status: 200, body: { result: 'verified' } },
          "Didit's retry applies it",
        );
        t.match(await deliver(server, event.body, event.headers), { status: 200, body: { result: 'duplicate' } });
        // The test's own client reconnects on its own schedule (no offline queue): read once it is back.
        let devices: unknown[] | undefined;
        await until(async () => {
          devices = await store.listDevices(s.u, Date.now()).catch(() => undefined);
          return devices !== undefined;
        }, 10_000);
        t.equal(devices?.length, 1);
      },
    );
  });
}

suite('redis', async () => {
  // AOF fsynced each second: the restart below brings back what was written over a second before the kill.
  const redis = await startRedis(['--appendonly', 'yes', '--appendfsync', 'everysec']);
  return {
    url: redis.url,
    async down() {
      await new Promise((r) => setTimeout(r, 1500));
      await redis.kill();
    },
    up: () => redis.restart(),
    stop: () => redis.stop(),
  };
});

suite(
  'cluster',
  async () => {
    const cluster = await startRedisCluster();
    const masters = () => cluster.servers.filter((s) => s.cli('role').startsWith('master'));
    let paused: typeof cluster.servers = [];
    return {
      url: `redis+cluster://${cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`,
      // Hung masters (SIGSTOP) for well under the 2 s node timeout, so no replica takes over.
      async down() {
        paused = masters();
        for (const m of paused) m.pause();
      },
      async up() {
        for (const m of paused) m.resume();
      },
      stop: () => cluster.stop(),
    };
  },
  true,
);

t.test(
  'redis: waiting for Redis at start; decisions degrade (never SKIP) until it is up, then readiness follows',
  async (t) => {
    const port = await freePort();
    const spawnedAt = Date.now();
    const server = await startServerProcess(serviceEnv(`redis://127.0.0.1:${port}`), entry, process.cwd(), {
      requireReady: false,
    });
    t.teardown(async () => {
      server.child.kill('SIGKILL');
      await server.exited();
    });
    t.comment(`listening ${Date.now() - spawnedAt} ms after spawn (it waits up to 5 s for Redis)`);
    t.match(server.output(), /redis not ready at start/);
    t.match(await readyz(server), { status: 503, body: { failing: ['store'] } });
    const degraded = await decide(server, 'waiting-user');
    t.equal(degraded.status, 200);
    t.not(degraded.body.action, 'SKIP');
    t.ok(degraded.body.degraded.length > 0);
    const redis = await startRedis([], port);
    t.teardown(() => redis.stop());
    const readyMs = await until(async () => (await readyz(server)).status === 200, 10_000);
    t.ok(readyMs >= 0, `ready ${readyMs} ms after Redis started`);
    t.same((await decide(server, 'waiting-user-2')).body.degraded, []);
  },
);
