import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import t from 'tap';
import { createMemoryDecisionRecords } from '../../src/store/decision-records-memory.js';
import { createRedisDecisionRecords } from '../../src/store/decision-records-redis.js';
import { encodeRecord, shardOf } from '../../src/store/decision-records.js';
import { createRedisClient } from '../../src/store/redis-client.js';
import { startRedis } from '../helpers/redis.js';
import { decisionRecordsContract } from './decision-records-contract.js';
import { stepUpRecord } from '../helpers/decision-record.js';

const TTL = 90 * 86_400_000;
const own = process.env.REDIS_URL ? undefined : await startRedis();
const url = process.env.REDIS_URL ?? own!.url;
const prefix = `test-${randomBytes(4).toString('hex')}:`;
const redis = createRedisClient(url, 1000) as Redis;
await new Promise((r) => redis.once('ready', r));
t.teardown(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  await own?.stop();
});

decisionRecordsContract(t, 'memory', async () => createMemoryDecisionRecords({ ttlMs: TTL }));
decisionRecordsContract(t, 'redis', async () => createRedisDecisionRecords({ redis, keyPrefix: prefix, ttlMs: TTL }));

t.test('memory: the number of records is capped, oldest dropped first', async (t) => {
  const records = createMemoryDecisionRecords({ ttlMs: TTL, maxRecords: 10 });
  const at = Date.parse('2026-11-25T12:00:00Z');
  for (let i = 0; i < 25; i++)
    await records.put(
      stepUpRecord(`d${i}`, `s${i}`, at + i, { stepUp: { session: `s${i}`, method: 'PASSIVE', expiresAt: at } }),
      at + i,
    );
  const kept = (await records.list(0, at + 25)).map((d) => d.record.id);
  t.same(
    kept,
    Array.from({ length: 10 }, (_, i) => `d${i + 15}`),
  );
  t.equal((await records.lapsed(at + 100, 100)).length, 10, 'the open index shrinks with them');
  t.equal(await records.decisionOf('s0'), undefined, 'and the session links');
});

t.test(
  'memory: eviction keeps the newest records under both caps, against a model, through any order of puts',
  async (t) => {
    // The store finds its oldest record with one long-lived iterator (not a fresh scan per eviction):
    // re-puts move a record to the end, byte-heavy records evict several, and the order must still be
    // exactly first in, first out.
    let seed = 20261127;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    for (const caps of [{ maxRecords: 7 }, { maxBytes: 4000 }, { maxRecords: 12, maxBytes: 3000 }]) {
      const records = createMemoryDecisionRecords({ ttlMs: TTL, ...caps });
      const model: Array<{ id: string; bytes: number }> = [];
      const maxRecords = caps.maxRecords ?? Number.POSITIVE_INFINITY;
      const maxBytes = caps.maxBytes ?? Number.POSITIVE_INFINITY;
      let mismatches = 0;
      for (let step = 0; step < 1500; step++) {
        const again = model.length > 0 && random() < 0.3;
        const id = again ? model[Math.floor(random() * model.length)]!.id : `r${step}`;
        const record = stepUpRecord(id, `s${step}`, step, { signals: { pad: 'x'.repeat(Math.floor(random() * 900)) } });
        await records.put(record, step);
        const at = model.findIndex((m) => m.id === id);
        if (at >= 0) model.splice(at, 1);
        model.push({ id, bytes: encodeRecord(record).json.length });
        const total = () => model.reduce((sum, m) => sum + m.bytes, 0);
        while (model.length > maxRecords || (total() > maxBytes && model.length > 1)) model.shift();
        const kept = (await records.list(0, step)).map((d) => d.record.id);
        if (JSON.stringify(kept) !== JSON.stringify(model.map((m) => m.id))) mismatches += 1;
      }
      t.equal(mismatches, 0, `${JSON.stringify(caps)}: the kept records match the model after each of 1,500 puts`);
    }
  },
);

