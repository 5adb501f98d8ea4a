import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { callbackProblem, parseAllowedOrigins, type CallbackPolicy } from './lib/callback-url.js';
import { geoipPaths } from './data-io/geoip-files.js';
import type { StepUpRung } from './engine/ladder.js';
import type { EventsSettings } from './events/service.js';
import { DEFAULT_JOURNAL_FLUSH_MS } from './events/decision-journal.js';
import { checkApiTokens, parseApiTokens, type ApiToken } from './routes/auth.js';
import type { GeoDatabase } from './signals/geoip.js';
import type { ListName } from './signals/ip-lists.js';
import { parseHashKey, type HashKey } from './store/pseudonymise.js';
import type { Retention } from './store/store.js';

const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
const port = z.coerce.number().int().min(0).max(65535);
const ms = z.coerce.number().int().min(1);

/** `kid:secret`, the same rules for the current key and the previous one. */
const hashKey = z
  .string()
  .optional()
  .superRefine((value, ctx) => {
    if (value === undefined || value === '') return;
    try {
      parseHashKey(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message.replace(/^ID_HASH_KEY /, '') });
    }
  });

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const envSchema = z.object({
  PORT: port.default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  METRICS_PORT: port.default(9464),
  METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
  RULES_DIR: z.string().min(1).default('rules'),
  DATA_DIR: z.string().min(1).default('data'),
  GEOIP_CITY_DB: z.string().optional(),
  GEOIP_ASN_DB: z.string().optional(),
  GEOIP_ANON_DB: z.string().optional(),
  GEOIP_CONNECTION_DB: z.string().optional(),
  LIST_REFRESH_MINUTES: z.coerce.number().min(0).default(0),
  TOR_LIST_URL: z.string().url().optional(),
  VPN_LIST_URL: z.string().url().optional(),
  HOSTING_LIST_URL: z.string().url().optional(),
  RELAY_LIST_URL: z.string().url().optional(),
  LIST_MAX_AGE_HOURS: z.coerce.number().min(0).default(0),
  TOR_LIST_MAX_AGE_HOURS: z.coerce.number().min(0).optional(),
  REDIS_URL: z
    .string()
    .regex(
      /^(rediss?|redis\+cluster|redis\+sentinel):\/\/\S+$/,
      'expected redis://, rediss://, redis+cluster:// or redis+sentinel:// URL',
    )
    .optional(),
  REDIS_KEY_PREFIX: z.string().max(32).default('risk:'),
  REDIS_COMMAND_TIMEOUT_MS: ms.default(100),
  REDIS_ALLOW_EVICTION: bool.default(false),
  ID_HASH_KEY: hashKey,
  // The key rotated away from, read (and migrated from) while a rotation runs; see the README.
  ID_HASH_KEY_PREVIOUS: hashKey,
  API_TOKENS: z
    .string()
    .optional()
    .superRefine((value, ctx) => {
      if (value === undefined || value === '') return;
      for (const problem of checkApiTokens(value).problems) ctx.addIssue({ code: 'custom', message: problem });
    }),
  TRUST_PROXY: z.string().optional(),
  TRUST_PROXY_ALLOW_WIDE: bool.default(false),
  NODE_ENV: z.string().optional(),
  DIDIT_BASE_URL: z.string().url().optional(),
  DIDIT_API_KEY: z.string().min(1).optional(),
  DIDIT_WEBHOOK_SECRET: z.string().min(16).optional(),
  DIDIT_WEBHOOK_SECRET_PREVIOUS: z.string().min(16).optional(),
  // Didit's ids as its docs print them (36 hex-and-dash characters); zod's .uuid() refuses some of them.
  DIDIT_WORKFLOW_PASSIVE: z
    .string()
    .regex(/^[0-9a-fA-F-]{36}$/, 'expected a Didit workflow id')
    .optional(),
  DIDIT_WORKFLOW_FLASHING: z
    .string()
    .regex(/^[0-9a-fA-F-]{36}$/, 'expected a Didit workflow id')
    .optional(),
  DIDIT_WORKFLOW_ACTIVE_3D: z
    .string()
    .regex(/^[0-9a-fA-F-]{36}$/, 'expected a Didit workflow id')
    .optional(),
  DIDIT_CALLBACK_URL: z.string().url().optional(),
  CALLBACK_ALLOWED_ORIGINS: z.string().min(1).optional(),
  DIDIT_TIMEOUT_MS: ms.default(1500),
  SIMULATOR_PORT: port.default(8090),
  PENDING_TTL_MINUTES: z.coerce.number().int().min(1).max(60).default(10),
  TRUST_TTL_DAYS: z.coerce.number().int().min(1).max(400).default(90),
  HISTORY_TTL_DAYS: z.coerce.number().int().min(1).max(400).default(30),
  DECISION_RECORD_TTL_DAYS: z.coerce.number().int().min(1).max(400).default(90),
  DECISION_JOURNAL_FLUSH_MS: z.coerce.number().int().min(1).max(1000).default(DEFAULT_JOURNAL_FLUSH_MS),
  STEPUP_USER_MAX_PER_15M: z.coerce.number().int().min(1).default(20),
  STEPUP_DEVICE_MAX_PER_15M: z.coerce.number().int().min(1).default(5),
  STEPUP_GLOBAL_MAX_PER_MIN: z.coerce.number().int().min(1).max(600).default(480),
  WEBHOOK_TOLERANCE_S: z.coerce.number().int().min(1).max(3600).default(300),
  DIDIT_REQUIRE_METHOD_MATCH: bool.default(true),
  DIDIT_REVIEW_TTL_HOURS: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 90)
    .default(168),
  PRESSURE_MAX_EVENT_LOOP_DELAY_MS: z.coerce.number().int().min(0).default(250),
  PRESSURE_SAMPLE_INTERVAL_MS: z.coerce.number().int().min(5).default(500),
  PRESSURE_MAX_QUEUE_DELAY_MS: z.coerce.number().int().min(0).max(1000).default(5),
  MAX_DECIDES_IN_FLIGHT: z.coerce.number().int().min(0).default(32),
  RATE_LIMIT_USER_PER_MIN: z.coerce.number().int().min(1).default(120),
  RATE_LIMIT_CALLER_PER_MIN: z.coerce.number().int().min(1).default(60_000),
  RATE_LIMIT_WEBHOOK_PER_MIN: z.coerce.number().int().min(1).default(120),
  EVENTS_URL: z.string().url().optional(),
  EVENTS_SECRET: z.string().optional(),
  EVENTS_SECRET_PREVIOUS: z.string().optional(),
  EVENTS_INCLUDE_USER_ID: bool.default(false),
  EVENTS_DECISIONS: bool.default(false),
  EVENTS_MAX_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(8),
  EVENTS_TIMEOUT_MS: ms.max(30_000).default(10_000),
  EVENTS_RETRY_HOURS: z.coerce.number().int().min(24).max(168).default(24),
  EVENTS_OUTBOX_MAX: z.coerce.number().int().min(100).default(100_000),
  HTTP_MAX_CONNECTIONS: z.coerce.number().int().min(16).max(1_000_000).default(4096),
  HTTP_MAX_CONNECTIONS_PER_ADDRESS: z.coerce.number().int().min(1).max(1_000_000).default(256),
});

