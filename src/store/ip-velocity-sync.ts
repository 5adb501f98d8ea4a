/**
 * `velocity.ip_decides_1m` shared across replicas: counted in process on the decide path and synced
 * through Redis once a second (see sharedIpVelocity).
 */
import type { Cluster, Redis } from 'ioredis';
import { growingLru } from '../lib/growing-lru.js';

type Client = Redis | Cluster;

const BUCKET_MS = 5_000;
/** The current bucket and the 11 before it: the window is 55-60 s. */
const WINDOW_BUCKETS = 12;

/**
 * KEYS: one hash per address (field: bucket number, value: decides), all of one shard's hash tag.
 * ARGV: the current bucket, then per key the count to add in that bucket (0: read only). Returns
 * per address its total over the window, and drops the buckets that left it.
 */
const SYNC = `
local bucket = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local add = tonumber(ARGV[i + 1])
  if add > 0 then
    redis.call('HINCRBY', KEYS[i], bucket, add)
    redis.call('PEXPIRE', KEYS[i], 70000)
  end
  local all = redis.call('HGETALL', KEYS[i])
  local total = 0
  for j = 1, #all, 2 do
    local b = tonumber(all[j])
    if b > bucket - ${WINDOW_BUCKETS} then total = total + tonumber(all[j + 1]) else redis.call('HDEL', KEYS[i], all[j]) end
  end
  out[i] = total
end
return out
`;

/** Addresses per script call: a call costs Redis ~0.2 ms (~1,000 addresses took 23 calls of ~220 µs each). */
const SYNC_CHUNK = 64;

/**
 * Script calls of one sync outstanding at once. Sent all together, a second's worth of addresses
 * (1,000 at 1,000 decides/s: ~5 ms of Redis time) reached Redis ahead of every decide sent after
 * them, and that stall set the decide path's p99. Two at a time, a decide sent during a sync waits
 * behind two chunks (~0.4 ms of Redis) at most, and one chunk's round trip overlaps the other's
 * run. A sync then takes a round trip per two chunks: 1,000 addresses (23 chunks over 16 shards)
 * ~12 round trips, and the ~10,000 a process can decide in a second ~90 (well inside the interval
 * at a few ms each).
 */
const SYNC_IN_FLIGHT = 2;

/**
 * Decides counted in this process: bucket number → address → count. Keyed by bucket first, so an
 * address costs one map entry and a number, not a map of its own: every address counted between two
 * syncs outlives a young collection or two, and what outlives them is what full collections mark.
 * A sync interval spans one bucket, two at a bucket's edge.
 */
type Counts = Map<number, Map<string, number>>;

/** A stable shard per address pseudonym, so one address always lands on the same hash tag. */
function shardOf(address: string, shards: number): number {
  let h = 0;
  for (let i = 0; i < address.length; i++) h = (h * 31 + address.charCodeAt(i)) | 0;
  return (h >>> 0) % shards;
}

/** An address's decides in `counts` within the window that ends at `bucket`. */
function sumWindow(counts: Counts, address: string, bucket: number): number {
  let total = 0;
  for (const [b, byAddress] of counts)
    if (b > bucket - WINDOW_BUCKETS && b <= bucket) total += byAddress.get(address) ?? 0;
  return total;
}

/** Adds `n` decides of `address` in bucket `b`. */
function add(counts: Counts, b: number, address: string, n: number): void {
  let byAddress = counts.get(b);
  if (!byAddress) counts.set(b, (byAddress = new Map()));
  byAddress.set(address, (byAddress.get(address) ?? 0) + n);
}

/** Counts not yet synced, and the distinct addresses among them (what the memory bound counts). */
interface Pending {
  readonly buckets: Counts;
  readonly addresses: Set<string>;
}

const emptyPending = (): Pending => ({ buckets: new Map(), addresses: new Set() });

