/**
 * The declared signal schema: every value a rule may read. This file is the contract with rule
 * authors; the signal table in rules/README.md is generated from it and a test fails when the two drift.
 */
export type SignalType = 'bool' | 'int' | 'double' | 'string' | 'map';

/** Where a signal comes from: when that input fails, every signal it feeds is unknown. */
export type SignalSource = 'request' | 'store' | 'geoip' | 'lists' | 'ua' | 'derived';

export interface SignalSpec {
  readonly name: string;
  readonly type: SignalType;
  readonly source: SignalSource;
  readonly doc: string;
  /** When unknown, the decision cannot be SKIP (the degraded floor applies). */
  readonly requiredForSkip?: boolean;
}

export const SIGNALS = [
  {
    name: 'request.purpose',
    type: 'string',
    source: 'request',
    doc: 'Why the login service asks: `login` by default, or e.g. `change_password`, `add_payee`.',
  },
  {
    name: 'request.purpose_class',
    type: 'string',
    source: 'derived',
    doc: '`normal` or `sensitive` as `rules/purposes.yaml` declares `request.purpose`, else `undeclared` (treated as sensitive: never SKIP, counted in `risk_undeclared_purpose_total`). Derived by the engine from `request.purpose`.',
  },
  {
    name: 'request.attributes',
    type: 'map',
    source: 'request',
    doc: 'Flat map of caller-supplied custom attributes (string, number, boolean).',
  },

  {
    name: 'device.known',
    type: 'bool',
    source: 'store',
    requiredForSkip: true,
    doc: 'This device id was verified for this user by an Approved step-up (within its trust TTL).',
  },
  {
    name: 'device.seen_count',
    type: 'int',
    source: 'store',
    doc: 'How many decides this user made from this device before this one (seen, not verified).',
  },
  {
    name: 'device.first_seen_days',
    type: 'double',
    source: 'store',
    doc: 'Days since this device was first seen for this user (0 when new).',
  },

  {
    name: 'ip.version',
    type: 'int',
    source: 'request',
    doc: '4 or 6. An IPv6 address that carries an IPv4 client (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32, IPv4-compatible) counts as 4, and every signal uses that IPv4.',
  },
  {
    name: 'ip.private',
    type: 'bool',
    source: 'request',
    doc: 'RFC 1918, loopback, link-local, CGNAT 100.64/10, ULA fc00::/7 or another non-public range.',
  },
  {
    name: 'ip.known',
    type: 'bool',
    source: 'store',
    requiredForSkip: true,
    doc: 'This exact IP address was verified for this user.',
  },
  {
    name: 'ip.prefix_known',
    type: 'bool',
    source: 'store',
    requiredForSkip: true,
    doc: 'The network was verified for this user: the IPv6 /64 (IPv4: the same address).',
  },
  {
    name: 'ip.tor',
    type: 'bool',
    source: 'lists',
    requiredForSkip: true,
    doc: 'The IP is a Tor exit (Tor exit lists in `data/tor/`).',
  },
  {
    name: 'ip.vpn',
    type: 'bool',
    source: 'lists',
    requiredForSkip: true,
    doc: 'The IP is in a known commercial VPN range (X4BNet VPN list), iCloud Private Relay excluded.',
  },
  {
    name: 'ip.relay',
    type: 'bool',
    source: 'lists',
    doc: 'The IP is an Apple iCloud Private Relay egress (privacy relay, not a VPN).',
  },
  {
    name: 'ip.hosting',
    type: 'bool',
    source: 'lists',
    requiredForSkip: true,
    doc: 'The IP is in a datacenter / hosting range or belongs to a hosting ASN.',
  },
  { name: 'ip.asn', type: 'int', source: 'geoip', doc: 'Autonomous system number from the ASN database.' },
  { name: 'ip.asn_org', type: 'string', source: 'geoip', doc: 'Autonomous system organisation from the ASN database.' },
  { name: 'ip.asn_known', type: 'bool', source: 'store', doc: 'This ASN was verified for this user.' },
  {
    name: 'ip.connection_type',
    type: 'string',
    source: 'geoip',
    doc: 'Cable/DSL, Cellular, Corporate, Satellite (only with a Connection-Type database).',
  },
  {
    name: 'ip.anonymous',
    type: 'bool',
    source: 'geoip',
    doc: 'The Anonymous-IP database flags the IP (VPN, proxy, Tor or hosting), when that database is configured.',
  },

  {
    name: 'geo.country',
    type: 'string',
    source: 'geoip',
    requiredForSkip: true,
    doc: 'ISO 3166-1 alpha-2 country of the IP ("" when the database has no country for it, e.g. private ranges).',
  },
  { name: 'geo.country_known', type: 'bool', source: 'store', doc: 'This country was verified for this user.' },
  { name: 'geo.accuracy_km', type: 'double', source: 'geoip', doc: 'GeoIP accuracy radius in km.' },
  {
    name: 'geo.travel_assessed',
    type: 'bool',
    source: 'derived',
    doc: 'Impossible-travel figures were computed (false for anonymizers, relays, mobile/satellite, private IPs, same /24 or /64, or no history).',
  },
  {
    name: 'geo.distance_km',
    type: 'double',
    source: 'derived',
    doc: 'Distance from the last verified location minus both accuracy radii (only when `geo.travel_assessed`).',
  },
  {
    name: 'geo.elapsed_hours',
    type: 'double',
    source: 'derived',
    doc: 'Hours since the last verified location (only when `geo.travel_assessed`).',
  },
  {
    name: 'geo.speed_kmh',
    type: 'double',
    source: 'derived',
    doc: 'Implied travel speed from the last verified location (only when `geo.travel_assessed`).',
  },

  {
    name: 'ua.browser',
    type: 'string',
    source: 'ua',
    doc: 'Browser family from ua-parser-js 1.x (empty when unknown).',
  },
  { name: 'ua.os', type: 'string', source: 'ua', doc: 'Operating system family (empty when unknown).' },
  {
    name: 'ua.device_type',
    type: 'string',
    source: 'ua',
    doc: '`mobile`, `tablet`, `console`, `smarttv`, `wearable`, `embedded`, or `desktop` when none is reported.',
  },
  {
    name: 'ua.bot',
    type: 'bool',
    source: 'ua',
    doc: 'The user agent is a crawler, bot or automation client (crawler-user-agents list and headless markers).',
  },
  {
    name: 'ua.changed',
    type: 'bool',
    source: 'store',
    doc: 'The browser or OS family differs from what was verified for this device, or the agent is absent where a browser was verified.',
  },
  {
    name: 'ua.absent',
    type: 'bool',
    source: 'request',
    doc: 'No usable user agent: missing, empty, whitespace only, or a placeholder such as `-` or `null`.',
  },

  {
    name: 'user.verified_count',
    type: 'int',
    source: 'store',
    requiredForSkip: true,
    doc: 'Number of trusted devices this user has (0 = cold start).',
  },
  {
    name: 'user.last_verified_days',
    type: 'double',
    source: 'store',
    doc: 'Days since this user last passed a step-up.',
  },

  {
    name: 'velocity.decides_1h',
    type: 'int',
    source: 'store',
    doc: 'Decides for this user in the last hour, this one included.',
  },
  {
    name: 'velocity.distinct_ips_1h',
    type: 'int',
    source: 'store',
    doc: 'Distinct IPs (network prefixes) for this user in the last hour, this one included.',
  },
  {
    name: 'velocity.ip_decides_1m',
    type: 'int',
    source: 'store',
    doc: "Decides from this IP (any user; an IPv6 address counts with its whole /64) in about the last minute (55-60 s), this one included; with Redis, other replicas' decides count within a second (CGNAT and offices share IPs: use as score).",
  },
  {
    name: 'velocity.declines_24h',
    type: 'int',
    source: 'store',
    requiredForSkip: true,
    doc: 'Declined step-ups for this user in the last 24 hours (all devices).',
  },
  {
    name: 'velocity.declines_device_24h',
    type: 'int',
    source: 'store',
    requiredForSkip: true,
    doc: 'Declined step-ups in the last 24 hours that this device asked for.',
  },
  {
    name: 'velocity.declines_elsewhere_24h',
    type: 'int',
    source: 'store',
    requiredForSkip: true,
    doc: 'Declined step-ups for this user in the last 24 hours that other devices asked for (an attacker with the password declines on his own devices: rules may raise new devices on it, never lock a trusted one out).',
  },
] as const satisfies readonly SignalSpec[];