export type Env = z.infer<typeof envSchema>;

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Tor list staleness when nothing is configured, outside the embedded demo. */
export const DEFAULT_TOR_MAX_AGE_HOURS = 48;

/** A real Didit account: present only when DIDIT_API_KEY (and what it requires) is set. */
export interface DiditSettings {
  readonly baseUrl: string;
  readonly apiKey: string;
  /** Current first, then the previous one during a rotation. */
  readonly webhookSecrets: readonly string[];
  readonly workflows: Readonly<Record<StepUpRung, string>>;
}

/** Outgoing events: present only when EVENTS_URL is set. */
export interface EventsConfig extends EventsSettings {
  readonly outbox: { readonly maxEntries: number; readonly ttlMs: number };
}

/**
 * The validated configuration, grouped by what uses it and already in the units its users take
 * (milliseconds, parsed tokens and keys, resolved paths). Nothing outside this file reads a variable.
 */
export interface Config {
  /** NODE_ENV is production (in any case or padding). */
  readonly production: boolean;
  /** Which embedded defaults are in use, for the loud startup log and /readyz. */
  readonly embedded: readonly string[];
  readonly listen: { readonly port: number; readonly host: string };
  readonly metrics: { readonly port: number; readonly host: string };
  readonly log: { readonly level: LogLevel };
  readonly rules: { readonly dir: string };
  readonly data: {
    readonly dir: string;
    /** The GeoIP files to open: the operator's, or the embedded MaxMind test databases when neither city nor ASN is set. */
    readonly geoip: Partial<Record<GeoDatabase, string>>;
    readonly lists: {
      /** 0: no refresh timer. */
      readonly refreshMs: number;
      readonly urls: Partial<Record<'tor' | 'vpn' | 'hosting' | 'relay', string>>;
      /** Per list; 0: never stale. */
      readonly maxAgeMs: Readonly<Record<ListName, number>>;
    };
  };
  /** `url` with REDIS_URL (the memory store otherwise); the rest also applies to a client a test passes in. */
  readonly redis: {
    readonly url?: string;
    readonly keyPrefix: string;
    readonly commandTimeoutMs: number;
    readonly allowEviction: boolean;
  };
  /**
   * No key: pseudonyms use a random per-process key (the service) or read no history (the CLI).
   * `previousHashKey` during an ID_HASH_KEY rotation: read under it, moved to `hashKey` on touch.
   */
  readonly ids: { readonly hashKey?: HashKey; readonly previousHashKey?: HashKey };
  readonly auth: {
    /** Empty: the server generates one token and prints it (embedded `generated-api-token`). */
    readonly apiTokens: readonly ApiToken[];
    /** Proxy addresses and CIDRs whose X-Forwarded-For is believed; empty: none. */
    readonly trustProxy: readonly string[];
  };
  /** Every key family's lifetime; reviewMs is how long a Didit review may still end in trust. */
  readonly retention: Retention & { readonly reviewMs: number; readonly decisionRecordMs: number };
  /** The decision journal's batch interval (decision lines and records, off the request path). */
  readonly journal: { readonly flushMs: number };
  readonly limits: {
    readonly userPerMinute: number;
    readonly callerPerMinute: number;
    readonly webhookPerMinute: number;
    readonly stepUpsPerUserPer15m: number;
    readonly stepUpsPerDevicePer15m: number;
    readonly stepUpsPerMinute: number;
  };
  /** What a decide's `callback` may be (and the simulator's redirect): the same rule everywhere. */
  readonly callbacks: CallbackPolicy;
  readonly stepUp: {
    /** DIDIT_CALLBACK_URL: where the user returns when a decide names no callback. */
    readonly callbackUrl?: string;
    /** One Didit request's deadline (the simulator's too). */
    readonly timeoutMs: number;
  };
  readonly webhook: { readonly toleranceS: number; readonly requireMethodMatch: boolean };
  /** A real Didit; exactly one of `didit` and `simulator` is set. */
  readonly didit?: DiditSettings;
  /** No Didit key: the offline simulator on loopback (the server refuses this when anything production-like is set). */
  readonly simulator?: { readonly port: number };
  readonly events?: EventsConfig;
  /** Shed load when the event loop lags this much; 0 disables. */
  readonly pressure: {
    readonly maxEventLoopDelayMs: number;
    readonly sampleIntervalMs: number;
    readonly maxQueueDelayMs: number;
    readonly maxDecidesInFlight: number;
  };
  readonly http: { readonly connections: { readonly max: number; readonly perAddress: number } };
}

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
  }
}

