import t, { type Test } from 'tap';
import type { Socket } from 'node:net';
import { Cluster, type Redis } from 'ioredis';
import { createRedisClient, waitForReady } from '../../src/store/redis-client.js';
import { writesCoalesced } from '../../src/store/turn-writes.js';
import { startRedis, startRedisCluster } from '../helpers/redis.js';

/** Counts what the socket hands the kernel: one `_write` or `_writev` call is one write system call's worth. */
function countWrites(socket: Socket): { readonly calls: number; reset(): void } {
  let calls = 0;
  const inner = socket as unknown as { _write: (...a: unknown[]) => unknown; _writev?: (...a: unknown[]) => unknown };
  const write = inner._write;
  const writev = inner._writev;
  inner._write = function (this: unknown, ...args: unknown[]) {
    calls += 1;
    return write.apply(this, args);
  };
  if (writev)
    inner._writev = function (this: unknown, ...args: unknown[]) {
      calls += 1;
      return writev.apply(this, args);
    };
  return {
    get calls() {
      return calls;
    },
    reset() {
      calls = 0;
    },
  };
}

/** A Redis of the test's own and a ready client made as production makes it. */
async function readyClient(t: Test) {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = createRedisClient(redis.url, 1000) as Redis;
  t.teardown(() => client.disconnect());
  await waitForReady(client, 5000);
  return { redis, client };
}

/** Settles with the work, or fails the test if a corked write was never sent (its answer never comes). */
function answered<T>(work: Promise<T>, what: string, ms = 2000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms (a write left corked)`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

t.test('the commands of one turn leave in one write, whatever their number, answered in order', async (t) => {
  const { client } = await readyClient(t);
  t.ok(writesCoalesced(client.stream as Socket), 'the client socket is coalesced');
  const writes = countWrites(client.stream as Socket);
  for (const n of [1, 2, 16, 256, 2048]) {
    writes.reset();
    const replies = Array.from({ length: n }, (_, i) => client.echo(`c${i}`));
    t.equal(writes.calls, 0, `${n}: nothing written before the turn ends`);
    const got = await answered(Promise.all(replies), `${n} commands`);
    t.equal(writes.calls, 1, `${n} commands: one write`);
    t.same(
      got,
      Array.from({ length: n }, (_, i) => `c${i}`),
      `${n} commands: every answer, in order`,
    );
  }
});

t.test('a command sent from any phase of the loop is written in its turn', async (t) => {
  const { client } = await readyClient(t);
  const from = {
    timer: () => new Promise<string>((resolve) => setTimeout(() => resolve(client.echo('timer')), 1)),
    immediate: () => new Promise<string>((resolve) => setImmediate(() => resolve(client.echo('immediate')))),
    'next tick': () => new Promise<string>((resolve) => process.nextTick(() => resolve(client.echo('next tick')))),
    microtask: () => Promise.resolve().then(() => client.echo('microtask')),
    'an answer (I/O)': () => client.echo('first').then(() => client.echo('an answer (I/O)')),
    'a nested immediate': () =>
      new Promise<string>((resolve) =>
        setImmediate(() => setImmediate(() => resolve(client.echo('a nested immediate')))),
      ),
  };
  for (const [phase, send] of Object.entries(from)) t.equal(await answered(send(), phase), phase, phase);
  // A chain: each command sent from the previous one's answer, every one its own turn.
  let chain = '';
  for (let i = 0; i < 50; i++) chain = await answered(client.echo(`link ${i}`), `link ${i}`);
  t.equal(chain, 'link 49', 'fifty dependent round trips');
  // Commands sent from inside the flush's own phase (check) wait for the next turn's, not forever.
  const late = await answered(
    new Promise<string[]>((resolve) =>
      setImmediate(() => {
        void client.echo('before').then(() => undefined);
        setImmediate(() => resolve(Promise.all([client.echo('a'), client.echo('b')])));
      }),
    ),
    'commands sent in the check phase',
  );
  t.same(late, ['a', 'b']);
});

t.test('a reconnect writes through a new socket, coalesced as the first', async (t) => {
  const { redis, client } = await readyClient(t);
  const first = client.stream as Socket;
  redis.cli('CLIENT', 'KILL', 'TYPE', 'normal');
  const deadline = Date.now() + 5000;
  while ((client.stream === first || client.status !== 'ready') && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 20));
  const second = client.stream as Socket;
  t.not(second, first, 'a new socket');
  t.ok(writesCoalesced(second), 'the new socket is coalesced');
  const writes = countWrites(second);
  const got = await answered(
    Promise.all(Array.from({ length: 32 }, (_, i) => client.echo(`r${i}`))),
    'after reconnect',
  );
  t.equal(writes.calls, 1, '32 commands after the reconnect: one write');
  t.equal(got.length, 32);
});

t.test('every Cluster node coalesces its own turn of writes', async (t) => {
  const cluster = await startRedisCluster();
  t.teardown(() => cluster.stop());
  const client = createRedisClient(
    `redis+cluster://${cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`,
    1000,
  );
  t.ok(client instanceof Cluster);
  t.teardown(() => client.disconnect());
  await waitForReady(client, 10_000);
  // Touch every master so each node's connection is open.
  const keys = ['{a}k', '{b}k', '{c}k', '{d}k', '{e}k', '{f}k'];
  await Promise.all(keys.map((k) => client.set(k, '1')));
  const nodes = (client as Cluster).nodes('master');
  t.equal(nodes.length, 3, 'three masters');
  for (const node of nodes) t.ok(writesCoalesced(node.stream as Socket), `${node.options.port}: coalesced`);
  // One slot's commands go to one node: one write there for the turn.
  const slot = Number(await (client as Cluster).cluster('KEYSLOT', '{a}counter'));
  const ownerKey = (client as Cluster).slots[slot]?.[0];
  const owner = nodes.find((n) => `${n.options.host}:${n.options.port}` === ownerKey);
  const writes = owner ? countWrites(owner.stream as Socket) : undefined;
  const got = await answered(
    Promise.all(Array.from({ length: 64 }, (_, i) => client.incr('{a}counter').then(() => i))),
    'cluster commands',
  );
  t.equal(got.length, 64);
  t.ok(owner, `the node that owns {a}'s slot (${slot}) is known`);
  t.equal(writes?.calls, 1, "64 commands to one node's slot: one write on its socket");
  t.equal(await client.get('{a}counter'), '64');
});