export type SignalName = (typeof SIGNALS)[number]['name'];
export type AttributeValue = string | number | boolean;
export type SignalValue = boolean | number | string | Readonly<Record<string, AttributeValue>>;

/** What enrichment hands the engine: a flat map; an absent key is an unknown signal. */
export type Signals = Partial<Record<SignalName, SignalValue>>;

/** The TypeScript type of each declared signal type. */
interface ValueOfType {
  bool: boolean;
  int: number;
  double: number;
  string: string;
  map: Readonly<Record<string, AttributeValue>>;
}

/**
 * Signals as enrichment builds them: each name with its own value type, derived from the catalogue,
 * so a misspelt name or a value of the wrong kind fails to compile. Assignable to `Signals`.
 */
export type TypedSignals = { [S in (typeof SIGNALS)[number] as S['name']]?: ValueOfType[S['type']] };

export const SIGNAL_BY_NAME: ReadonlyMap<string, SignalSpec> = new Map(SIGNALS.map((s) => [s.name, s]));

/** The groups as they appear in CEL (`device`, `ip`, ...), each with its fields. */
export function signalGroups(): Map<string, SignalSpec[]> {
  const groups = new Map<string, SignalSpec[]>();
  for (const spec of SIGNALS) {
    const [group] = spec.name.split('.', 1) as [string];
    const list = groups.get(group) ?? [];
    list.push(spec);
    groups.set(group, list);
  }
  return groups;
}

export function fieldName(spec: SignalSpec): string {
  return spec.name.slice(spec.name.indexOf('.') + 1);
}

/** Markdown table for rules/README.md (`npm run docs`); test/docs/readme.test.ts keeps it in step. */
export function signalTableMarkdown(): string {
  const rows = SIGNALS.map(
    (s: SignalSpec) => `| \`${s.name}\` | ${s.type} | ${s.source} | ${s.requiredForSkip ? 'yes' : ''} | ${s.doc} |`,
  );
  return ['| signal | type | source | needed for SKIP | meaning |', '| --- | --- | --- | --- | --- |', ...rows].join(
    '\n',
  );
}

/** Problems with a hand-written signals object (rule tests, /v1/evaluate): unknown names, wrong types. */
export function signalTypeProblems(signals: Record<string, unknown>): string[] {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(signals)) {
    const spec = SIGNAL_BY_NAME.get(name);
    if (!spec) {
      problems.push(`unknown signal ${name}`);
      continue;
    }
    if (value === null || value === undefined) continue;
    const ok =
      spec.type === 'bool'
        ? typeof value === 'boolean'
        : spec.type === 'int'
          ? Number.isInteger(value)
          : spec.type === 'double'
            ? typeof value === 'number' && Number.isFinite(value)
            : spec.type === 'string'
              ? typeof value === 'string'
              : typeof value === 'object' && !Array.isArray(value);
    if (!ok) problems.push(`${name} must be ${spec.type}`);
  }
  return problems;
}