/** Widest range a proxy network may span: a shorter prefix is "trust (nearly) everyone". */
const NARROWEST_WIDE = { 4: 8, 6: 32 } as const;

/**
 * TRUST_PROXY entries: IP addresses or CIDRs only (no names, netmasks or hop counts), each at most a
 * /8 (IPv4) or /32 (IPv6) unless wide ranges are allowed. An IPv4-mapped IPv6 range is judged as
 * the IPv4 range it covers: `::ffff:0:0/96` trusts every IPv4 client.
 */
export function trustProxyProblems(text: string, allowWide: boolean): string[] {
  const problems: string[] = [];
  // Many narrow ranges can add up to "everyone" (256 × /8): the whole list is held to the same bound.
  const covered = { 4: 0n, 6: 0n };
  const refusedWide = { 4: false, 6: false };
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    const shown = JSON.stringify(entry.slice(0, 64));
    const [address = '', bits, ...rest] = entry.split('/');
    const version = isIP(address) as 0 | 4 | 6;
    const width = version === 4 ? 32 : 128;
    if (
      version === 0 ||
      address.includes('%') ||
      rest.length > 0 ||
      (bits !== undefined && !/^(0|[1-9]\d{0,2})$/.test(bits)) ||
      Number(bits ?? width) > width
    ) {
      problems.push(`TRUST_PROXY: ${shown} is not an IP address or CIDR (address/prefix-length)`);
      continue;
    }
    let prefix = Number(bits ?? width);
    let family: 4 | 6 = version;
    if (version === 6 && (ipaddr.parse(address) as ipaddr.IPv6).isIPv4MappedAddress() && prefix >= 96) {
      family = 4;
      prefix -= 96;
    }
    if (!allowWide && prefix < NARROWEST_WIDE[family]) {
      problems.push(
        `TRUST_PROXY: ${shown} spans more than a /${NARROWEST_WIDE[family]} (IPv${family}); list your proxies' networks, or set TRUST_PROXY_ALLOW_WIDE=true`,
      );
      refusedWide[family] = true;
    }
    covered[family] += 1n << BigInt((family === 4 ? 32 : 128) - prefix);
  }
  for (const family of [4, 6] as const) {
    const limit = 1n << BigInt((family === 4 ? 32 : 128) - NARROWEST_WIDE[family]);
    if (!allowWide && !refusedWide[family] && covered[family] > limit) {
      problems.push(
        `TRUST_PROXY: the IPv${family} entries together span more than a /${NARROWEST_WIDE[family]}; list your proxies' networks, or set TRUST_PROXY_ALLOW_WIDE=true`,
      );
    }
  }
  return problems;
}

