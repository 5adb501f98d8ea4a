import t, { type Test } from 'tap';
import { Cluster, type Redis } from 'ioredis';
import { COMMAND_TIMED_OUT, commandDeadlinesOf, enforceClientDeadlines } from '../../src/store/command-deadline.js';
import { createRedisClient, loginPathOptions, waitForReady } from '../../src/store/redis-client.js';
import { startFakeClusterNode } from '../helpers/fake-cluster-node.js';
import { startRedis, startRedisCluster } from '../helpers/redis.js';

/** A Redis of the test's own and a ready client made as production makes it. */
async function readyClient(t: Test, timeoutMs: number) {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = createRedisClient(redis.url, timeoutMs) as Redis;
  client.on('error', () => undefined);
  t.teardown(() => client.disconnect());
  await waitForReady(client, 5000);
  return { redis, client };
}

/** When each command settled (ms after `since`), and how. */
function settlement(work: Promise<unknown>, since: number) {
  return work.then(
    (value) => ({ ms: performance.now() - since, value, error: undefined as string | undefined }),
    (error: Error) => ({ ms: performance.now() - since, value: undefined, error: error.message }),
  );
}

/** How many timers `send` arms (ioredis's own option armed one per command). */
function timersArmedBy<T>(send: () => T): { result: T; armed: number } {
  const original = globalThis.setTimeout;
  let armed = 0;
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    armed += 1;
    return original(...args);
  }) as typeof setTimeout;
  try {
    return { result: send(), armed };
  } finally {
    globalThis.setTimeout = original;
  }
}

t.test('a hung Redis: every waiting command fails at its own deadline, whatever their number', async (t) => {
  for (const timeoutMs of [40, 100, 250]) {
    const { redis, client } = await readyClient(t, timeoutMs);
    t.equal(commandDeadlinesOf(client)?.timeoutMs, timeoutMs, `${timeoutMs} ms: the client carries its deadline`);
    redis.pause();
    for (const n of [1, 10, 1000]) {
      const since = performance.now();
      const { result: sent, armed } = timersArmedBy(() =>
        Array.from({ length: n }, (_, i) => settlement(client.echo(`c${i}`), since)),
      );
      t.ok(armed <= 1, `${timeoutMs} ms, ${n} commands: one timer for them all (${armed} armed)`);
      const results = await Promise.all(sent);
      t.ok(
        results.every((r) => r.error === COMMAND_TIMED_OUT),
        `${timeoutMs} ms, ${n} commands: every one failed with "${COMMAND_TIMED_OUT}"`,
      );
      const earliest = Math.min(...results.map((r) => r.ms));
      const latest = Math.max(...results.map((r) => r.ms));
      t.ok(
        earliest >= timeoutMs - 1,
        `${timeoutMs} ms, ${n} commands: none failed early (first at ${earliest.toFixed(1)} ms)`,
      );
      t.ok(
        latest < timeoutMs + 150,
        `${timeoutMs} ms, ${n} commands: none failed late (last at ${latest.toFixed(1)} ms)`,
      );
    }
    redis.resume();
  }
});

t.test('the deadline runs from each command’s own send, not from the oldest waiting one', async (t) => {
  const timeoutMs = 100;
  const { redis, client } = await readyClient(t, timeoutMs);
  redis.pause();
  const since = performance.now();
  const offsets = [0, 30, 60, 90, 150];
  const sent: Array<Promise<{ ms: number; error: string | undefined }>> = [];
  for (const offset of offsets) {
    const wait = offset - (performance.now() - since);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const sentAt = performance.now();
    sent.push(settlement(client.echo(`at ${offset}`), sentAt));
  }
  const results = await Promise.all(sent);
  redis.resume();
  for (const [i, r] of results.entries()) {
    t.equal(r.error, COMMAND_TIMED_OUT, `sent at ${offsets[i]} ms: timed out`);
    t.ok(
      r.ms >= timeoutMs - 1 && r.ms < timeoutMs + 60,
      `sent at ${offsets[i]} ms: failed ${r.ms.toFixed(1)} ms after its send`,
    );
  }
});

t.test('answered commands are never failed, and leave the queue', async (t) => {
  const timeoutMs = 250;
  const { client } = await readyClient(t, timeoutMs);
  const deadlines = commandDeadlinesOf(client)!;
  for (const n of [1, 100, 2000]) {
    const values = await Promise.all(Array.from({ length: n }, (_, i) => client.echo(`v${i}`)));
    t.same(
      values,
      Array.from({ length: n }, (_, i) => `v${i}`),
      `${n} commands: every answer, none failed`,
    );
    await new Promise((r) => setTimeout(r, timeoutMs * 2 + 20));
    t.equal(deadlines.queued(), 0, `${n} commands: the queue is empty once their deadlines passed`);
  }
  // Answered commands are dropped as new ones are sent, so a busy connection's queue stays short.
  let most = 0;
  for (let i = 0; i < 200; i++) {
    await Promise.all([client.echo('a'), client.echo('b')]);
    most = Math.max(most, deadlines.queued());
  }
  t.ok(most <= 4, `one after another: at most ${most} queued (answered ones dropped at the next send)`);
});

t.test('a slow answer that comes in time is kept; one after its deadline is not delivered', async (t) => {
  const timeoutMs = 300;
  const { redis, client } = await readyClient(t, timeoutMs);
  redis.pause();
  const since = performance.now();
  const early = settlement(client.echo('early'), since);
  await new Promise((r) => setTimeout(r, 20));
  redis.resume();
  const r = await early;
  t.equal(r.value, 'early', `answered after ${r.ms.toFixed(1)} ms (Redis resumed at 20 ms): delivered`);
  t.equal(r.error, undefined);
  redis.pause();
  const late = settlement(client.echo('late'), performance.now());
  await new Promise((resolve) => setTimeout(resolve, timeoutMs + 60));
  redis.resume();
  const l = await late;
  t.equal(l.error, COMMAND_TIMED_OUT, 'the late one failed at its deadline');
  t.equal(await client.echo('after'), 'after', 'the connection still answers, in order, after a late reply');
});

