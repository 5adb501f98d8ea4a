import t from 'tap';
import { Cluster, Redis } from 'ioredis';
import { loadConfig } from '../../src/config.js';
import { commandDeadlinesOf } from '../../src/store/command-deadline.js';
import { createRedisClient } from '../../src/store/redis-client.js';

t.test('REDIS_URL accepts plain, TLS, Cluster and Sentinel URLs and nothing else', async (t) => {
  for (const url of [
    'redis://127.0.0.1:6379',
    'rediss://cache.internal:6380',
    'redis+cluster://10.0.0.1:7000,10.0.0.2:7000',
    'redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster',
  ]) {
    t.doesNotThrow(() => loadConfig({ REDIS_URL: url, ID_HASH_KEY: 'k:0123456789abcdefghijklmnop' }), url);
  }
  t.throws(() => loadConfig({ REDIS_URL: 'http://127.0.0.1', ID_HASH_KEY: 'k:0123456789abcdefghijklmnop' }));
  t.throws(
    () => loadConfig({ REDIS_URL: 'redis://127.0.0.1' }),
    /ID_HASH_KEY/,
    'pseudonyms need a stable key with Redis',
  );
});

t.test('the client kind follows the URL, with the login-path settings', async (t) => {
  const sentinel = createRedisClient('redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster') as Redis;
  t.ok(sentinel instanceof Redis);
  t.same(sentinel.options.sentinels, [
    { host: '127.0.0.1', port: 1 },
    { host: '127.0.0.1', port: 2 },
  ]);
  t.equal(sentinel.options.name, 'mymaster');
  t.equal(sentinel.options.enableOfflineQueue, false);
  t.equal(commandDeadlinesOf(sentinel)?.timeoutMs, 100, 'the login-path command deadline');
  t.equal(sentinel.options.commandTimeout, undefined, "ioredis's per-command timer is off");
  sentinel.disconnect();
  const cluster = createRedisClient('redis+cluster://127.0.0.1:1,127.0.0.1:2');
  t.ok(cluster instanceof Cluster);
  cluster.disconnect();
  t.throws(() => createRedisClient('redis+sentinel://127.0.0.1:1'), /master-name/);
});

// A Sentinel client disconnected while it is still trying its (closed) sentinels can leave ioredis's
// connector timer behind on a busy machine, and the file then never exits (tap's timeout, seen once in
// CI). This file checks options only, so it ends itself once its tests are done.
t.teardown(() => setTimeout(() => process.exit(0), 500).unref());