/** `production` in any case or padding: a near miss must not start the simulator and print a token. */
const isProduction = (env: NodeJS.ProcessEnv): boolean => env.NODE_ENV?.trim().toLowerCase() === 'production';

/** Checks across variables, on the raw environment so they are reported with the schema's problems. */
function crossProblems(env: NodeJS.ProcessEnv, server: boolean): string[] {
  const problems: string[] = [];
  const set = (name: string) => env[name] !== undefined && env[name] !== '';
  if (set('DIDIT_API_KEY')) {
    for (const name of [
      'DIDIT_BASE_URL',
      'DIDIT_WEBHOOK_SECRET',
      'DIDIT_WORKFLOW_PASSIVE',
      'DIDIT_WORKFLOW_FLASHING',
      'DIDIT_WORKFLOW_ACTIVE_3D',
    ] as const) {
      if (!set(name)) problems.push(`${name}: required when DIDIT_API_KEY is set`);
    }
  } else if (server) {
    // The simulator approves step-ups from a local page and ignores a configured webhook secret.
    const productionLike = ['REDIS_URL', 'DIDIT_WEBHOOK_SECRET', 'DIDIT_WEBHOOK_SECRET_PREVIOUS'].filter(set);
    if (isProduction(env)) productionLike.push('NODE_ENV=production');
    if (productionLike.length > 0) {
      problems.push(
        `DIDIT_API_KEY: required with ${productionLike.join(', ')}; the offline Didit simulator runs only when nothing production-like is configured`,
      );
    }
  }
  if (server && isProduction(env) && !set('API_TOKENS'))
    problems.push('API_TOKENS: required with NODE_ENV=production (a generated token would be printed to stdout)');
  if (set('REDIS_URL') && !set('ID_HASH_KEY'))
    problems.push('ID_HASH_KEY: required with REDIS_URL (pseudonyms must survive restarts and match across replicas)');
  if (set('ID_HASH_KEY_PREVIOUS')) problems.push(...rotationProblems(env.ID_HASH_KEY, env.ID_HASH_KEY_PREVIOUS!));
  if (set('TRUST_PROXY')) {
    const value = env.TRUST_PROXY!;
    if (/^(true|\*|\d+)$/.test(value.trim()))
      problems.push('TRUST_PROXY: list proxy addresses or CIDRs; "trust all" and hop counts are refused');
    else
      problems.push(
        ...trustProxyProblems(value, env.TRUST_PROXY_ALLOW_WIDE === 'true' || env.TRUST_PROXY_ALLOW_WIDE === '1'),
      );
  }
  return problems;
}

