import type { Cluster, Redis } from 'ioredis';
import {
  encodeRecord,
  shardOf,
  type DecisionRecord,
  type DecisionRecords,
  type EncodedRecord,
  type Label,
  type RecordedOutcome,
  type StoredDecision,
} from './decision-records.js';

type Client = Redis | Cluster;

export interface RedisDecisionRecordsOptions {
  readonly redis: Client;
  readonly keyPrefix?: string;
  readonly ttlMs: number;
  /** Keys are spread over this many hash tags, so a Cluster spreads them over its masters. */
  readonly shards?: number;
}

// Every key of one script shares the shard's hash tag ({dr:<n>}): one slot on Cluster.
// A batch of one shard: KEYS[1] its time index, KEYS[2] its open step-ups, KEYS[3..] the records;
// ARGV[1] the retention, ARGV[2] the trim point, then five per record: id, JSON, session, at, window end.
const PUT_MANY = `
local ttl = ARGV[1]
local opened = false
for i = 3, #KEYS do
  local a = 3 + (i - 3) * 5
  redis.call('DEL', KEYS[i])
  redis.call('HSET', KEYS[i], 'd', ARGV[a + 1], 's', ARGV[a + 2])
  redis.call('PEXPIRE', KEYS[i], ttl)
  redis.call('ZADD', KEYS[1], ARGV[a + 3], ARGV[a])
  if ARGV[a + 4] ~= '' then
    redis.call('ZADD', KEYS[2], ARGV[a + 4], ARGV[a])
    opened = true
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
if opened then redis.call('PEXPIRE', KEYS[2], ttl) end
return #KEYS - 2`;

// The claim rule of decision-records.ts (claimable), on the record itself: once per decision.
const SETTLE = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return false
end
if redis.call('HGET', KEYS[1], 's') ~= ARGV[1] then return false end
local o = redis.call('HGET', KEYS[1], 'o')
if o == 'approved' or o == 'declined' or o == 'abandoned' or o == 'superseded' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return false
end
if ARGV[5] == '1' and o then
  redis.call('ZREM', KEYS[2], ARGV[4])
  return false
