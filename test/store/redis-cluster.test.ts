import { Cluster } from 'ioredis';
import t from 'tap';
import { loginPathOptions } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { startRedisCluster } from '../helpers/redis.js';
import { storeContract } from './contract.js';

const cluster = await startRedisCluster();
t.teardown(() => cluster.stop());

let crossSlot = 0;
async function makeStore() {
  const client = new Cluster(cluster.nodes, { redisOptions: loginPathOptions(1000), enableOfflineQueue: true });
  client.on('error', (error: Error) => {
    if (/CROSSSLOT/.test(error.message)) crossSlot += 1;
  });
  await new Promise((r) => client.once('ready', r));
  const store = createRedisStore({ redis: client, keyPrefix: 'cluster:' });
  // Count CROSSSLOT replies on every call, whichever way they surface.
  const counted = { ...store } as Record<string, unknown>;
  for (const [name, fn] of Object.entries(store)) {
    if (typeof fn !== 'function') continue;
    counted[name] = async (...args: unknown[]) => {
      try {
        return await (fn as (...a: unknown[]) => Promise<unknown>)(...args);
      } catch (error) {
        if (/CROSSSLOT/.test((error as Error).message)) crossSlot += 1;
        throw error;
      }
    };
  }
  return counted as unknown as typeof store;
}

storeContract(t, 'cluster', makeStore);

t.test('cluster: 0 CROSSSLOT errors across the whole suite', async (t) => {
  t.equal(crossSlot, 0);
});