/** A rotation needs a current key, and a previous one that differs in both key id and secret. */
function rotationProblems(current: string | undefined, previous: string): string[] {
  if (current === undefined || current === '')
    return ['ID_HASH_KEY_PREVIOUS: requires ID_HASH_KEY (the key rotated to)'];
  let a: HashKey;
  let b: HashKey;
  try {
    a = parseHashKey(current);
    b = parseHashKey(previous);
  } catch {
    return []; // the malformed one is reported by its own check
  }
  const problems: string[] = [];
  if (a.kid === b.kid)
    problems.push(
      "ID_HASH_KEY_PREVIOUS: its key id must differ from ID_HASH_KEY's (the key id in front of a pseudonym says which key made it)",
    );
  if (a.secret === b.secret)
    problems.push("ID_HASH_KEY_PREVIOUS: its secret must differ from ID_HASH_KEY's (the same secret rotates nothing)");
  return problems;
}

/**
 * Validates the whole environment and reports every problem at once; no value of a secret is echoed.
 * `server`: the checks of what only the server does (start the simulator, print a generated token);
 * the CLI and benchmarks load the same config without them.
 */
export function loadConfig(env: NodeJS.ProcessEnv, options: { server?: boolean } = {}): Config {
  const parsed = envSchema.safeParse(env);
  const problems: string[] = [];
  if (!parsed.success)
    for (const issue of parsed.error.issues) problems.push(`${issue.path.join('.')}: ${issue.message}`);
  problems.push(...crossProblems(env, options.server === true));
  // The checks of values against each other run on what the schema accepted, even when another
  // variable is wrong, so one run reports everything; a variable the schema refused is not judged twice.
  const refused = new Set(parsed.success ? [] : parsed.error.issues.map((issue) => String(issue.path[0])));
  const accepted = Object.fromEntries(
    Object.entries(env).filter(([name, value]) => !refused.has(name) && value !== undefined && value !== ''),
  ) as Partial<Env>;
  problems.push(
    ...callbackConfigProblems(accepted),
    ...eventsProblems(accepted, env.EVENTS_URL !== undefined && env.EVENTS_URL !== ''),
    ...outboundUrlProblems('DIDIT_BASE_URL', accepted.DIDIT_BASE_URL),
  );
  if (!parsed.success || problems.length > 0) throw new ConfigError(problems);
  return deepFreeze(shape(parsed.data, isProduction(env)));
}