t.test('a refused command (closed client) fails at once and is not queued', async (t) => {
  const { client } = await readyClient(t, 50);
  const deadlines = commandDeadlinesOf(client)!;
  await client.quit();
  await new Promise((r) => setTimeout(r, 150));
  t.equal(deadlines.queued(), 0, 'the queue drained once the last deadline passed');
  const since = performance.now();
  const r = await settlement(client.echo('x'), since);
  t.ok(r.error && r.error !== COMMAND_TIMED_OUT, `refused: ${r.error}`);
  t.ok(r.ms < 20, 'at once');
  t.equal(deadlines.queued(), 0, 'not queued');
});

t.test('the deadline timer does not hold the process open (the connection does, while it waits)', async (t) => {
  const { redis, client } = await readyClient(t, 5000);
  redis.pause();
  const before = process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
  const waiting = client.echo('held').catch((error: Error) => error.message);
  const after = process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;
  t.equal(after, before, 'no referenced timer added for a waiting command');
  client.disconnect();
  t.equal(await waiting, 'Connection is closed.', 'a closed connection fails its waiting command itself');
  redis.resume();
});

for (const reply of ['TRYAGAIN Multiple keys request during rehashing of slot', 'CLUSTERDOWN The cluster is down']) {
  const kind = reply.split(' ')[0];
  t.test(`Cluster: a MULTI and a pipeline retried after ${kind} settle with the retry's answer`, async (t) => {
    for (const how of ['multi', 'pipeline'] as const) {
      const node = await startFakeClusterNode(reply, 1);
      const client = createRedisClient(`redis+cluster://127.0.0.1:${node.port}`, 100) as Cluster;
      client.on('error', () => undefined);
      await waitForReady(client, 5000);
      const work = how === 'multi' ? client.multi().set('{k}a', '1').exec() : client.pipeline().get('{k}a').exec();
      const settled = await Promise.race([
        work.then(
          (v) => JSON.stringify(v),
          (e: Error) => e.message,
        ),
        new Promise((r) => setTimeout(() => r('still pending after 3 s'), 3000)),
      ]);
      // ioredis answers the first try's error by renewing each command's promise and sending the
      // whole again after its retry delay (100 ms, the deadline here): the renewed commands are new
      // waits, which the first try's deadline must not fail.
      const expected = { multi: '[[null,"OK"]]', pipeline: '[[null,"v"]]' }[how];
      t.equal(settled, expected, `${how}: ${settled}`);
      client.disconnect();
      node.stop();
    }
  });
}

t.test('createRedisClient gives the deadline to a Sentinel client', async (t) => {
  const sentinel = createRedisClient('redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster', 123) as Redis;
  sentinel.on('error', () => undefined);
  t.teardown(() => sentinel.disconnect());
  t.equal(commandDeadlinesOf(sentinel)?.timeoutMs, 123);
  t.equal(sentinel.options.commandTimeout, undefined, "ioredis's per-command timer is off");
});

t.test('every Cluster node gets the deadline, and a hung node’s commands fail at it', async (t) => {
  const cluster = await startRedisCluster();
  t.teardown(() => cluster.stop());
  for (const how of ['createRedisClient', 'enforceClientDeadlines'] as const) {
    const client =
      how === 'createRedisClient'
        ? (createRedisClient(
            `redis+cluster://${cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`,
            150,
          ) as Cluster)
        : enforceClientDeadlines(
            new Cluster(cluster.nodes, { redisOptions: loginPathOptions(), enableOfflineQueue: true }),
            150,
          );
    client.on('error', () => undefined);
    await waitForReady(client, 10_000);
    await client.set('{dl}k', '1');
    const nodes = client.nodes();
    t.ok(nodes.length >= 3, `${how}: ${nodes.length} nodes`);
    t.ok(
      nodes.every((node) => commandDeadlinesOf(node)?.timeoutMs === 150),
      `${how}: every node carries the deadline`,
    );
    // Replicas answer MOVED to a plain redis-cli; only the key's master answers its value.
    const owner = cluster.servers.find((s) => s.cli('get', '{dl}k').trim() === '1');
    t.ok(owner, `${how}: the key's master found`);
    owner!.pause();
    const since = performance.now();
    const r = await settlement(client.get('{dl}k'), since);
    owner!.resume();
    t.equal(r.error, COMMAND_TIMED_OUT, `${how}: a command to the hung master timed out`);
    t.ok(r.ms >= 149 && r.ms < 400, `${how}: after ${r.ms.toFixed(1)} ms`);
    t.equal(await client.get('{dl}k'), '1', `${how}: answers again once the master resumes`);
    client.disconnect();
  }
});

t.test(
  'a deadline past what a timer can hold (a huge setting) neither fails early nor overflows the timer',
  async (t) => {
    const { redis, client } = await readyClient(t, 1e12);
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    t.teardown(() => process.off('warning', onWarning));
    redis.pause();
    const r = settlement(client.echo('patient'), performance.now());
    await new Promise((resolve) => setTimeout(resolve, 100));
    redis.resume();
    const settled = await r;
    t.equal(settled.value, 'patient', `answered once Redis resumed (${settled.ms.toFixed(1)} ms), not timed out`);
    t.notOk(warnings.includes('TimeoutOverflowWarning'), 'no timer overflow');
  },
);