t.test(
  'memory: the bytes kept are capped too, whatever the records carry (outside review: ~10 KB each with the largest attributes)',
  async (t) => {
    const records = createMemoryDecisionRecords({ ttlMs: TTL, maxBytes: 50_000 });
    const at = Date.parse('2026-11-25T12:00:00Z');
    const attributes = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`k${i}`, 'v'.repeat(256)]));
    for (let i = 0; i < 40; i++)
      await records.put(
        {
          id: `b${i}`,
          at: at + i,
          user: 'u',
          device: 'd',
          action: 'SKIP',
          score: 0,
          rules: [],
          shadow: [],
          ruleset: 'h',
          degraded: [],
          purpose: 'login',
          signals: { 'request.attributes': attributes },
        },
        at + i,
      );
    const kept = (await records.list(0, at + 40)).map((d) => d.record.id);
    const size = JSON.stringify((await records.get('b39', at + 40))!.record).length;
    t.ok(
      kept.length * size <= 50_000 && kept.length >= 1,
      `${kept.length} records of ${size} bytes kept under 50,000 bytes`,
    );
    t.equal(kept.at(-1), 'b39', 'the newest kept, the oldest dropped');
  },
);

t.test('redis: the time index is trimmed past the retention on every write', async (t) => {
  const records = createRedisDecisionRecords({ redis, keyPrefix: `${prefix}trim:`, ttlMs: 1000, shards: 1 });
  const base = {
    user: 'u',
    device: 'd',
    action: 'SKIP' as const,
    score: 0,
    rules: [],
    shadow: [],
    ruleset: 'h',
    degraded: [],
    purpose: 'login',
    signals: {},
  };
  await records.put({ ...base, id: 'old', at: 1000 }, 1000);
  await records.put({ ...base, id: 'new', at: 5000 }, 5000);
  t.same(await redis.zrange(`${prefix}trim:{dr:0}:at`, '0', '-1'), ['new']);
});

t.test('redis: a batch started while an earlier one is still linking does not lose its session to it', async (t) => {
  const records = createRedisDecisionRecords({ redis, keyPrefix: `${prefix}order:`, ttlMs: TTL });
  const at = Date.parse('2026-11-25T12:00:00Z');
  // The journal's batches overlap: the next is written one flush interval later whether or not the last has linked.
  const first = Array.from({ length: 200 }, (_, i) => stepUpRecord(`a${i}`, `sa${i}`, at));
  first.push(stepUpRecord('a-shared', 'shared', at));
  const writes = [
    records.putMany(first.map(encodeRecord), at),
    records.putMany([encodeRecord(stepUpRecord('b-shared', 'shared', at + 5))], at + 5),
  ];
  await Promise.all(writes);
  t.equal(await records.decisionOf('shared'), 'b-shared', 'the later hand-out holds the session');
  t.match(await records.get('a-shared', at + 5), { outcome: { outcome: 'superseded' } });
  t.notOk((await records.get('b-shared', at + 5))?.outcome, 'the later decision is still open');
});

t.test('redis: a shard that refuses its script costs only its own records their session links', async (t) => {
  const keyPrefix = `${prefix}partial:`;
  const records = createRedisDecisionRecords({ redis, keyPrefix, ttlMs: TTL, shards: 8 });
  const at = Date.parse('2026-11-25T12:00:00Z');
  // One node of a Cluster failing over, here one shard's index made unwritable.
  await redis.set(`${keyPrefix}{dr:3}:at`, 'not a sorted set');
  const batch = Array.from({ length: 40 }, (_, i) => stepUpRecord(`p${i}`, `sp${i}`, at));
  const failing = batch.filter((r) => shardOf(r.id, 8) === 3);
  t.ok(failing.length > 0 && failing.length < batch.length, `${failing.length} of ${batch.length} on the bad shard`);
  const error = await records.putMany(batch.map(encodeRecord), at).then(
    () => undefined,
    (e: unknown) => e as { records?: number },
  );
  t.ok(error, 'the batch reports the failure');
  t.equal(error?.records, failing.length, 'counting only the records not stored');
  for (const r of batch) {
    const linked = await records.decisionOf(r.stepUp!.session);
    t.equal(linked, shardOf(r.id, 8) === 3 ? undefined : r.id, `${r.id} (shard ${shardOf(r.id, 8)})`);
  }
});
