import type { BypassContext } from '../engine/ruleset.js';
import type { AttributeValue, Signals, TypedSignals } from '../engine/signals.js';
import type { Pseudonymiser } from '../store/pseudonymise.js';
import { migrationOf } from '../store/rotation.js';
import {
  UserRateLimited,
  type History,
  type ObserveLimit,
  type Place,
  type Sighting,
  type Store,
  type StepUpSession,
} from '../store/store.js';
import { LocalWindows } from '../lib/fixed-windows.js';
import type { GeoIp, GeoResult } from './geoip.js';
import { parseClientIp, trustNetworkId, type ClientIp } from './ip.js';
import type { IpLists, ListVerdict } from './ip-lists.js';
import { assessTravel, coarse } from './travel.js';
import type { UserAgentInfo, UserAgentParser } from './user-agent.js';
import type { IpVelocity } from './ip-velocity.js';
import type { Mutable } from '../lib/mutable.js';
import { withDeadline } from '../lib/deadline.js';

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

export type StageTimer = (stage: 'enrich' | 'store', startedAt: bigint) => void;

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

/** What the in-process lookups found: the address, its networks and places, the agent, the pseudonyms. */
interface Lookups {
  readonly ip: ClientIp;
  readonly geo: GeoResult;
  readonly lists: ListVerdict;
  readonly ua: UserAgentInfo;
  readonly user: string;
  readonly device: string;
  readonly ipId: string;
  readonly prefix: string;
  readonly country: string | undefined;
  readonly place: Place | undefined;
}

/** Step 1, no IO: parse the address, look it up in GeoIP and the lists, parse the agent, pseudonymise. */
function lookUp(deps: EnrichDeps, request: SignInRequest, now: number, degraded: Set<string>): Lookups {
  const ip = parseClientIp(request.ip);
  const geo = deps.geoip.lookup(ip.address);
  if (geo.failed.length > 0) degraded.add('geoip');
  const lists = deps.lists.check(ip, geo.asn, now);
  if (lists.unavailable.length > 0) degraded.add('lists');
  const ua = deps.userAgents.parse(request.userAgent);
  const place: Place | undefined =
    geo.latitude !== undefined && geo.longitude !== undefined && !ip.private
      ? {
          lat: coarse(geo.latitude),
          lon: coarse(geo.longitude),
          accuracyKm: geo.accuracyKm ?? 1000,
          travelNet: deps.ids.id('net', ip.travelNet),
        }
      : undefined;
  return {
    ip,
    geo,
    lists,
    ua,
    user: deps.ids.id('user', request.userId),
    device: deps.ids.id('device', request.deviceId),
    ipId: deps.ids.id('ip', ip.address),
    prefix: trustNetworkId(deps.ids, ip),
    country: geo.country || undefined,
    place,
  };
}

