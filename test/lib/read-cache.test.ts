import t from 'tap';
import { ReadCache } from '../../src/lib/read-cache.js';

t.test('hits, misses and the bound', async (t) => {
  const cache = new ReadCache<string, number>(100);
  t.equal(cache.get('a'), undefined);
  cache.set('a', 1);
  t.equal(cache.get('a'), 1);
  for (let i = 0; i < 1000; i++) cache.set(`k${i}`, i);
  t.ok(cache.size <= 200, `never more than 2 × max entries (${cache.size})`);
  t.equal(cache.get('a'), undefined, 'an entry not used for two generations is gone');
  t.equal(cache.get('k999'), 999, 'recent entries stay');
});

t.test('an entry read in every generation survives any number of swaps', async (t) => {
  const cache = new ReadCache<string, string>(10);
  cache.set('hot', 'value');
  for (let i = 0; i < 1000; i++) {
    cache.set(`cold-${i}`, 'x');
    if (i % 5 === 0) t.equal(cache.get('hot'), 'value');
  }
  t.equal(cache.get('hot'), 'value');
});

t.test('a max below 1 is refused', async (t) => {
  t.throws(() => new ReadCache(0));
});
