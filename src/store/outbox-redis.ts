import { randomBytes } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import type { Outbox, OutboxEntry, OutboxRecord } from './outbox-contract.js';

type Client = Redis | Cluster;

export interface RedisOutboxOptions {
  readonly redis: Client;
  readonly keyPrefix?: string;
  /** Shards: the most replicas that deliver at the same time. */
  readonly shards?: number;
  /** Undelivered entries kept at most (spread over the shards); appends beyond are refused. */
  readonly maxEntries: number;
  /** A stream nobody appends to for this long is dropped (longer than the retry window). */
  readonly ttlMs: number;
  /** A crashed replica's shards are taken over after this long. */
  readonly leaseMs?: number;
  /** Lease timing runs on real time, like Redis's own PX (a test's clock may jump). */
  readonly wallClock?: () => number;
}

const APPEND = `
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'id', ARGV[3], 'k', ARGV[4], 't', ARGV[5], 'at', ARGV[6], 'b', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;
const ACK = `
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])`;
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
const GIVE_BACK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

interface Scripts {
  riskOutboxAppend(...args: Array<string | number>): Promise<number>;
  riskOutboxAck(...args: Array<string | number>): Promise<number>;
  riskOutboxRenew(...args: Array<string | number>): Promise<number>;
  riskOutboxGiveBack(...args: Array<string | number>): Promise<number>;
}

const GROUP = 'delivery';

/**
 * The durable outbox: one Redis Stream per shard with a consumer group. Each shard's stream and
 * lease share a hash tag (`{evt:<n>}`), so with Cluster every script stays in one slot. A replica
 * that takes a shard first claims (XAUTOCLAIM) what the previous holder left unacknowledged, then
 * reads new entries (XREADGROUP); an entry leaves the stream on XACK + XDEL, so XLEN is the backlog.
 */
export function createRedisOutbox(options: RedisOutboxOptions): Outbox {
  const redis = options.redis;
  const prefix = options.keyPrefix ?? 'risk:';
  const shardCount = options.shards ?? 8;
  const perShardMax = Math.max(1, Math.ceil(options.maxEntries / shardCount));
  const leaseMs = options.leaseMs ?? 15_000;
  const wall = options.wallClock ?? Date.now;
  const consumer = `c-${randomBytes(6).toString('base64url')}`;
  for (const [name, lua] of [
    ['riskOutboxAppend', APPEND],
    ['riskOutboxAck', ACK],
    ['riskOutboxRenew', RENEW],
    ['riskOutboxGiveBack', GIVE_BACK],
  ] as const) {
    redis.defineCommand(name, { lua, numberOfKeys: 1 });
  }
  const r = redis as unknown as Client & Scripts;
  const shards = Array.from({ length: shardCount }, (_, i) => String(i));
  const streamKey = (shard: string) => `${prefix}{evt:${shard}}:stream`;
  const leaseKey = (shard: string) => `${prefix}{evt:${shard}}:lease`;
  const replicasKey = `${prefix}{evt}:replicas`;
  /** Held shards; those still draining what the previous holder left, with the XAUTOCLAIM cursor. */
  const held = new Set<string>();
  const reclaiming = new Map<string, string>();

  const shardOf = (orderKey: string) => {
    // FNV-1a: stable across processes and versions, which is all the spread needs.
    let hash = 0x811c9dc5;
    for (let i = 0; i < orderKey.length; i++) hash = Math.imul(hash ^ orderKey.charCodeAt(i), 0x01000193) >>> 0;
    return String(hash % shardCount);
  };

  const isNoGroup = (error: unknown) => /NOGROUP/.test((error as Error)?.message ?? '');
  async function createGroup(shard: string): Promise<void> {
    try {
      await redis.call('XGROUP', 'CREATE', streamKey(shard), GROUP, '0', 'MKSTREAM');
    } catch (error) {
      if (!/BUSYGROUP/.test((error as Error).message)) throw error;
    }
    // MKSTREAM made the key: it gets a lifetime like every other key.
    await redis.pexpire(streamKey(shard), options.ttlMs, 'NX');
  }

  const toEntry = (id: string, fields: string[] | null): OutboxEntry | undefined => {
    if (!fields) return undefined;
    const f: Record<string, string> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]!] = fields[i + 1]!;
    if (f.id === undefined || f.b === undefined) return undefined;
    return {
      entryId: id,
      eventId: f.id,
      orderKey: f.k ?? '',
      type: f.t ?? 'unknown',
      at: Number(f.at) || 0,
      body: f.b,
    };
  };

  async function take(shard: string, max: number): Promise<OutboxEntry[]> {
    const key = streamKey(shard);
    const cursor = reclaiming.get(shard);
    if (cursor !== undefined) {
      // Everything pending in a shard we hold was left by a previous holder: claim it regardless of idle time.
      const reply = (await redis.call('XAUTOCLAIM', key, GROUP, consumer, '0', cursor, 'COUNT', String(max))) as [
        string,
        Array<[string, string[] | null] | null>,
      ];
      const [next, items] = reply;
      if (next === '0-0') reclaiming.delete(shard);
      else reclaiming.set(shard, next);
      const entries = items.flatMap((item) =>
        item ? [toEntry(item[0], item[1])].filter((e): e is OutboxEntry => !!e) : [],
      );
      if (entries.length > 0 || next !== '0-0') return entries;
    }
    const reply = (await redis.call(
      'XREADGROUP',
      'GROUP',
      GROUP,
      consumer,
      'COUNT',
      String(max),
      'STREAMS',
      key,
      '>',
    )) as unknown[] | null;
    // RESP2 answers [[key, entries]]; RESP3 a map, which the client flattens to [key, entries].
    const items = (typeof reply?.[0] === 'string' ? reply[1] : (reply?.[0] as unknown[] | undefined)?.[1]) as
      | Array<[string, string[] | null]>
      | undefined;
    return (items ?? []).flatMap(([id, fields]) => {
      const entry = toEntry(id, fields);
      return entry ? [entry] : [];
    });
  }

  return {
    kind: 'redis',
    async append(record: OutboxRecord) {
      const added = await r.riskOutboxAppend(
        streamKey(shardOf(record.orderKey)),
        perShardMax,
        options.ttlMs,
        record.eventId,
        record.orderKey,
        record.type,
        record.at,
        record.body,
      );
      return added === 1;
    },
    async leases() {
      const now = wall();
      // Live replicas announce themselves; the fair share is the shards over their number.
      await redis.zadd(replicasKey, now, consumer);
      // A replica unheard of for a lease period is gone: its shards are free by then too.
      await redis.zremrangebyscore(replicasKey, '-inf', now - leaseMs);
      await redis.pexpire(replicasKey, 3 * leaseMs);
      const live = Math.max(1, await redis.zcard(replicasKey));
      const share = Math.ceil(shardCount / live);
      for (const shard of [...held]) {
        if ((await r.riskOutboxRenew(leaseKey(shard), consumer, leaseMs)) !== 1) {
          held.delete(shard);
          reclaiming.delete(shard);
        }
      }
      // Start at a random shard, so replicas starting together do not all race for the same ones.
      const start = Math.floor(Math.random() * shardCount);
      for (let i = 0; i < shardCount && held.size < share; i++) {
        const shard = shards[(start + i) % shardCount]!;
        if (held.has(shard)) continue;
        if ((await redis.set(leaseKey(shard), consumer, 'PX', leaseMs, 'NX')) === 'OK') {
          held.add(shard);
          reclaiming.set(shard, '0-0');
        }
      }
      return { held: [...held], surplus: Math.max(0, held.size - share) };
    },
    async releaseShard(shard) {
      held.delete(shard);
      reclaiming.delete(shard);
      await r.riskOutboxGiveBack(leaseKey(shard), consumer);
    },
    async read(shard, max) {
      if (!held.has(shard)) return [];
      try {
        return await take(shard, max);
      } catch (error) {
        if (!isNoGroup(error)) throw error;
        // A new stream, or one that expired (or a Redis that lost its data): the group starts at its first entry.
        await createGroup(shard);
        return [];
      }
    },
    async ack(shard, entryId) {
      await r.riskOutboxAck(streamKey(shard), GROUP, entryId);
    },
    async stats(now) {
      let depth = 0;
      let oldestAt: number | undefined;
      await Promise.all(
        shards.map(async (shard) => {
          const key = streamKey(shard);
          const [length, first] = await Promise.all([redis.xlen(key), redis.xrange(key, '-', '+', 'COUNT', 1)]);
          depth += length;
          const entry = first[0] ? toEntry(first[0][0], first[0][1]) : undefined;
          if (entry && (oldestAt === undefined || entry.at < oldestAt)) oldestAt = entry.at;
        }),
      );
      return { depth, oldestAgeMs: oldestAt === undefined ? 0 : Math.max(0, now - oldestAt) };
    },
    async release() {
      await Promise.allSettled([...held].map((shard) => r.riskOutboxGiveBack(leaseKey(shard), consumer)));
      held.clear();
      reclaiming.clear();
      await redis.zrem(replicasKey, consumer).catch(() => undefined);
    },
  };
}