/** Addresses grouped by shard (a Cluster slot each), in script-sized chunks. */
function chunkByShard(addresses: Iterable<string>, shards: number): Array<{ shard: number; addresses: string[] }> {
  const byShard = new Map<number, string[][]>();
  for (const address of addresses) {
    const shard = shardOf(address, shards);
    let lists = byShard.get(shard);
    if (!lists) byShard.set(shard, (lists = [[]]));
    if (lists[lists.length - 1]!.length >= SYNC_CHUNK) lists.push([]);
    lists[lists.length - 1]!.push(address);
  }
  return [...byShard].flatMap(([shard, lists]) => lists.map((chunk) => ({ shard, addresses: chunk })));
}

/** Structurally an `IpVelocity` (signals/ip-velocity.ts), plus the sync the tests drive. */
export interface SharedIpVelocity {
  hit(ip: string, now: number): number;
  close(): void;
  sync(): Promise<void>;
}

export interface SharedIpVelocityOptions {
  readonly redis: Client;
  readonly keyPrefix: string;
  /** How often this process adds its counts to the shared ones and reads them back. */
  readonly syncMs?: number;
  /** Hash tags the addresses spread over, so a Cluster shares the load across slots. */
  readonly shards?: number;
  readonly clock?: () => number;
  readonly onSyncError?: () => void;
  readonly maxAddresses?: number;
}

type SyncClient = { riskIpVelocitySync(...args: Array<string | number>): Promise<Array<string | number>> };

/** The sync script as a command on this client (defined once per client, however many counters share it). */
function syncCommand(redis: Client): SyncClient {
  if (!(redis as unknown as Partial<SyncClient>).riskIpVelocitySync)
    redis.defineCommand('riskIpVelocitySync', { lua: SYNC });
  return redis as unknown as SyncClient;
}

/** Per address, what it adds to the current bucket: counts older than the window are of no use to anyone any more. */
function addsOf(batch: Counts, addresses: readonly string[], firstBucket: number): number[] {
  return addresses.map((address) => {
    let n = 0;
    for (const [b, byAddress] of batch) if (b >= firstBucket) n += byAddress.get(address) ?? 0;
    return n;
  });
}

/** Most addresses counted between two syncs: past it, the local counts start over (a flood of addresses must not grow memory). */
const MAX_PENDING = 100_000;

/** Counts one decide in this process. */
function countHit(pending: Pending, ip: string, bucket: number): void {
  if (!pending.addresses.has(ip)) {
    if (pending.addresses.size >= MAX_PENDING) {
      pending.buckets.clear();
      pending.addresses.clear();
    }
    pending.addresses.add(ip);
  }
  add(pending.buckets, bucket, ip, 1);
}

/**
 * Shared across replicas through Redis without a round trip per decide: each process counts locally
 * and, every `syncMs`, adds its counts to per-address 5-second buckets in Redis and reads back the totals of
 * the addresses it saw since the last sync. A decide's answer is the shared total as of the last
 * sync that included the address plus what this process counted since: an address busy on every
 * replica is current to within a sync interval and its run. While Redis fails the local counts keep
 * answering (and are added once it is back, up to a bound).
 */
