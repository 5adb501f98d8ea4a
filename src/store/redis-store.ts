import { randomBytes } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import {
  BIND_SESSION,
  LIST_DEVICES,
  MIGRATE,
  MIGRATION_FAMILIES,
  MIGRATION_MERGE,
  MIGRATION_PRUNE,
  MIGRATION_SNAPSHOT,
  OBSERVE,
  PUT_DEAD_LETTER,
  REVOKE_DEVICE,
  REVOKE_GRANT,
  TRUST,
  UPDATE_SESSION,
} from './redis-scripts.js';
import {
  CAPS,
  DEFAULT_RETENTION,
  type DeadLetter,
  type History,
  type ObserveLimit,
  type Retention,
  type Sighting,
  type StepUpSession,
  type Store,
  type TrustedDevice,
  UserRateLimited,
  pendingContextOf,
  pendingField,
  sameContext,
  sessionRecordLive,
} from './store.js';

type Client = Redis | Cluster;

interface Scripts {
  riskObserve(...args: Array<string | number>): Promise<unknown[]>;
  riskTrust(...args: Array<string | number>): Promise<number>;
  riskRevokeGrant(...args: Array<string | number>): Promise<number>;
  riskListDevices(...args: Array<string | number>): Promise<[string[], string[]]>;
  riskRevokeDevice(...args: Array<string | number>): Promise<number>;
  riskUpdateSession(...args: Array<string | number>): Promise<string | null>;
  riskBindSession(...args: Array<string | number>): Promise<number>;
  riskPutDeadLetter(...args: Array<string | number>): Promise<number>;
  riskMigrate(...args: Array<string | number>): Promise<number>;
  riskMigrationSnapshot(...args: Array<string | number>): Promise<string>;
  riskMigrationMerge(...args: Array<string | number>): Promise<number>;
  riskMigrationPrune(...args: Array<string | number>): Promise<number>;
}

export interface RedisStoreOptions {
  readonly redis: Client;
  readonly keyPrefix?: string;
  readonly retention?: Partial<Retention>;
}

const clean = (text: string) => text.replace(/\|/g, '/');

/**
 * The production store. Every key of a user carries the user's pseudonym as a hash tag, so each
 * script stays in one Cluster slot; every key has a TTL and every per-user set a cap. Keys and values
 * hold pseudonyms (HMACs), coarse coordinates and counters only.
 */
