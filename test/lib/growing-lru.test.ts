import fc from 'fast-check';
import { LRUCache } from 'lru-cache';
import t from 'tap';
import { growingLru } from '../../src/lib/growing-lru.js';

type Op = { kind: 'set' | 'get' | 'peek' | 'delete'; key: number; value: number };

t.test('holds and evicts exactly what an lru-cache with the same max holds and evicts', async (t) => {
  const op = fc.record({
    kind: fc.constantFrom<Op['kind']>('set', 'set', 'get', 'peek', 'delete'),
    key: fc.integer({ min: 0, max: 40 }),
    value: fc.integer(),
  });
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 12 }), fc.array(op, { maxLength: 300 }), (max, ops) => {
      const model = new LRUCache<number, number>({ max });
      const cache = growingLru<number, number>(max);
      for (const { kind, key, value } of ops) {
        if (kind === 'set') {
          model.set(key, value);
          cache.set(key, value);
        } else if (kind === 'delete') {
          if (cache.delete(key) !== model.delete(key)) return false;
        } else if (cache[kind](key) !== model[kind](key)) return false;
        if (cache.size !== model.size || cache.size > max) return false;
      }
      // Same entries in the same recency order, most recent first.
      return JSON.stringify([...cache.entries()]) === JSON.stringify([...model.entries()]);
    }),
    { numRuns: 300 },
  );
  t.pass('300 random operation sequences agree with the model');
});

t.test('an empty one costs a small fraction of a preallocated lru-cache of the same bound', async (t) => {
  const used = () => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const keep: unknown[] = [];
  let before = used();
  for (let i = 0; i < 4; i++) keep.push(new LRUCache<string, string>({ max: 500_000 }));
  const preallocated = used() - before;
  before = used();
  for (let i = 0; i < 4; i++) keep.push(growingLru<string, string>(500_000));
  const growing = used() - before;
  t.ok(growing * 20 < preallocated, `4 empty caches: ${growing} bytes against ${preallocated} preallocated`);
  t.equal(keep.length, 8);
});

t.test('a bound below 1 is refused', async (t) => {
  t.throws(() => growingLru(0));
  t.throws(() => growingLru(1.5));
});