/** The signals of the request itself and of the in-process lookups: known whatever the store does. */
function requestSignals(request: SignInRequest, { ip, geo, lists, ua }: Lookups): TypedSignals {
  const s: TypedSignals = {
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
  return s;
}

/** Adds the signals read from the user's history; without a history they stay unknown. */
function addHistorySignals(
  s: TypedSignals,
  history: History,
  { ip, geo, lists, ua, place }: Lookups,
  ipDecides: number,
  now: number,
): void {
  s['device.known'] = history.deviceKnown;
  s['device.seen_count'] = history.deviceSeenCount;
  s['device.first_seen_days'] = days(history.deviceFirstSeenAt, now) ?? 0;
  s['ip.known'] = history.ipKnown;
  s['ip.prefix_known'] = history.prefixKnown;
  if (geo.asn !== undefined) s['ip.asn_known'] = history.asnKnown;
  if (s['geo.country'] !== undefined) s['geo.country_known'] = history.countryKnown;
  // Dropping the agent is a change too: stripping it must not dodge the comparison.
  const verifiedUa =
    history.deviceUa && (history.deviceUa.browser || history.deviceUa.os) ? history.deviceUa : undefined;
  s['ua.changed'] =
    verifiedUa !== undefined && (ua.absent || verifiedUa.browser !== ua.browser || verifiedUa.os !== ua.os);
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

export function createEnricher(deps: EnrichDeps, timer?: StageTimer) {
  const fallbackWindows = new LocalWindows();

  /**
   * Step 2, the one round trip: record this sighting and read the user's history. A failed, late or
   * nonsensical store leaves the history unknown (degraded); the per-user limit then counts here.
   */
  async function readHistory(
    request: SignInRequest,
    found: Lookups,
    now: number,
    degraded: Set<string>,
  ): Promise<History | undefined> {
    const { geo, user, device, ipId, prefix, country } = found;
    const sighting: Mutable<Sighting> = { user, device, ip: ipId, prefix };
    if (geo.asn !== undefined) sighting.asn = geo.asn;
    if (country) sighting.country = country;
    try {
      // During an ID_HASH_KEY rotation the user's state moves to the current pseudonyms first (one
      // more round trip, inside the same deadline): a failed move is a failed store, never a cold start.
      const migration = migrationOf(deps.ids, {
        user: request.userId,
        device: request.deviceId,
        ip: found.ip.address,
        nets: [found.ip.prefix, found.ip.travelNet],
      });
      const work = migration
        ? deps.store.migrate(migration, now).then(() => deps.store.observe(sighting, now, deps.userLimit))
        : deps.store.observe(sighting, now, deps.userLimit);
      const reply = await withDeadline(work, deps.storeDeadlineMs ?? 250, 'store deadline');
      // A store that answers nonsense is as unknown as one that does not answer.
      if (isHistory(reply)) return reply;
      degraded.add('store');
    } catch (error) {
      if (error instanceof UserRateLimited) throw error;
      degraded.add('store');
      if (deps.userLimit) {
        const window = fallbackWindows.incr(`user:${user}`, 60_000, now);
        if (window.current > deps.userLimit.perMinute) throw new UserRateLimited(window.ttl);
      }
    }
    return undefined;
  }

  return async function enrich(request: SignInRequest, now: number): Promise<Enriched> {
    const degraded = new Set<string>();
    const started = process.hrtime.bigint();
    const found = lookUp(deps, request, now, degraded);
    timer?.('enrich', started);

    const storeStarted = process.hrtime.bigint();
    // Per /64 for IPv6: one subscriber holds a whole /64 and can rotate through it at will. IPv4 (and
    // IPv4 embedded in IPv6, already unwrapped) counts per address, which is what `prefix` is there.
    const ipDecides = deps.ipVelocity.hit(found.ip.version === 6 ? found.prefix : found.ipId, now);
    const history = await readHistory(request, found, now, degraded);
    timer?.('store', storeStarted);

    const signals = requestSignals(request, found);
    if (history) addHistorySignals(signals, history, found, ipDecides, now);
    const { bypass, grant } = trustAndBypass(found);
    return {
      signals,
      degraded: degraded.size === 0 ? [] : [...degraded].sort(),
      user: found.user,
      device: found.device,
      bypass,
      grant,
    };
  };
}

/** What an Approved step-up would trust, and what bypasses match against. */
function trustAndBypass({
  ip,
  geo,
  ua,
  user,
  device,
  ipId,
  prefix,
  country,
  place,
}: Lookups): Pick<Enriched, 'grant' | 'bypass'> {
  // Built by assignment rather than spreads: this runs on every sign-in.
  const bypass: Mutable<BypassContext> = { user, device, ip: ip.bytes };
  const grant: Mutable<Enriched['grant']> = { user, device, ip: ipId, prefix };
  if (geo.asn !== undefined) bypass.asn = grant.asn = geo.asn;
  if (country) bypass.country = grant.country = country;
  if (geo.city && !ip.private) grant.city = geo.city;
  if (place) grant.place = place;
  if (ua.browser || ua.os) grant.ua = { browser: ua.browser, os: ua.os };
  return { grant, bypass };
}

export type Enricher = ReturnType<typeof createEnricher>;