export function sharedIpVelocity(options: SharedIpVelocityOptions): SharedIpVelocity {
  const { keyPrefix } = options;
  const shards = options.shards ?? 16;
  const clock = options.clock ?? Date.now;
  const client = syncCommand(options.redis);

  /**
   * The shared total per address from the last sync that read it, and that sync's bucket. Trusted
   * for one bucket after (5-10 s): older, it may hold decides that have left the window, so the
   * answer falls back to this process's own count until the next sync reads the address again.
   */
  const shared = growingLru<string, { total: number; bucket: number }>(options.maxAddresses ?? 100_000);
  /** Counted here since the last sync. */
  let pending = emptyPending();
  /** Sent in the sync under way: still counted until the reply has them in `shared`. */
  let inFlight: Counts = new Map();

  let closed = false;

  /** A chunk's counts go back to pending, within the bound, less the buckets that left the window. */
  function requeue(batch: Counts, addresses: readonly string[], bucket: number): void {
    if (pending.addresses.size + addresses.length <= MAX_PENDING)
      for (const [b, byAddress] of batch) {
        // Buckets that have left the window are of no use to anyone: a long outage keeps none.
        if (b <= bucket - WINDOW_BUCKETS) continue;
        for (const address of addresses) {
          const n = byAddress.get(address);
          if (!n) continue;
          add(pending.buckets, b, address, n);
          pending.addresses.add(address);
        }
      }
    leaveInFlight(batch, addresses);
  }

  /**
   * One script call for one shard's chunk; false when it failed (its counts are then pending again).
   * The bucket is read per chunk: a sync on a slow Redis may outlast one.
   */
  async function syncChunk(batch: Counts, shard: number, addresses: string[]): Promise<boolean> {
    const bucket = Math.floor(clock() / BUCKET_MS);
    try {
      const keys = addresses.map((address) => `${keyPrefix}{ipv:${shard}}:${address}`);
      const reply = await client.riskIpVelocitySync(
        keys.length,
        ...keys,
        bucket,
        ...addsOf(batch, addresses, bucket - WINDOW_BUCKETS + 1),
      );
      for (const [i, address] of addresses.entries()) shared.set(address, { total: Number(reply[i]), bucket });
      leaveInFlight(batch, addresses);
      return true;
    } catch {
      // A script that timed out may still run in Redis later: its counts may then be added twice,
      // which errs towards a step-up, never towards SKIP.
      requeue(batch, addresses, bucket);
      return false;
    }
  }

  /**
   * A chunk's counts leave the in-flight batch as soon as its reply is in `shared` (or its counts are
   * pending again): counted in both, an address read twice until the sync's last chunk answered.
   * Each address is in one chunk only, so what leaves is nothing a chunk still to be sent reads.
   */
  function leaveInFlight(batch: Counts, addresses: readonly string[]): void {
    for (const byAddress of batch.values()) for (const address of addresses) byAddress.delete(address);
  }

  /**
   * Hands what was counted since the last sync to Redis, SYNC_IN_FLIGHT chunks at a time, and keeps
   * the totals it answers. After a failure the rest is not sent but pending again: against a Redis
   * that is down or slower than the command timeout, each chunk would wait out a timeout of its own
   * and leave its script queued there. After `close` the rest is not sent either (the client is
   * closing), and that is no sync error.
   */
  async function syncNow(): Promise<void> {
    if (pending.addresses.size === 0) return;
    const { buckets: batch, addresses } = pending;
    pending = emptyPending();
    inFlight = batch;
    const chunks = chunkByShard(addresses, shards);
    let next = 0;
    let failed = false;
    const sender = async () => {
      while (next < chunks.length && !failed && !closed) {
        const chunk = chunks[next++]!;
        if (!(await syncChunk(batch, chunk.shard, chunk.addresses).catch(() => false))) failed = true;
      }
    };
    await Promise.all(Array.from({ length: Math.min(SYNC_IN_FLIGHT, chunks.length) }, sender));
    const bucket = Math.floor(clock() / BUCKET_MS);
    for (; next < chunks.length; next++) requeue(batch, chunks[next]!.addresses, bucket);
    inFlight = new Map();
    if (failed) options.onSyncError?.();
  }

  let syncing: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (!syncing) syncing = syncNow().finally(() => (syncing = undefined));
  }, options.syncMs ?? 1000);
  timer.unref();

  return {
    hit(ip, now) {
      const bucket = Math.floor(now / BUCKET_MS);
      countHit(pending, ip, bucket);
      const known = shared.get(ip);
      const sharedTotal = known && known.bucket >= bucket - 1 ? known.total : 0;
      return sharedTotal + sumWindow(inFlight, ip, bucket) + sumWindow(pending.buckets, ip, bucket);
    },
    close() {
      closed = true;
      clearInterval(timer);
    },
    async sync() {
      while (syncing) await syncing;
      syncing = syncNow().finally(() => (syncing = undefined));
      await syncing;
    },
  };
}
