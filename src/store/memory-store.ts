import { growingLru } from '../lib/growing-lru.js';
import { pushWindow, timestamp } from '../lib/sliding-window.js';
import {
  CAPS,
  DEFAULT_RETENTION,
  type DeadLetter,
  type History,
  type ObserveLimit,
  type Place,
  type Retention,
  type Migration,
  type Sighting,
  type StepUpSession,
  type Store,
  type TrustGrant,
  type TrustedDevice,
  type UaFamily,
  UserRateLimited,
  heldElsewhere,
  pendingContextOf,
  pendingField,
  sameContext,
  sessionRecordLive,
  supersedes,
} from './store.js';

interface Trust {
  readonly by: string;
  readonly at: number;
  readonly expiresAt: number;
}

interface DeviceState {
  firstSeen: number;
  lastSeen: number;
  seen: number;
  trust?: Trust & { ua?: UaFamily };
}

interface UserState {
  devices: Map<string, DeviceState>;
  networks: Map<string, Trust>;
  place?: Place & { at: number; by: string };
  lastVerifiedAt?: number;
  decides: number[];
  networksSeen: Array<[string, number]>;
  /** [device, at]: who declined, so a device's own declines and those elsewhere count apart. */
  declines: Array<[string, number]>;
  sessionsOpened: Array<[string, number]>;
  /** The per-user rate limit's fixed window. */
  limitWindow?: { resetAt: number; spent: number };
}

const HOUR = 3600_000;

function live(trust: Trust | undefined, now: number): boolean {
  return trust !== undefined && trust.expiresAt > now;
}

const seenAt = (seen: [string, number]): number => seen[1];

/** Counts timestamps newer than `since` in an ascending array. */
function countSince(times: readonly number[], since: number): number {
  let n = 0;
  for (let i = times.length - 1; i >= 0 && times[i]! > since; i--) n++;
  return n;
}

/** Replaces the first occurrence of each previous pseudonym with its current one (see Migration). */
function renamer(renames: Migration['renames']): (text: string) => string {
  return (text) => {
    for (const [from, to] of renames) {
      const at = text.indexOf(from);
      if (at >= 0) text = text.slice(0, at) + to + text.slice(at + from.length);
    }
    return text;
  };
}

const newer = <T extends { at: number }>(a: T | undefined, b: T | undefined): T | undefined =>
  !a ? b : !b ? a : b.at > a.at ? b : a;

/** Merges `from` into `into` under renamed identifiers, as the Redis migration script does: newer entries win, windows unite. */
function absorb(into: UserState, from: UserState, rename: (text: string) => string): void {
  for (const [id, d] of from.devices) {
    const name = rename(id);
    const had = into.devices.get(name);
    if (!had) {
      into.devices.set(name, { ...d });
      continue;
    }
    const trust = newer(had.trust, d.trust);
    into.devices.set(name, {
      firstSeen: Math.min(had.firstSeen, d.firstSeen),
      lastSeen: Math.max(had.lastSeen, d.lastSeen),
      seen: Math.max(had.seen, d.seen),
      ...(trust ? { trust } : {}),
    });
  }
  for (const [key, trust] of from.networks) {
    const name = rename(key);
    into.networks.set(name, newer(into.networks.get(name), trust)!);
  }
  const place = newer(into.place, from.place && { ...from.place, travelNet: rename(from.place.travelNet) });
  if (place) into.place = place;
  if (from.lastVerifiedAt !== undefined) into.lastVerifiedAt = Math.max(into.lastVerifiedAt ?? 0, from.lastVerifiedAt);
  into.decides = [...into.decides, ...from.decides].sort((a, b) => a - b).slice(-CAPS.recentEvents);
  const unite = (a: Array<[string, number]>, b: Array<[string, number]>) =>
    [...a, ...b.map(([id, at]): [string, number] => [rename(id), at])]
      .sort((x, y) => x[1] - y[1])
      .slice(-CAPS.recentEvents);
  into.networksSeen = unite(into.networksSeen, from.networksSeen);
  into.declines = unite(into.declines, from.declines);
  into.sessionsOpened = unite(into.sessionsOpened, from.sessionsOpened);
  if (!into.limitWindow && from.limitWindow) into.limitWindow = { ...from.limitWindow };
}

