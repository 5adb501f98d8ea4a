import type { BypassContext } from '../engine/ruleset.js';
import type { AttributeValue, Signals } from '../engine/signals.js';
import type { Pseudonymiser } from '../store/pseudonymise.js';
import { migrationOf } from '../store/rotation.js';
import { UserRateLimited, type History, type ObserveLimit, type Place, type Sighting, type Store, type StepUpSession } from '../store/store.js';
import { LocalWindows } from '../lib/fixed-windows.js';
import type { GeoIp } from './geoip.js';
import { parseClientIp } from './ip.js';
import type { IpLists } from './ip-lists.js';
import { assessTravel, coarse } from './travel.js';
import type { UserAgentParser } from './user-agent.js';
import type { IpVelocity } from './ip-velocity.js';
import type { Mutable } from '../lib/mutable.js';

export interface EnrichDeps {
  /** The store gets this long (the Redis client has its own shorter command timeout). */
  readonly storeDeadlineMs?: number;
  readonly geoip: GeoIp;
  readonly lists: IpLists;
  readonly userAgents: UserAgentParser;
  readonly store: Store;
  readonly ids: Pseudonymiser;
  /** Decides per address in the last minute, answered without a store round trip. */
  readonly ipVelocity: IpVelocity;
  /**
   * Decides per user per minute, counted by the store inside the same call that reads the history
   * (no round trip of its own); while the store fails, counted in this process instead.
   */
  readonly userLimit?: ObserveLimit;
}

export interface SignInRequest {
  readonly userId: string;
  readonly deviceId: string;
  readonly ip: string;
  readonly userAgent?: string;
  readonly purpose: string;
  readonly attributes?: Readonly<Record<string, AttributeValue>>;
}

export interface StageTimer {
  (stage: 'enrich' | 'store', startedAt: bigint): void;
}

export interface Enriched {
  readonly signals: Signals;
  /** Inputs that failed: `store`, `geoip`, `lists`. */
  readonly degraded: readonly string[];
  /** Pseudonymised ids for logs, and what an Approved step-up would trust. */
  readonly user: string;
  readonly device: string;
  readonly grant: StepUpSession['grant'];
  /** What bypasses match against. */
  readonly bypass: BypassContext;
}

const DAY = 24 * 3600_000;

/** One promise and one timer per call (Promise.race plus finally would make three promises). */
function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('store deadline')), ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

function isHistory(value: unknown): value is History {
  const h = value as Partial<History> | null;
  return (
    !!h &&
    typeof h.deviceKnown === 'boolean' &&
    typeof h.ipKnown === 'boolean' &&
    typeof h.prefixKnown === 'boolean' &&
    Number.isFinite(h.deviceSeenCount) &&
    Number.isFinite(h.verifiedCount) &&
    Number.isFinite(h.decides1h) &&
    Number.isFinite(h.distinctIps1h) &&
    Number.isFinite(h.declines24h) &&
    Number.isFinite(h.deviceDeclines24h)
  );
}

function days(since: number | undefined, now: number): number | undefined {
  return since === undefined ? undefined : Math.max(0, (now - since) / DAY);
}