export function createRedisStore(options: RedisStoreOptions): Store {
  const redis = options.redis;
  const prefix = options.keyPrefix ?? 'risk:';
  const retention = { ...DEFAULT_RETENTION, ...options.retention };
  const scripts: Array<[keyof Scripts, string, number]> = [
    ['riskObserve', OBSERVE, 9],
    ['riskTrust', TRUST, 5],
    ['riskRevokeGrant', REVOKE_GRANT, 3],
    ['riskListDevices', LIST_DEVICES, 2],
    ['riskRevokeDevice', REVOKE_DEVICE, 1],
    ['riskUpdateSession', UPDATE_SESSION, 1],
    ['riskBindSession', BIND_SESSION, 1],
    ['riskPutDeadLetter', PUT_DEAD_LETTER, 2],
    ['riskMigrate', MIGRATE, 2 * MIGRATION_FAMILIES.length],
    ['riskMigrationSnapshot', MIGRATION_SNAPSHOT, MIGRATION_FAMILIES.length],
    ['riskMigrationMerge', MIGRATION_MERGE, MIGRATION_FAMILIES.length],
    ['riskMigrationPrune', MIGRATION_PRUNE, MIGRATION_FAMILIES.length],
  ];
  for (const [name, lua, numberOfKeys] of scripts) redis.defineCommand(name, { lua, numberOfKeys });
  const r = redis as unknown as Client & Scripts;
  const cluster = (redis as { isCluster?: boolean }).isCluster === true;

  const k = (user: string) => {
    const tag = `${prefix}{u:${user}}`;
    return {
      seen: `${tag}:seen`,
      dtrust: `${tag}:dtrust`,
      ntrust: `${tag}:ntrust`,
      place: `${tag}:place`,
      meta: `${tag}:meta`,
      decides: `${tag}:decides`,
      nets: `${tag}:nets`,
      declines: `${tag}:declines`,
      limit: `${tag}:limit`,
      opens: `${tag}:opens`,
      pending: `${tag}:pending`,
      sessions: `${tag}:sessions`,
    };
  };
  const sessionKey = (sessionId: string) => `${prefix}{s:${sessionId}}`;
  const claimKey = (key: string) => `${prefix}{c:${key}}`;
  // Dead letters are few (an alert fires on the first): one slot for all keeps listing a single call.
  const deadLetterIndex = `${prefix}{dl}:index`;
  const deadLetterKey = (id: string) => `${prefix}{dl}:${id}`;

  const netKeys = (g: { ip: string; prefix: string; asn?: number; country?: string }) => [
    `ip:${g.ip}`,
    `pfx:${g.prefix}`,
    g.asn !== undefined ? `asn:${g.asn}` : '',
    g.country ? `cc:${g.country}` : '',
  ];

  const parseSession = (raw: string | null | undefined): StepUpSession | undefined =>
    raw ? (JSON.parse(raw) as StepUpSession) : undefined;

  // Members of the sliding windows must be unique per event: a per-process random tag and a counter
  // (cheaper than random bytes per decide, and unique across replicas).
  const processTag = randomBytes(6).toString('base64url');
  let sequence = 0;
  const eventMember = (now: number) => `${now}:${processTag}:${(sequence = (sequence + 1) % 1e9)}`;

  async function history(s: Sighting, now: number, record: boolean, limit?: ObserveLimit): Promise<History> {
    const keys = k(s.user);
    const nets = netKeys(s);
    const reply = (await r.riskObserve(
      keys.seen,
      keys.dtrust,
      keys.ntrust,
      keys.place,
      keys.meta,
      keys.decides,
      keys.nets,
      keys.declines,
      keys.limit,
      now,
      s.device,
      nets[0]!,
      nets[1]!,
      nets[2]!,
      nets[3]!,
      s.prefix,
      retention.historyMs,
      CAPS.devices,
      eventMember(now),
      CAPS.recentEvents,
      record ? '1' : '0',
      limit?.perMinute ?? 0,
    )) as [
      number,
      number,
      string,
      string,
      number,
      number,
      number,
      number,
      number,
      string,
      string,
      number,
      number,
      number,
      number,
    ];
    if (reply[0] === -1) throw new UserRateLimited(Number(reply[1]));
    const [
      deviceKnown,
      seenCount,
      firstSeen,
      ua,
      ipKnown,
      prefixKnown,
      asnKnown,
      countryKnown,
      verified,
      lastVerified,
      place,
      decides,
      distinctNets,
      declines,
      deviceDeclines,
    ] = reply;
    const [browser, os] = ua ? ua.split('|') : [];
    // The place and the last verification lapse with the trust, on the caller's clock.
    const p = place ? place.split('|') : undefined;
    const placeLive = p && p.length >= 6 && now - Number(p[4]) < retention.trustMs;
    const verifiedLive = lastVerified && now - Number(lastVerified) < retention.trustMs;
    return {
      deviceKnown: deviceKnown === 1,
      deviceSeenCount: Number(seenCount),
      deviceFirstSeenAt: firstSeen ? Number(firstSeen) : undefined,
      deviceUa: ua ? { browser: browser ?? '', os: os ?? '' } : undefined,
      ipKnown: ipKnown === 1,
      prefixKnown: prefixKnown === 1,
      asnKnown: asnKnown === 1,
      countryKnown: countryKnown === 1,
      verifiedCount: Number(verified),
      lastVerifiedAt: verifiedLive ? Number(lastVerified) : undefined,
      lastPlace:
        p && placeLive
          ? { lat: Number(p[0]), lon: Number(p[1]), accuracyKm: Number(p[2]), travelNet: p[3]!, at: Number(p[4]) }
          : undefined,
      decides1h: Number(decides),
      distinctIps1h: Number(distinctNets),
      declines24h: Number(declines),
      deviceDeclines24h: Number(deviceDeclines),
    };
  }

  return {
    kind: 'redis',

    observe(s, now, limit) {
      return history(s, now, true, limit);
    },

    peek(s, now) {
      return history(s, now, false);
    },

    async recordPending(session, now) {
      const keys = k(session.user);
      const json = JSON.stringify(session);
      const pendingTtl = Math.max(1, session.expiresAt - now);
      const c = pendingContextOf(session);
      const bound = await r.riskBindSession(
        sessionKey(session.sessionId),
        json,
        now,
        retention.claimMs,
        c.user,
        c.device,
        c.prefix,
        c.method,
        c.purposeClass,
      );
      if (bound !== 1) return false;
      // The index lives in the user's slot, the record in its own: a second round trip (step-up path only).
      const results = await redis
        .multi()
        .hset(keys.pending, pendingField(c), session.sessionId)
        .pexpire(keys.pending, Math.max(pendingTtl, retention.pendingMs))
        .sadd(keys.sessions, session.sessionId)
        .pexpire(keys.sessions, retention.claimMs)
        .exec();
      const failed = results?.find(([error]) => error);
      if (!results || failed) throw failed?.[0] ?? new Error('transaction aborted');
      return true;
    },

    async findPending(context, now) {
      const id = await redis.hget(k(context.user).pending, pendingField(context));
      // The session record (its own slot) is the truth: one re-bound to another context since is not this one's.
      const session = id ? parseSession(await redis.get(sessionKey(id))) : undefined;
      if (!session || !sameContext(pendingContextOf(session), context)) return undefined;
      return session.status === 'pending' && session.expiresAt > now ? session : undefined;
    },

    async getSession(sessionId, now) {
      const session = parseSession(await redis.get(sessionKey(sessionId)));
      return session && sessionRecordLive(session, retention, now) ? session : undefined;
    },

    async updateSession(sessionId, change, now) {
      const updated = parseSession(
        await r.riskUpdateSession(sessionKey(sessionId), change.status, change.diditStatus, change.eventTs, now),
      );
      if (updated && updated.status !== 'pending')
        await redis.hdel(k(updated.user).pending, pendingField(pendingContextOf(updated)));
      return updated;
    },

    async countSessionOpen(user, device, windowMs, now) {
      const key = k(user).opens;
      const results = await redis
        .multi()
        .zadd(key, now, `${device}|${eventMember(now)}`)
        .zremrangebyscore(key, '-inf', now - windowMs)
        .zremrangebyrank(key, 0, -(CAPS.recentEvents + 1))
        .zrange(key, '0', '-1')
        .pexpire(key, windowMs)
        .exec();
      const failed = results?.find(([error]) => error);
      if (!results || failed) throw failed?.[0] ?? new Error('transaction aborted');
      const members = results[3]![1] as string[];
      return { device: members.filter((m) => m.startsWith(`${device}|`)).length, user: members.length };
    },

    async trust(grant, now) {
      const keys = k(grant.user);
      const place = grant.place
        ? `${grant.place.lat}|${grant.place.lon}|${grant.place.accuracyKm}|${grant.place.travelNet}`
        : '';
      const ua = grant.ua ? `${clean(grant.ua.browser)}|${clean(grant.ua.os)}` : '|';
      await r.riskTrust(
        keys.dtrust,
        keys.ntrust,
        keys.place,
        keys.meta,
        keys.seen,
        now,
        grant.device,
        grant.grantedBy,
        now + grant.ttlMs,
        ua,
        grant.ttlMs,
        CAPS.devices,
        CAPS.networks,
        place,
        ...netKeys(grant).filter(Boolean),
      );
    },

    async revokeGrant(user, grantedBy) {
      const keys = k(user);
      await r.riskRevokeGrant(keys.dtrust, keys.ntrust, keys.place, grantedBy);
    },

    async recordDecline(user, now, device = '') {
      const key = k(user).declines;
      const results = await redis
        .multi()
        .zadd(key, now, `${device}|${eventMember(now)}`)
        .zremrangebyscore(key, '-inf', now - 86_400_000)
        .zremrangebyrank(key, 0, -(CAPS.recentEvents + 1))
        .pexpire(key, 86_400_000)
        .exec();
      const failed = results?.find(([error]) => error);
      if (!results || failed) throw failed?.[0] ?? new Error('transaction aborted');
    },

    async claimOnce(key, ttlMs, _now, owner = '1') {
      return (await redis.set(claimKey(key), owner, 'PX', Math.max(1, ttlMs), 'NX')) === 'OK';
    },

    async releaseClaim(key, owner) {
      if (owner === undefined) await redis.del(claimKey(key));
      else
        await redis.eval(
          "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
          1,
          claimKey(key),
          owner,
        );
    },

    async putDeadLetter(letter, ttlMs, now) {
      await r.riskPutDeadLetter(
        deadLetterIndex,
        deadLetterKey(letter.id),
        letter.id,
        JSON.stringify(letter),
        Math.max(1, ttlMs),
        now,
        CAPS.deadLetters,
      );
    },

    async listDeadLetters(now) {
      const ids = await redis.zrangebyscore(deadLetterIndex, now + 1, '+inf');
      if (ids.length === 0) return [];
      const values = await redis.mget(...ids.map(deadLetterKey));
      return values.flatMap((v) => (v ? [JSON.parse(v) as DeadLetter] : [])).sort((a, b) => a.at - b.at);
    },

    async removeDeadLetter(id) {
      await redis.multi().del(deadLetterKey(id)).zrem(deadLetterIndex, id).exec();
    },

    async migrate(m) {
      const previous = k(m.from);
      const current = k(m.to);
      const from = MIGRATION_FAMILIES.map((family) => previous[family]);
      const to = MIGRATION_FAMILIES.map((family) => current[family]);
      const limits = [CAPS.devices, CAPS.networks, CAPS.recentEvents];
      const renames = m.renames.flat();
      if (!cluster) {
        await r.riskMigrate(...from, ...to, ...limits, ...renames);
        return;
      }
      // The two users hash to two slots: copy, merge, then remove exactly what was copied. A crash
      // between the steps leaves the entries in both places; the next touch merges them again.
      const dump = await r.riskMigrationSnapshot(...from);
      await r.riskMigrationMerge(...to, ...limits, dump, ...renames);
      if (dump !== '') await r.riskMigrationPrune(...from, dump);
    },

    async listDevices(user, now): Promise<TrustedDevice[]> {
      const keys = k(user);
      const [trusted, seen] = await r.riskListDevices(keys.dtrust, keys.seen);
      const seenAt = new Map<string, number>();
      for (let i = 0; i < seen.length; i += 2) seenAt.set(seen[i]!, Number(seen[i + 1]!.split('|')[1]));
      const devices: TrustedDevice[] = [];
      for (let i = 0; i < trusted.length; i += 2) {
        const [, at, expiresAt] = trusted[i + 1]!.split('|');
        if (Number(expiresAt) <= now) continue;
        devices.push({
          device: trusted[i]!,
          firstVerifiedAt: Number(at),
          lastSeenAt: seenAt.get(trusted[i]!) ?? Number(at),
          expiresAt: Number(expiresAt),
        });
      }
      return devices;
    },

    async revokeDevice(user, device, now) {
      return (await r.riskRevokeDevice(k(user).dtrust, device, now)) === 1;
    },

    async erase(user) {
      const keys = k(user);
      const sessionIds = await redis.smembers(keys.sessions);
      // Session records live in their own slots: one DEL each (a Cluster refuses multi-slot DEL).
      await Promise.all(sessionIds.map((id) => redis.del(sessionKey(id))));
      await redis.del(...Object.values(keys));
    },

    async ping() {
      return (await redis.ping()) === 'PONG';
    },

    async close() {
      // QUIT when connected; a client that is down or reconnecting must still stop for good.
      await Promise.race([
        redis.quit().catch(() => undefined),
        new Promise((resolve) => setTimeout(resolve, 500).unref()),
      ]);
      redis.disconnect();
    },
  };
}
