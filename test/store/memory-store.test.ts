import t from 'tap';
import { createMemoryStore } from '../../src/store/memory-store.js';
import { storeContract } from './contract.js';

storeContract(t, 'memory', async () => createMemoryStore());

t.test('memory: the number of users is bounded (LRU)', async (t) => {
  const store = createMemoryStore({ maxUsers: 10 });
  const now = Date.parse('2026-11-25T12:00:00Z');
  await store.trust({ user: 'first', device: 'd', ip: 'i', prefix: 'p', grantedBy: 's', ttlMs: 60_000 }, now);
  for (let i = 0; i < 20; i++) await store.observe({ user: `u${i}`, device: 'd', ip: 'i', prefix: 'p' }, now);
  t.same(await store.listDevices('first', now), [], 'the least recently used user was evicted');
});