end
if ARGV[2] == 'in_review' and o then return false end
redis.call('HSET', KEYS[1], 'o', ARGV[2], 'oat', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[4])
return redis.call('HGET', KEYS[1], 'd')`;

const LABEL = `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local previous = redis.call('HGET', KEYS[1], 'l')
redis.call('HSET', KEYS[1], 'l', ARGV[1])
return { redis.call('HGET', KEYS[1], 'd'), previous or '' }`;

interface Scripts {
  riskRecordPutMany(...args: Array<string | number>): Promise<number>;
  riskRecordSettle(...args: Array<string | number>): Promise<string | null>;
  riskRecordLabel(...args: Array<string | number>): Promise<[string, string] | null>;
}

const BATCH = 500;

/**
 * Records as hashes (d: the record's JSON, written once; s: its session; o/oat: the outcome; l: the
 * label), each with the retention as TTL; per shard a time index (trimmed past the retention on
 * every write) and an index of open step-ups by their window's end. The session → decision link
 * lives in the session's shard. Only plain fields change after the write, so no script re-encodes JSON.
 */
export function createRedisDecisionRecords(options: RedisDecisionRecordsOptions): DecisionRecords {
  const redis = options.redis;
  const prefix = options.keyPrefix ?? 'risk:';
  const shards = options.shards ?? 8;
  // The number of keys is the first argument: it depends on the batch.
  redis.defineCommand('riskRecordPutMany', { lua: PUT_MANY });
  redis.defineCommand('riskRecordSettle', { lua: SETTLE, numberOfKeys: 2 });
  redis.defineCommand('riskRecordLabel', { lua: LABEL, numberOfKeys: 1 });
  const r = redis as unknown as Client & Scripts;

  const tag = (id: string) => `${prefix}{dr:${shardOf(id, shards)}}`;
  const recordKey = (id: string) => `${tag(id)}:r:${id}`;
  const timeKey = (shard: number) => `${prefix}{dr:${shard}}:at`;
  const openKey = (shard: number) => `${prefix}{dr:${shard}}:open`;
  const linkKey = (session: string) => `${tag(session)}:s:${session}`;

  const parse = (fields: Record<string, string>): StoredDecision | undefined => {
    if (!fields.d) return undefined;
    const stored: { record: DecisionRecord; outcome?: StoredDecision['outcome']; label?: Label } = {
      record: JSON.parse(fields.d) as DecisionRecord,
    };
    if (fields.o) stored.outcome = { outcome: fields.o as RecordedOutcome, at: Number(fields.oat) };
    if (fields.l) stored.label = JSON.parse(fields.l) as Label;
    return stored;
  };

  const settle = async (id: string, session: string, outcome: RecordedOutcome, now: number, lapse = false) => {
    const shard = shardOf(id, shards);
    const d = await r.riskRecordSettle(recordKey(id), openKey(shard), session, outcome, now, id, lapse ? '1' : '0');
    return d ? (JSON.parse(d) as DecisionRecord) : undefined;
  };

  /** The session → decision link, and the superseded claim of the decision it pointed at before. */
  const link = async (record: DecisionRecord, now: number) => {
    const step = record.stepUp;
    if (!step) return;
    const before = (await redis.set(linkKey(step.session), record.id, 'PX', options.ttlMs, 'GET')) as string | null;
    if (before && before !== record.id) await settle(before, step.session, 'superseded', now);
  };

  // The batches' link phases, in the order the batches were handed over: on Cluster a later batch's
  // scripts (one node) can be answered before an earlier one's (every node).
  let linkTurn: Promise<void> = Promise.resolve();

  const putMany = async (batch: readonly EncodedRecord[], now: number): Promise<void> => {
    const previous = linkTurn;
    let linksSent!: () => void;
    linkTurn = new Promise<void>((resolve) => {
      linksSent = resolve;
    });
    try {
      await writeAndLink(batch, now, previous, linksSent);
    } finally {
      linksSent();
    }
  };

  const writeAndLink = async (
    batch: readonly EncodedRecord[],
    now: number,
    previous: Promise<void>,
    linksSent: () => void,
  ): Promise<void> => {
    const byShard = new Map<number, EncodedRecord[]>();
    for (const encoded of batch) {
      const shard = shardOf(encoded.record.id, shards);
      const list = byShard.get(shard);
      if (list) list.push(encoded);
      else byShard.set(shard, [encoded]);
    }
    // One script per shard (one slot on Cluster), all sent before any answer is awaited.
    const lists = [...byShard.values()];
    const writes = [...byShard].map(([shard, list]) => {
      const args: Array<string | number> = [list.length + 2, timeKey(shard), openKey(shard)];
      for (const { record } of list) args.push(recordKey(record.id));
      args.push(options.ttlMs, now - options.ttlMs);
      for (const { record, json } of list)
        args.push(record.id, json, record.stepUp?.session ?? '', record.at, record.stepUp?.expiresAt ?? '');
      return r.riskRecordPutMany(...args);
    });
    const written = await Promise.allSettled(writes);
    // A shard that failed (its node failing over) costs its own records only: the others are linked.
    const lost = new Set<EncodedRecord>();
    let cause: unknown;
    written.forEach((result, i) => {
      if (result.status === 'fulfilled') return;
      cause ??= result.reason;
      for (const encoded of lists[i]!) lost.add(encoded);
    });
    // Every link sent at once in batch order, not one round trip each: a connection answers in order,
    // so a later hand-out of a session, in this batch or in the next one (written while this one would
    // still be linking), supersedes an earlier one and never the reverse. Sent only once the batch before
    // has sent its own.
    await previous;
    const links = batch.filter((encoded) => !lost.has(encoded)).map(({ record }) => link(record, now));
    // Sent: a later batch's links for the same session go to the same connection, which answers in order.
    linksSent();
    await Promise.all(links);
    if (lost.size > 0) throw Object.assign(new Error(`${(cause as Error)?.message ?? cause}`), { records: lost.size });
  };

  return {
    kind: 'redis',
    putMany,
    async put(record, now) {
      await putMany([encodeRecord(record)], now);
    },
    async get(id, now) {
      const stored = parse(await redis.hgetall(recordKey(id)));
      // The key's TTL is Redis's clock; the caller's clock decides too (tests move it).
      return stored && now - stored.record.at < options.ttlMs ? stored : undefined;
    },
    async decisionOf(session) {
      return (await redis.get(linkKey(session))) ?? undefined;
    },
    settle,
    async lapsed(now, max) {
      const due: Array<{ id: string; session: string }> = [];
      for (let shard = 0; shard < shards && due.length < max; shard++) {
        const ids = await redis.zrangebyscore(openKey(shard), '-inf', now, 'LIMIT', 0, max - due.length);
        if (ids.length === 0) continue;
        const pipeline = redis.pipeline();
        for (const id of ids) pipeline.hget(recordKey(id), 's');
        const sessions = (await pipeline.exec()) ?? [];
        // A record gone from under its index entry is cleared by the claim (session '' never matches one).
        for (const [i, id] of ids.entries()) due.push({ id, session: (sessions[i]?.[1] as string | null) ?? '' });
      }
      return due;
    },
    async label(id, label, now) {
      const answer = await r.riskRecordLabel(recordKey(id), JSON.stringify(label));
      if (!answer) return undefined;
      const record = JSON.parse(answer[0]) as DecisionRecord;
      if (now - record.at >= options.ttlMs) return undefined;
      return { ...(answer[1] ? { previous: JSON.parse(answer[1]) as Label } : {}), record };
    },
    async list(since, now) {
      const out: StoredDecision[] = [];
      for (let shard = 0; shard < shards; shard++) {
        const ids = await redis.zrangebyscore(timeKey(shard), Math.max(since, now - options.ttlMs + 1), '+inf');
        for (let i = 0; i < ids.length; i += BATCH) {
          const pipeline = redis.pipeline();
          for (const id of ids.slice(i, i + BATCH)) pipeline.hgetall(recordKey(id));
          for (const [error, fields] of (await pipeline.exec()) ?? []) {
            if (error) throw error;
            const stored = parse(fields as Record<string, string>);
            if (stored) out.push(stored);
          }
        }
      }
      return out.sort((a, b) => a.record.at - b.record.at);
    },
    async close() {},
  };
}