/** The one place variables become settings: units converted, lists split, secrets parsed, defaults decided. */
function shape(c: Env, production: boolean): Config {
  const embedded: string[] = [];
  if (!c.REDIS_URL) embedded.push('memory-store');
  if (!c.GEOIP_CITY_DB && !c.GEOIP_ASN_DB) embedded.push('maxmind-test-databases');
  if (!c.DIDIT_API_KEY) embedded.push('didit-simulator');
  if (!c.ID_HASH_KEY) embedded.push('ephemeral-id-hash-key');
  if (!c.API_TOKENS) embedded.push('generated-api-token');
  const didit = diditOf(c);
  return {
    production,
    embedded,
    listen: { port: c.PORT, host: c.HOST },
    metrics: { port: c.METRICS_PORT, host: c.METRICS_HOST },
    log: { level: c.LOG_LEVEL },
    rules: { dir: c.RULES_DIR },
    data: {
      dir: c.DATA_DIR,
      geoip: geoipPaths({
        dataDir: c.DATA_DIR,
        city: c.GEOIP_CITY_DB,
        asn: c.GEOIP_ASN_DB,
        anon: c.GEOIP_ANON_DB,
        connection: c.GEOIP_CONNECTION_DB,
      }),
      lists: {
        refreshMs: c.LIST_REFRESH_MINUTES * MINUTE,
        urls: {
          ...(c.TOR_LIST_URL ? { tor: c.TOR_LIST_URL } : {}),
          ...(c.VPN_LIST_URL ? { vpn: c.VPN_LIST_URL } : {}),
          ...(c.HOSTING_LIST_URL ? { hosting: c.HOSTING_LIST_URL } : {}),
          ...(c.RELAY_LIST_URL ? { relay: c.RELAY_LIST_URL } : {}),
        },
        maxAgeMs: listMaxAges(c),
      },
    },
    redis: {
      ...(c.REDIS_URL ? { url: c.REDIS_URL } : {}),
      keyPrefix: c.REDIS_KEY_PREFIX,
      commandTimeoutMs: c.REDIS_COMMAND_TIMEOUT_MS,
      allowEviction: c.REDIS_ALLOW_EVICTION,
    },
    ids: {
      ...(c.ID_HASH_KEY ? { hashKey: parseHashKey(c.ID_HASH_KEY) } : {}),
      ...(c.ID_HASH_KEY_PREVIOUS ? { previousHashKey: parseHashKey(c.ID_HASH_KEY_PREVIOUS) } : {}),
    },
    auth: {
      apiTokens: c.API_TOKENS ? parseApiTokens(c.API_TOKENS) : [],
      trustProxy: c.TRUST_PROXY ? c.TRUST_PROXY.split(',').map((s) => s.trim()) : [],
    },
    retention: {
      trustMs: c.TRUST_TTL_DAYS * DAY,
      historyMs: c.HISTORY_TTL_DAYS * DAY,
      pendingMs: c.PENDING_TTL_MINUTES * MINUTE,
      // Session records and claims outlive a Didit review, whose Approved still trusts.
      claimMs: Math.max(24, c.DIDIT_REVIEW_TTL_HOURS) * HOUR,
      reviewMs: c.DIDIT_REVIEW_TTL_HOURS * HOUR,
      decisionRecordMs: c.DECISION_RECORD_TTL_DAYS * DAY,
    },
    journal: { flushMs: c.DECISION_JOURNAL_FLUSH_MS },
    limits: {
      userPerMinute: c.RATE_LIMIT_USER_PER_MIN,
      callerPerMinute: c.RATE_LIMIT_CALLER_PER_MIN,
      webhookPerMinute: c.RATE_LIMIT_WEBHOOK_PER_MIN,
      stepUpsPerUserPer15m: c.STEPUP_USER_MAX_PER_15M,
      stepUpsPerDevicePer15m: c.STEPUP_DEVICE_MAX_PER_15M,
      stepUpsPerMinute: c.STEPUP_GLOBAL_MAX_PER_MIN,
    },
    callbacks: callbackPolicyOf(c),
    stepUp: { timeoutMs: c.DIDIT_TIMEOUT_MS, ...(c.DIDIT_CALLBACK_URL ? { callbackUrl: c.DIDIT_CALLBACK_URL } : {}) },
    webhook: { toleranceS: c.WEBHOOK_TOLERANCE_S, requireMethodMatch: c.DIDIT_REQUIRE_METHOD_MATCH },
    ...(didit ? { didit } : { simulator: { port: c.SIMULATOR_PORT } }),
    ...(c.EVENTS_URL && c.EVENTS_SECRET ? { events: eventsOf(c, c.EVENTS_URL, c.EVENTS_SECRET) } : {}),
    pressure: {
      maxEventLoopDelayMs: c.PRESSURE_MAX_EVENT_LOOP_DELAY_MS,
      sampleIntervalMs: c.PRESSURE_SAMPLE_INTERVAL_MS,
      maxQueueDelayMs: c.PRESSURE_MAX_QUEUE_DELAY_MS,
      maxDecidesInFlight: c.MAX_DECIDES_IN_FLIGHT,
    },
    http: { connections: { max: c.HTTP_MAX_CONNECTIONS, perAddress: c.HTTP_MAX_CONNECTIONS_PER_ADDRESS } },
  };
}

