import { Cluster } from 'ioredis';
import t from 'tap';
import { enforceClientDeadlines } from '../../src/store/command-deadline.js';
import { loginPathOptions } from '../../src/store/redis-client.js';
import { createRedisDecisionRecords } from '../../src/store/decision-records-redis.js';
import { encodeRecord } from '../../src/store/decision-records.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { startRedisCluster } from '../helpers/redis.js';
import { storeContract } from './contract.js';
import { stepUpRecord } from '../helpers/decision-record.js';
import { decisionRecordsContract } from './decision-records-contract.js';

const cluster = await startRedisCluster();
t.teardown(() => cluster.stop());

let crossSlot = 0;
async function makeStore() {
  const client = enforceClientDeadlines(
    new Cluster(cluster.nodes, { redisOptions: loginPathOptions(), enableOfflineQueue: true }),
    1000,
  );
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

// The decision records write a batch as one script per shard with a variable number of keys.
const recordsClient = enforceClientDeadlines(
  new Cluster(cluster.nodes, { redisOptions: loginPathOptions(), enableOfflineQueue: true }),
  1000,
);
await new Promise((r) => recordsClient.once('ready', r));
t.teardown(() => recordsClient.disconnect());
const RECORDS_TTL = 90 * 86_400_000;
decisionRecordsContract(t, 'cluster', async () =>
  createRedisDecisionRecords({ redis: recordsClient, keyPrefix: 'cluster-dr:', ttlMs: RECORDS_TTL }),
);

t.test('cluster: one record, and a batch of 256 whose sessions repeat, each land whole', async (t) => {
  const records = createRedisDecisionRecords({ redis: recordsClient, keyPrefix: 'cluster-dr256:', ttlMs: RECORDS_TTL });
  const at = Date.parse('2026-11-25T12:00:00Z');
  const make = (id: string, session: string) =>
    stepUpRecord(id, session, at, { score: 25, rules: ['r'], signals: { 'device.known': false } });
  const one = make('one', 'one-session');
  await records.putMany([encodeRecord(one)], at);
  t.same((await records.get('one', at))?.record, one);
  t.equal(await records.decisionOf('one-session'), 'one');

  const batch = Array.from({ length: 256 }, (_, i) => make(`b${i}`, `bs${i % 40}`));
  await records.putMany(batch.map(encodeRecord), at);
  const back = await Promise.all(batch.map((r) => records.get(r.id, at)));
  t.same(
    back.map((b) => b?.record),
    batch,
    'all 256 read back',
  );
  for (let s = 0; s < 40; s++) {
    const last = batch.filter((r) => r.stepUp!.session === `bs${s}`).at(-1)!;
    t.equal(await records.decisionOf(`bs${s}`), last.id, `bs${s}: its last hand-out holds it`);
  }
  const superseded = back.filter((b) => b?.outcome?.outcome === 'superseded').length;
  t.equal(superseded, 256 - 40, 'every earlier hand-out is superseded, none of the last');
  t.equal(crossSlot, 0, 'no CROSSSLOT');
});

t.test(
  'cluster: a batch started while an earlier one is still being written does not lose its session to it',
  async (t) => {
    const records = createRedisDecisionRecords({
      redis: recordsClient,
      keyPrefix: 'cluster-order:',
      ttlMs: RECORDS_TTL,
    });
    const at = Date.parse('2026-11-25T12:00:00Z');
    const make = (id: string, session: string, when: number) =>
      stepUpRecord(id, session, when, { score: 25, rules: ['r'], signals: { big: 'x'.repeat(4000) } });
    let lost = 0;
    for (let round = 0; round < 10; round++) {
      // The earlier batch spans every shard (so every node); the later one is one record on one node.
      const first = Array.from({ length: 200 }, (_, i) => make(`a${round}-${i}`, `sa${round}-${i}`, at));
      first.push(make(`a${round}-shared`, `shared${round}`, at));
      await Promise.all([
        records.putMany(first.map(encodeRecord), at),
        records.putMany([encodeRecord(make(`b${round}-shared`, `shared${round}`, at + 5))], at + 5),
      ]);
      if ((await records.decisionOf(`shared${round}`)) !== `b${round}-shared`) lost += 1;
    }
    t.equal(lost, 0, 'in 10 rounds the later hand-out always holds the session');
  },
);
