import { Cluster } from 'ioredis';
import t from 'tap';
import { enforceClientDeadlines } from '../../src/store/command-deadline.js';
import { loginPathOptions } from '../../src/store/redis-client.js';
import { createRedisOutbox } from '../../src/store/outbox-redis.js';
import type { OutboxEntry } from '../../src/store/outbox-contract.js';
import { startRedisCluster } from '../helpers/redis.js';

const cluster = await startRedisCluster();
t.teardown(() => cluster.stop());

t.test(
  'on a 3-master Cluster every outbox command stays in one slot: append, lease, claim, read, ack, stats',
  async (t) => {
    const clients = [0, 1].map(() =>
      enforceClientDeadlines(
        new Cluster(cluster.nodes, { redisOptions: loginPathOptions(), enableOfflineQueue: true }),
        1000,
      ),
    );
    t.teardown(() => {
      for (const c of clients) c.disconnect();
    });
    await Promise.all(clients.map((c) => new Promise((r) => c.once('ready', r))));
    const [a, b] = clients.map((redis) =>
      createRedisOutbox({ redis, keyPrefix: 'cluster-evt:', maxEntries: 1000, ttlMs: 60_000, leaseMs: 5000 }),
    );
    const users = Array.from({ length: 12 }, (_, i) => `user-${i}`);
    for (let seq = 0; seq < 4; seq++)
      for (const user of users)
        t.ok(
          await a!.append({
            eventId: `${user}:${seq}`,
            orderKey: user,
            type: 'device.revoked',
            body: `{"seq":${seq}}`,
            at: 1000 + seq,
          }),
          `${user}:${seq}`,
        );
    t.equal((await a!.stats(2000)).depth, 48);
    // a takes every shard, reads half of what each holds, then "crashes" (its leases are given back without acks).
    const held = (await a!.leases(0)).held;
    t.equal(held.length, 8);
    const seenByA: OutboxEntry[] = [];
    for (let round = 0; round < 2; round++) for (const shard of held) seenByA.push(...(await a!.read(shard, 2)));
    await a!.release();
    // b takes over: the entries a read but never acknowledged come back first, then the rest, in order per user.
    const taken = (await b!.leases(0)).held;
    t.equal(taken.length, 8, 'b holds every shard');
    const order = new Map<string, number[]>();
    for (let round = 0; round < 5; round++) {
      for (const shard of taken) {
        for (const entry of await b!.read(shard, 3)) {
          order.set(entry.orderKey, [...(order.get(entry.orderKey) ?? []), Number(entry.eventId.split(':')[1])]);
          await b!.ack(shard, entry.entryId);
        }
      }
    }
    t.ok(seenByA.length > 0, `a had read ${seenByA.length}`);
    for (const user of users) t.same(order.get(user), [0, 1, 2, 3], `${user}: every event once, in order`);
    t.equal((await b!.stats(2000)).depth, 0, 'acknowledged entries left the streams');
    await b!.release();
  },
);
