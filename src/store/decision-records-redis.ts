import type { Cluster, Redis } from 'ioredis';
import {
  shardOf,
  type DecisionRecord,
  type DecisionRecords,
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
const PUT = `
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'd', ARGV[1], 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return 1`;

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
  riskRecordPut(...args: Array<string | number>): Promise<number>;
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
  redis.defineCommand('riskRecordPut', { lua: PUT, numberOfKeys: 3 });
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

  return {
    kind: 'redis',
    async put(record, now) {
      const shard = shardOf(record.id, shards);
      const step = record.stepUp;
      await r.riskRecordPut(
        recordKey(record.id),
        timeKey(shard),
        openKey(shard),
        JSON.stringify(record),
        step?.session ?? '',
        options.ttlMs,
        record.at,
        step?.expiresAt ?? '',
        record.id,
        now - options.ttlMs,
      );
      if (!step) return;
      const before = (await redis.set(linkKey(step.session), record.id, 'PX', options.ttlMs, 'GET')) as string | null;
      if (before && before !== record.id) await settle(before, step.session, 'superseded', now);
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