/** The cross checks made DIDIT_API_KEY require the rest, so a key alone never gets here half-configured. */
function diditOf(c: Env): DiditSettings | undefined {
  if (
    !c.DIDIT_API_KEY ||
    !c.DIDIT_BASE_URL ||
    !c.DIDIT_WEBHOOK_SECRET ||
    !c.DIDIT_WORKFLOW_PASSIVE ||
    !c.DIDIT_WORKFLOW_FLASHING ||
    !c.DIDIT_WORKFLOW_ACTIVE_3D
  )
    return undefined;
  return {
    baseUrl: c.DIDIT_BASE_URL,
    apiKey: c.DIDIT_API_KEY,
    webhookSecrets: [
      c.DIDIT_WEBHOOK_SECRET,
      ...(c.DIDIT_WEBHOOK_SECRET_PREVIOUS ? [c.DIDIT_WEBHOOK_SECRET_PREVIOUS] : []),
    ],
    workflows: {
      PASSIVE: c.DIDIT_WORKFLOW_PASSIVE,
      FLASHING: c.DIDIT_WORKFLOW_FLASHING,
      ACTIVE_3D: c.DIDIT_WORKFLOW_ACTIVE_3D,
    },
  };
}

function eventsOf(c: Env, url: string, secret: string): EventsConfig {
  const retryMs = c.EVENTS_RETRY_HOURS * HOUR;
  return {
    url,
    secrets: [secret, ...(c.EVENTS_SECRET_PREVIOUS ? [c.EVENTS_SECRET_PREVIOUS] : [])],
    includeUserId: c.EVENTS_INCLUDE_USER_ID,
    decisions: c.EVENTS_DECISIONS,
    maxConcurrency: c.EVENTS_MAX_CONCURRENCY,
    timeoutMs: c.EVENTS_TIMEOUT_MS,
    retryMs,
    // Two command deadlines (250 ms by default, the enricher's store deadline): an append never
    // holds a webhook or a revoke longer than a store read does.
    appendDeadlineMs: c.REDIS_COMMAND_TIMEOUT_MS * 2 + 50,
    // A Redis outbox entry outlives its last retry by an hour.
    outbox: { maxEntries: c.EVENTS_OUTBOX_MAX, ttlMs: retryMs + HOUR },
  };
}

function listMaxAges(c: Env): Record<ListName, number> {
  const ms = (hours: number) => hours * HOUR;
  // Tor exits churn by the hour (TorDNSEL drops an exit after 48 h), so outside the embedded demo
  // (the memory store, whose shipped list is months old) an unset limit means 48 h; an explicit 0 turns it off.
  const torDefault = !c.REDIS_URL ? c.LIST_MAX_AGE_HOURS : c.LIST_MAX_AGE_HOURS || DEFAULT_TOR_MAX_AGE_HOURS;
  return {
    tor: ms(c.TOR_LIST_MAX_AGE_HOURS ?? torDefault),
    vpn: ms(c.LIST_MAX_AGE_HOURS),
    relay: ms(c.LIST_MAX_AGE_HOURS),
    hosting: ms(c.LIST_MAX_AGE_HOURS),
    hosting_asn: ms(c.LIST_MAX_AGE_HOURS),
  };
}