export function createEnricher(deps: EnrichDeps, timer?: StageTimer) {
  const fallbackWindows = new LocalWindows();
  return async function enrich(request: SignInRequest, now: number): Promise<Enriched> {
    const started = process.hrtime.bigint();
    const degraded = new Set<string>();
    const ip = parseClientIp(request.ip);
    const geo = deps.geoip.lookup(ip.address);
    if (geo.failed.length > 0) degraded.add('geoip');
    const lists = deps.lists.check(ip, geo.asn, now);
    if (lists.unavailable.length > 0) degraded.add('lists');
    const ua = deps.userAgents.parse(request.userAgent);

    const user = deps.ids.id('user', request.userId);
    const device = deps.ids.id('device', request.deviceId);
    const ipId = deps.ids.id('ip', ip.address);
    const prefix = deps.ids.id('net', ip.prefix);
    const travelNet = deps.ids.id('net', ip.travelNet);
    const country = geo.country || undefined;
    const place: Place | undefined =
      geo.latitude !== undefined && geo.longitude !== undefined && !ip.private
        ? { lat: coarse(geo.latitude), lon: coarse(geo.longitude), accuracyKm: geo.accuracyKm ?? 1000, travelNet }
        : undefined;
    timer?.('enrich', started);

    const sighting: Mutable<Sighting> = { user, device, ip: ipId, prefix };
    if (geo.asn !== undefined) sighting.asn = geo.asn;
    if (country) sighting.country = country;
    const storeStarted = process.hrtime.bigint();
    let history: History | undefined;
    // Per /64 for IPv6: one subscriber holds a whole /64 and can rotate through it at will. IPv4 (and
    // IPv4 embedded in IPv6, already unwrapped) counts per address, which is what `prefix` is there.
    const ipDecides = deps.ipVelocity.hit(ip.version === 6 ? prefix : ipId, now);
    try {
      // During an ID_HASH_KEY rotation the user's state moves to the current pseudonyms first (one
      // more round trip, inside the same deadline): a failed move is a failed store, never a cold start.
      const migration = migrationOf(deps.ids, { user: request.userId, device: request.deviceId, ip: ip.address, nets: [ip.prefix, ip.travelNet] });
      const work = migration ? deps.store.migrate(migration, now).then(() => deps.store.observe(sighting, now, deps.userLimit)) : deps.store.observe(sighting, now, deps.userLimit);
      const reply = await withDeadline(work, deps.storeDeadlineMs ?? 250);
      // A store that answers nonsense is as unknown as one that does not answer.
      if (isHistory(reply)) history = reply;
      else degraded.add('store');
    } catch (error) {
      if (error instanceof UserRateLimited) throw error;
      degraded.add('store');
      if (deps.userLimit) {
        const window = fallbackWindows.incr(`user:${user}`, 60_000, now);
        if (window.current > deps.userLimit.perMinute) throw new UserRateLimited(window.ttl);
      }
    }
    timer?.('store', storeStarted);

    const s: Record<string, unknown> = {
      'request.purpose': request.purpose,
      'request.attributes': request.attributes ?? {},
      'ip.version': ip.version,
      'ip.private': ip.private,
      'ua.browser': ua.browser,
      'ua.os': ua.os,
      'ua.device_type': ua.deviceType,
      'ua.bot': ua.bot,
      'ua.absent': ua.absent,
    };
    if (lists.tor !== undefined) s['ip.tor'] = lists.tor;
    if (lists.vpn !== undefined) s['ip.vpn'] = lists.vpn;
    if (lists.relay !== undefined) s['ip.relay'] = lists.relay;
    if (lists.hosting !== undefined) s['ip.hosting'] = lists.hosting;
    if (!geo.failed.includes('city')) s['geo.country'] = geo.country ?? '';
    if (geo.accuracyKm !== undefined) s['geo.accuracy_km'] = geo.accuracyKm;
    if (geo.asn !== undefined) {
      s['ip.asn'] = geo.asn;
      s['ip.asn_org'] = geo.asnOrg ?? '';
    }
    if (geo.connectionType !== undefined) s['ip.connection_type'] = geo.connectionType;
    if (geo.anonymous !== undefined) s['ip.anonymous'] = geo.anonymous;

    if (history) {
      s['device.known'] = history.deviceKnown;
      s['device.seen_count'] = history.deviceSeenCount;
      s['device.first_seen_days'] = days(history.deviceFirstSeenAt, now) ?? 0;
      s['ip.known'] = history.ipKnown;
      s['ip.prefix_known'] = history.prefixKnown;
      if (geo.asn !== undefined) s['ip.asn_known'] = history.asnKnown;
      if (s['geo.country'] !== undefined) s['geo.country_known'] = history.countryKnown;
      // Dropping the agent is a change too: stripping it must not dodge the comparison.
      const verifiedUa = history.deviceUa && (history.deviceUa.browser || history.deviceUa.os) ? history.deviceUa : undefined;
      s['ua.changed'] = verifiedUa !== undefined && (ua.absent || verifiedUa.browser !== ua.browser || verifiedUa.os !== ua.os);
      s['user.verified_count'] = history.verifiedCount;
      const lastVerified = days(history.lastVerifiedAt, now);
      if (lastVerified !== undefined) s['user.last_verified_days'] = lastVerified;
      s['velocity.decides_1h'] = history.decides1h;
      s['velocity.distinct_ips_1h'] = history.distinctIps1h;
      s['velocity.declines_24h'] = history.declines24h;
      s['velocity.declines_device_24h'] = history.deviceDeclines24h;
      s['velocity.declines_elsewhere_24h'] = Math.max(0, history.declines24h - history.deviceDeclines24h);
      s['velocity.ip_decides_1m'] = ipDecides;
      const mobile = geo.connectionType === 'Cellular' || geo.connectionType === 'Satellite';
      const unreliable = ip.private || mobile || lists.tor !== false || lists.vpn !== false || lists.relay !== false;
      const travel = assessTravel({ last: history.lastPlace, here: place, now, unreliable });
      s['geo.travel_assessed'] = travel !== undefined;
      if (travel) {
        s['geo.distance_km'] = travel.distanceKm;
        s['geo.elapsed_hours'] = travel.elapsedHours;
        s['geo.speed_kmh'] = travel.speedKmh;
      }
    }

    // Built by assignment rather than spreads: this runs on every sign-in.
    const bypass: Mutable<BypassContext> = { user, device, ip: ip.bytes };
    const grant: Mutable<Enriched['grant']> = { user, device, ip: ipId, prefix };
    if (geo.asn !== undefined) bypass.asn = grant.asn = geo.asn;
    if (country) bypass.country = grant.country = country;
    if (geo.city && !ip.private) grant.city = geo.city;
    if (place) grant.place = place;
    if (ua.browser || ua.os) grant.ua = { browser: ua.browser, os: ua.os };
    return { signals: s as Signals, degraded: degraded.size === 0 ? [] : [...degraded].sort(), user, device, bypass, grant };
  };
}

export type Enricher = ReturnType<typeof createEnricher>;
