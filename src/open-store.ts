import type { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { createMemoryStore } from './store/memory-store.js';
import { createRedisClient, evictingNodes, redisMemory, waitForReady } from './store/redis-client.js';
import { createRedisStore } from './store/redis-store.js';
import type { Store } from './store/store.js';

/** Refused at start: see data/ops/README.md "State and retention" for why and for REDIS_ALLOW_EVICTION. */
export class EvictingRedisError extends Error {
  constructor(readonly nodes: readonly string[]) {
    super(
      `redis maxmemory-policy evicts keys on ${nodes.join(', ')}: set maxmemory-policy noeviction (or REDIS_ALLOW_EVICTION=true to accept silent decision changes)`,
    );
  }
}

export interface OpenedStore {
  readonly store: Store;
  /** The client behind a Redis store, shared by the rate limiter and the per-address sync. */
  readonly redis?: Redis | Cluster;
}

/** The in-process store, with the configured retention: openStore's choice without Redis, and the service's default. */
export function openMemoryStore(config: Pick<Config, 'retention'>): Store {
  return createMemoryStore({ retention: config.retention });
}

export interface OpenStoreOptions {
  readonly logger: Logger;
  /** How long to wait for Redis at start; past it decisions are degraded (never SKIP) until it is up. */
  readonly waitMs?: number;
  /** A command deadline other than REDIS_COMMAND_TIMEOUT_MS (the CLI is not on the login path). */
  readonly commandTimeoutMs?: number;
  /** Fail instead of starting degraded when Redis is not ready in time (the CLI). */
  readonly requireReady?: boolean;
}

/**
 * The store the config names: memory, Redis, Cluster or Sentinel. The server, the CLI and the tests
 * all open it here, so retention and client options cannot differ between them.
 */
export async function openStore(config: Config, options: OpenStoreOptions): Promise<OpenedStore> {
  const { url, keyPrefix, commandTimeoutMs, allowEviction } = config.redis;
  if (!url) return { store: openMemoryStore(config) };
  const redis = createRedisClient(url, options.commandTimeoutMs ?? commandTimeoutMs);
  redis.on('error', (error: Error) => options.logger.warn({ err: error.message }, 'redis error'));
  try {
    await waitForReady(redis, options.waitMs ?? 5000);
    // Checked again by readiness: a server reached only later, or reconfigured, shows there.
    const evicting = evictingNodes(await redisMemory(redis));
    if (evicting.length > 0) {
      if (!allowEviction) {
        redis.disconnect();
        throw new EvictingRedisError(evicting);
      }
      options.logger.warn(
        { evicting },
        'redis may evict keys (REDIS_ALLOW_EVICTION=true): evicted counters and pending step-ups change decisions silently',
      );
    }
  } catch (error) {
    if (error instanceof EvictingRedisError) throw error;
    if (options.requireReady) {
      redis.disconnect();
      throw error;
    }
    options.logger.error(
      { err: (error as Error).message },
      'redis not ready at start: decisions are degraded (never SKIP) until it is',
    );
  }
  return { store: createRedisStore({ redis, keyPrefix, retention: config.retention }), redis };
}