/** Settings are shared by every part: none may change them for the others. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

/** The allowed origins and the default callback obey the same rule as a decide's `callback`. */
function callbackConfigProblems(c: Partial<Env>): string[] {
  const allowLoopbackHttp = !c.DIDIT_API_KEY;
  let allowedOrigins: ReadonlySet<string> | undefined;
  const problems: string[] = [];
  if (c.CALLBACK_ALLOWED_ORIGINS !== undefined) {
    const parsed = parseAllowedOrigins(c.CALLBACK_ALLOWED_ORIGINS, allowLoopbackHttp);
    if ('problems' in parsed) problems.push(...parsed.problems.map((p) => `CALLBACK_ALLOWED_ORIGINS: ${p}`));
    else allowedOrigins = parsed.origins;
  }
  if (c.DIDIT_CALLBACK_URL !== undefined && problems.length === 0) {
    const problem = callbackProblem(c.DIDIT_CALLBACK_URL, {
      allowLoopbackHttp,
      ...(allowedOrigins ? { allowedOrigins } : {}),
    });
    if (problem) problems.push(`DIDIT_CALLBACK_URL: ${problem}`);
  }
  return problems;
}

/**
 * A URL the service sends secrets or verdict-bearing requests to: https only (plain http only to this
 * machine: a local relay, the simulator, a test receiver), and no credentials in it.
 */
function outboundUrlProblems(name: string, value: string | undefined): string[] {
  if (value === undefined) return [];
  const url = new URL(value);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  const problems: string[] = [];
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback))
    problems.push(`${name}: must be https:// (http:// only to localhost, 127.0.0.0/8 or ::1)`);
  if (url.username || url.password) problems.push(`${name}: no credentials in the URL`);
  return problems;
}

/**
 * Events leave for https only; plain http only to this machine (a local relay or a test receiver).
 * `urlSet`: EVENTS_URL was given, even if the schema refused it (then only the secrets are judged here).
 */
function eventsProblems(c: Partial<Env>, urlSet: boolean): string[] {
  const problems: string[] = [];
  if (!urlSet && c.EVENTS_SECRET) problems.push('EVENTS_SECRET: set without EVENTS_URL');
  if (urlSet) {
    problems.push(...outboundUrlProblems('EVENTS_URL', c.EVENTS_URL));
    if (!c.EVENTS_SECRET)
      problems.push('EVENTS_SECRET: required with EVENTS_URL (whsec_<base64 of 24-64 random bytes>)');
  }
  for (const name of ['EVENTS_SECRET', 'EVENTS_SECRET_PREVIOUS'] as const) {
    const value = c[name];
    if (value === undefined) continue;
    const key = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(value);
    const bytes = key?.[1] ? Buffer.from(key[1], 'base64').length : 0;
    if (bytes < 24 || bytes > 64) problems.push(`${name}: expected whsec_<base64 of 24-64 random bytes>`);
  }
  return problems;
}

/**
 * What a decide's `callback` may be: https (http to loopback only while the embedded simulator
 * stands in for Didit), restricted to CALLBACK_ALLOWED_ORIGINS when set.
 */
function callbackPolicyOf(config: Partial<Env>): CallbackPolicy {
  const allowLoopbackHttp = !config.DIDIT_API_KEY;
  const parsed =
    config.CALLBACK_ALLOWED_ORIGINS === undefined
      ? undefined
      : parseAllowedOrigins(config.CALLBACK_ALLOWED_ORIGINS, allowLoopbackHttp);
  if (!parsed) return { allowLoopbackHttp };
  // loadConfig refuses a bad list; should one get here anyway, it allows nothing rather than anything.
  return { allowLoopbackHttp, allowedOrigins: 'origins' in parsed ? parsed.origins : new Set<string>() };
}

/** The documented variables, for the table in data/ops/README.md (kept in step by a test). */
export const CONFIG_VARIABLES = Object.keys(envSchema.shape);