/** Drops the least recently used entries of a map above its cap (Map iteration order is insertion order). */
function capMap<V>(map: Map<string, V>, cap: number, age: (v: V) => number): void {
  if (map.size <= cap) return;
  const oldest = [...map.entries()].sort((a, b) => age(a[1]) - age(b[1])).slice(0, map.size - cap);
  for (const [key] of oldest) map.delete(key);
}

export interface MemoryStoreOptions {
  readonly maxUsers?: number;
  readonly retention?: Partial<Retention>;
}

/** The embedded default: bounded (LRU users, per-user caps, TTLs), single-process, nothing persisted. */
export function createMemoryStore(options: MemoryStoreOptions = {}): Store {
  const retention = { ...DEFAULT_RETENTION, ...options.retention };
  const users = growingLru<string, UserState>(options.maxUsers ?? 100_000);
  const sessions = growingLru<string, StepUpSession>(100_000);
  const pendingIndex = growingLru<string, string>(100_000);
  const claims = growingLru<string, { at: number; owner: string }>(500_000);
  const deadLetters = new Map<string, { letter: DeadLetter; expiresAt: number }>();

  const emptyState = (): UserState => ({
    devices: new Map(),
    networks: new Map(),
    decides: [],
    networksSeen: [],
    declines: [],
    sessionsOpened: [],
  });

  // No whole-user reset: each key family lapses on its own clock, as the Redis keys do with their
  // own TTLs (sightings HISTORY_TTL after the last one, trust entries at their expiry, windows by time).
  const userState = (user: string): UserState => {
    let state = users.get(user);
    if (!state) {
      state = emptyState();
      users.set(user, state);
    }
    return state;
  };

  /** The sighting part of a device record, unless it lapsed (HISTORY_TTL after it was last seen). */
  const sighted = (device: DeviceState | undefined, now: number): DeviceState | undefined =>
    device && now - device.lastSeen <= retention.historyMs ? device : undefined;

  const networkKeys = (g: { ip: string; prefix: string; asn?: number; country?: string }): string[] => [
    `ip:${g.ip}`,
    `pfx:${g.prefix}`,
    ...(g.asn !== undefined ? [`asn:${g.asn}`] : []),
    ...(g.country ? [`cc:${g.country}`] : []),
  ];

  const verifiedDevices = (state: UserState, now: number): number => {
    let n = 0;
    for (const device of state.devices.values()) if (live(device.trust, now)) n++;
    return n;
  };

  const distinctSince = (seen: ReadonlyArray<[string, number]>, since: number): number => {
    const distinct = new Set<string>();
    for (let i = seen.length - 1; i >= 0 && seen[i]![1] > since; i--) distinct.add(seen[i]![0]);
    return distinct.size;
  };

  const spendLimit = (state: UserState, limit: ObserveLimit | undefined, now: number): void => {
    if (!limit || limit.perMinute <= 0) return;
    if (!state.limitWindow || state.limitWindow.resetAt <= now) state.limitWindow = { resetAt: now + 60_000, spent: 0 };
    state.limitWindow.spent += 1;
    if (state.limitWindow.spent > limit.perMinute) throw new UserRateLimited(state.limitWindow.resetAt - now);
  };

  const pendingKey = (user: string, c: Parameters<typeof pendingField>[0]) => `${user}|${pendingField(c)}`;
  /** Events newer than `since`, of one device or (without one) of all. */
  const countDevice = (events: ReadonlyArray<[string, number]>, device: string | undefined, since: number): number => {
    let n = 0;
    for (let i = events.length - 1; i >= 0 && events[i]![1] > since; i--)
      if (device === undefined || events[i]![0] === device) n++;
    return n;
  };

  /** What a user's state says about this sighting, read without changing anything. */
  const readHistory = (state: UserState | undefined, s: Sighting, now: number): History => {
    const device = state?.devices.get(s.device);
    const deviceTrusted = live(device?.trust, now);
    const seen = sighted(device, now);
    const net = (key: string) => live(state?.networks.get(key), now);
    return {
      deviceKnown: deviceTrusted,
      deviceSeenCount: seen?.seen ?? 0,
      deviceFirstSeenAt: seen?.firstSeen,
      deviceUa: deviceTrusted ? device?.trust?.ua : undefined,
      ipKnown: net(`ip:${s.ip}`),
      prefixKnown: net(`pfx:${s.prefix}`),
      asnKnown: s.asn !== undefined && net(`asn:${s.asn}`),
      countryKnown: !!s.country && net(`cc:${s.country}`),
      verifiedCount: state ? verifiedDevices(state, now) : 0,
      lastVerifiedAt:
        state?.lastVerifiedAt !== undefined && now - state.lastVerifiedAt < retention.trustMs
          ? state.lastVerifiedAt
          : undefined,
      lastPlace: state?.place && now - state.place.at < retention.trustMs ? state.place : undefined,
      decides1h: state ? countSince(state.decides, now - HOUR) : 0,
      distinctIps1h: state ? distinctSince(state.networksSeen, now - HOUR) : 0,
      declines24h: state ? countDevice(state.declines, undefined, now - 24 * HOUR) : 0,
      deviceDeclines24h: state ? countDevice(state.declines, s.device, now - 24 * HOUR) : 0,
    };
  };

  return {
    kind: 'memory',

    async peek(s: Sighting, now: number): Promise<History> {
      return readHistory(users.peek(s.user), s, now);
    },

    async observe(s: Sighting, now: number, limit?: ObserveLimit): Promise<History> {
      const state = userState(s.user);
      spendLimit(state, limit, now);
      const device = state.devices.get(s.device);
      const history = readHistory(state, s, now);
      // Record the sighting after reading, as the Redis script does; a lapsed sighting starts over.
      if (device) {
        if (!sighted(device, now)) {
          device.seen = 0;
          device.firstSeen = now;
        }
        device.seen += 1;
        device.lastSeen = now;
      } else {
        state.devices.set(s.device, { firstSeen: now, lastSeen: now, seen: 1 });
        capMap(state.devices, CAPS.devices, (d) => d.lastSeen);
      }
      pushWindow(state.decides, now, timestamp, HOUR, now, CAPS.recentEvents);
      pushWindow(state.networksSeen, [s.prefix, now], seenAt, HOUR, now, CAPS.recentEvents);
      return {
        ...history,
        decides1h: state.decides.length,
        distinctIps1h: distinctSince(state.networksSeen, now - HOUR),
      };
    },

    async recordPending(session, now) {
      const existing = sessions.get(session.sessionId);
      if (heldElsewhere(existing && sessionRecordLive(existing, retention, now) ? existing : undefined, session, now))
        return false;
      sessions.set(session.sessionId, session, { ttl: Math.max(1, retention.claimMs) });
      pendingIndex.set(pendingKey(session.user, pendingContextOf(session)), session.sessionId, {
        ttl: Math.max(1, session.expiresAt - now),
      });
      return true;
    },

    async findPending(context, now) {
      const id = pendingIndex.get(pendingKey(context.user, context));
      const session = id ? sessions.get(id) : undefined;
      // The record is the truth: a session re-bound to another context since is not this context's.
      if (!session || !sameContext(pendingContextOf(session), context)) return undefined;
      return session.status === 'pending' && session.expiresAt > now ? session : undefined;
    },

    async getSession(sessionId, now) {
      const session = sessions.get(sessionId);
      return session && sessionRecordLive(session, retention, now) ? session : undefined;
    },

    async updateSession(sessionId, change, now) {
      const session = sessions.get(sessionId);
      if (!session) return undefined;
      if (!supersedes(session, change)) return session;
      const updated: StepUpSession = {
        ...session,
        status: change.status,
        diditStatus: change.diditStatus,
        lastEventTs: change.eventTs,
        updatedAt: now,
      };
      sessions.set(sessionId, updated, { ttl: Math.max(1, retention.claimMs) });
      if (change.status !== 'pending') pendingIndex.delete(pendingKey(session.user, pendingContextOf(session)));
      return updated;
    },

    async countSessionOpen(user, device, windowMs, now) {
      const state = userState(user);
      pushWindow(state.sessionsOpened, [device, now], seenAt, windowMs, now, CAPS.recentEvents);
      return { device: countDevice(state.sessionsOpened, device, now - windowMs), user: state.sessionsOpened.length };
    },

    async trust(grant: TrustGrant, now) {
      const state = userState(grant.user);
      const trust = { by: grant.grantedBy, at: now, expiresAt: now + grant.ttlMs };
      const device = state.devices.get(grant.device) ?? { firstSeen: now, lastSeen: now, seen: 0 };
      device.trust = { ...trust, ...(grant.ua ? { ua: grant.ua } : {}) };
      state.devices.set(grant.device, device);
      capMap(state.devices, CAPS.devices, (d) => d.lastSeen);
      for (const key of networkKeys(grant)) {
        state.networks.delete(key);
        state.networks.set(key, trust);
      }
      capMap(state.networks, CAPS.networks, (t) => t.at);
      if (grant.place) state.place = { ...grant.place, at: now, by: grant.grantedBy };
      state.lastVerifiedAt = now;
    },

    async revokeGrant(user, grantedBy) {
      const state = userState(user);
      for (const device of state.devices.values()) if (device.trust?.by === grantedBy) delete device.trust;
      for (const [key, trust] of state.networks) if (trust.by === grantedBy) state.networks.delete(key);
      if (state.place?.by === grantedBy) delete state.place;
    },

    async recordDecline(user, now, device = '') {
      const state = userState(user);
      pushWindow(state.declines, [device, now], seenAt, 24 * HOUR, now, CAPS.recentEvents);
    },

    async claimOnce(key, ttlMs, now, owner = '1') {
      const held = claims.get(key);
      if (held !== undefined && now - held.at < ttlMs) return false;
      claims.set(key, { at: now, owner }, { ttl: Math.max(1, ttlMs) });
      return true;
    },

    async releaseClaim(key, owner) {
      if (owner === undefined || claims.get(key)?.owner === owner) claims.delete(key);
    },

    async putDeadLetter(letter, ttlMs, now) {
      for (const [id, entry] of deadLetters) if (entry.expiresAt <= now) deadLetters.delete(id);
      if (deadLetters.size >= CAPS.deadLetters && !deadLetters.has(letter.id)) return;
      deadLetters.set(letter.id, { letter, expiresAt: now + ttlMs });
    },

    async listDeadLetters(now) {
      return [...deadLetters.values()]
        .filter((e) => e.expiresAt > now)
        .map((e) => e.letter)
        .sort((a, b) => a.at - b.at);
    },

    async removeDeadLetter(id) {
      deadLetters.delete(id);
    },

    async migrate(m, _now) {
      const rename = renamer(m.renames);
      const source = m.from !== m.to ? users.get(m.from) : undefined;
      const target = users.get(m.to);
      if (source || target) {
        // Rebuilt in one synchronous step: nothing else runs in between, as in the Redis script.
        const merged = emptyState();
        if (target) absorb(merged, target, rename);
        if (source) absorb(merged, source, rename);
        capMap(merged.devices, CAPS.devices, (d) => d.lastSeen);
        capMap(merged.networks, CAPS.networks, (t) => t.at);
        users.set(m.to, merged);
        if (source) users.delete(m.from);
      }
      // The pending index stays: a session record holds the pseudonyms it was opened under, so it
      // matches no context under the current ones; it still completes (the webhook finds it by id).
    },

    async listDevices(user, now): Promise<TrustedDevice[]> {
      const state = users.get(user);
      if (!state) return [];
      return [...state.devices.entries()]
        .filter(([, d]) => live(d.trust, now))
        .map(([device, d]) => ({
          device,
          firstVerifiedAt: d.trust!.at,
          lastSeenAt: d.lastSeen,
          expiresAt: d.trust!.expiresAt,
        }));
    },

    async revokeDevice(user, device, now) {
      const state = users.get(user);
      const entry = state?.devices.get(device);
      if (!entry || !live(entry.trust, now)) return false;
      delete entry.trust;
      return true;
    },

    async erase(user) {
      users.delete(user);
      for (const key of pendingIndex.keys()) if (key.startsWith(`${user}|`)) pendingIndex.delete(key);
      for (const [id, session] of sessions.entries()) if (session.user === user) sessions.delete(id);
    },

    async ping() {
      return true;
    },

    async close() {},
  };
}
