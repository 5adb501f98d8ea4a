import { Redis, Cluster, type RedisOptions } from 'ioredis';
import { enforceClientDeadlines } from './command-deadline.js';
import { coalesceClientWrites } from './turn-writes.js';

/**
 * ioredis tuned for a login path: no offline queue (a command during an outage fails at once
 * instead of waiting 12-22 s), at most one retry, reconnects capped near 1 s. The ~100 ms command
 * deadline is not an option here: `createRedisClient` enforces it (`command-deadline.ts`). Measured by the reliability bar: first failure in ~1 ms, recovery in ~0.3 s.
 * Auto-pipelining stays off: it batches the commands of one loop turn into one write, but builds a
 * Pipeline per batch (a copy of every defined script's method on it) whose objects outlive a young
 * collection. At a paced 1,000 decides/s it tripled what each scavenge kept (1.7 MB against 0.5 MB)
 * and doubled its pause (2.8 against 1.3 ms): p99 13 against 4.8 ms; at saturation it cost 4 µs a
 * decide more (`test/bench/README.md`). What it was for, one write for a turn's commands, is done at
 * the socket instead (`turn-writes.ts`, applied by `createRedisClient`), with no object per batch.
 */
export function loginPathOptions(): RedisOptions {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 500,
    retryStrategy: (times: number) => Math.min(times * 100, 1000),
    enableAutoPipelining: false,
    lazyConnect: false,
  };
}

function hostPorts(list: string): Array<{ host: string; port: number }> {
  return list.split(',').map((hostPort) => {
    const [host, port] = hostPort.split(':');
    return { host: host!, port: Number(port ?? 26379) };
  });
}

/**
 * Builds a client from REDIS_URL: `redis://`, `rediss://`, `redis+cluster://host:port,host:port`, or
 * `redis+sentinel://host:port,host:port/master-name` (ioredis follows failovers to the new master).
 * A command unanswered after `commandTimeoutMs` fails with "Command timed out".
 */
export function createRedisClient(url: string, commandTimeoutMs = 100): Redis | Cluster {
  const client = connectClient(url);
  enforceClientDeadlines(client, commandTimeoutMs);
  coalesceClientWrites(client);
  return client;
}

function connectClient(url: string): Redis | Cluster {
  const options = loginPathOptions();
  if (url.startsWith('redis+sentinel://')) {
    const [list, name] = url.slice('redis+sentinel://'.length).split('/');
    if (!list || !name) throw new Error('redis+sentinel:// needs host:port[,host:port]/master-name');
    return new Redis({ ...options, sentinels: hostPorts(list), name });
  }
  if (url.startsWith('redis+cluster://')) {
    const nodes = url
      .slice('redis+cluster://'.length)
      .split(',')
      .map((hostPort) => {
        const [host, port] = hostPort.split(':');
        return { host: host!, port: Number(port ?? 6379) };
      });
    return new Cluster(nodes, {
      redisOptions: options,
      enableOfflineQueue: false,
      clusterRetryStrategy: (times) => Math.min(times * 100, 1000),
    });
  }
  return new Redis(url, options);
}

/** Resolves once the client is ready (readiness stays 503 until then), or rejects after `timeoutMs`. */
export function waitForReady(client: Redis | Cluster, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      reject(new Error(`redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    client.once('ready', onReady);
  });
}

export interface RedisMemory {
  readonly node: string;
  readonly policy: string;
  readonly maxmemory: number;
  /** Memory Redis counts against maxmemory (replication and AOF buffers excluded, as Redis does). */
  readonly counted: number;
}

/**
 * maxmemory-policy and usage of every master, from INFO (CONFIG is often renamed or disabled on
 * managed Redis; INFO is not).
 */
export async function redisMemory(client: Redis | Cluster): Promise<RedisMemory[]> {
  const nodes = client instanceof Cluster ? client.nodes('master') : [client];
  return Promise.all(
    nodes.map(async (node) => {
      const info = await node.info('memory');
      const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '';
      return {
        node: `${node.options.host}:${node.options.port}`,
        policy: field('maxmemory_policy'),
        maxmemory: Number(field('maxmemory')) || 0,
        counted: (Number(field('used_memory')) || 0) - (Number(field('mem_not_counted_for_evict')) || 0),
      };
    }),
  );
}

/**
 * Every key has a TTL, so `volatile-*` evicts as freely as `allkeys-*`: an evicted declines counter
 * reads as 0 and a pending step-up loses its binding, silently changing decisions. Only
 * `noeviction` keeps memory pressure visible (writes fail, decisions degrade).
 */
export function evictingNodes(memory: readonly RedisMemory[]): string[] {
  return memory.filter((m) => m.policy !== 'noeviction').map((m) => `${m.node} (${m.policy})`);
}

/** Masters at maxmemory under noeviction: they refuse every write, so decisions are degraded. */
export function fullNodes(memory: readonly RedisMemory[]): string[] {
  return memory
    .filter((m) => m.policy === 'noeviction' && m.maxmemory > 0 && m.counted >= m.maxmemory)
    .map((m) => m.node);
}

/** Readiness checks of a Redis store beyond PING: an evicting policy (unless allowed) and a full server. */
export function redisReadiness(
  client: Redis | Cluster,
  allowEviction: boolean,
): Array<{ name: string; check(): Promise<boolean> }> {
  const memory = () => redisMemory(client).catch(() => undefined); // unreachable: the store check reports it
  return [
    ...(allowEviction
      ? []
      : [{ name: 'store_eviction_policy', check: async () => evictingNodes((await memory()) ?? []).length === 0 }]),
    { name: 'store_memory_full', check: async () => fullNodes((await memory()) ?? []).length === 0 },
  ];
}
