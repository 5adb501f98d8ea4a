import { z } from 'zod';

const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
const port = z.coerce.number().int().min(0).max(65535);
const ms = z.coerce.number().int().min(1);

const envSchema = z.object({
  PORT: port.default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  METRICS_PORT: port.default(9464),
  METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
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
  REDIS_URL: z.string().regex(/^(rediss?|redis\+cluster|redis\+sentinel):\/\/\S+$/, 'expected redis://, rediss://, redis+cluster:// or redis+sentinel:// URL').optional(),
  REDIS_KEY_PREFIX: z.string().max(32).default('risk:'),
  REDIS_COMMAND_TIMEOUT_MS: ms.default(100),
  ID_HASH_KEY: z.string().optional(),
  API_TOKENS: z.string().optional(),
  TRUST_PROXY: z.string().optional(),
  DIDIT_BASE_URL: z.string().url().optional(),
  DIDIT_API_KEY: z.string().min(1).optional(),
  DIDIT_WEBHOOK_SECRET: z.string().min(16).optional(),
  DIDIT_WEBHOOK_SECRET_PREVIOUS: z.string().min(16).optional(),
  // Didit's ids as its docs print them (36 hex-and-dash characters); zod's .uuid() refuses some of them.
  DIDIT_WORKFLOW_PASSIVE: z.string().regex(/^[0-9a-fA-F-]{36}$/, 'expected a Didit workflow id').optional(),
  DIDIT_WORKFLOW_FLASHING: z.string().regex(/^[0-9a-fA-F-]{36}$/, 'expected a Didit workflow id').optional(),
  DIDIT_WORKFLOW_ACTIVE_3D: z.string().regex(/^[0-9a-fA-F-]{36}$/, 'expected a Didit workflow id').optional(),
  DIDIT_CALLBACK_URL: z.string().url().optional(),
  DIDIT_TIMEOUT_MS: ms.default(1500),
  SIMULATOR_PORT: port.default(8090),
  PENDING_TTL_MINUTES: z.coerce.number().int().min(1).max(60).default(10),
  TRUST_TTL_DAYS: z.coerce.number().int().min(1).max(400).default(90),
  HISTORY_TTL_DAYS: z.coerce.number().int().min(1).max(400).default(30),
  STEPUP_USER_MAX_PER_15M: z.coerce.number().int().min(1).default(5),
  STEPUP_GLOBAL_MAX_PER_MIN: z.coerce.number().int().min(1).max(600).default(480),
  WEBHOOK_TOLERANCE_S: z.coerce.number().int().min(1).max(3600).default(300),
  DIDIT_REQUIRE_METHOD_MATCH: bool.default(true),
  DIDIT_REVIEW_TTL_HOURS: z.coerce.number().int().min(1).max(24 * 90).default(168),
  PRESSURE_MAX_EVENT_LOOP_DELAY_MS: z.coerce.number().int().min(0).default(250),
  PRESSURE_SAMPLE_INTERVAL_MS: z.coerce.number().int().min(5).default(500),
  RATE_LIMIT_USER_PER_MIN: z.coerce.number().int().min(1).default(120),
  RATE_LIMIT_CALLER_PER_MIN: z.coerce.number().int().min(1).default(60_000),
  RATE_LIMIT_WEBHOOK_PER_MIN: z.coerce.number().int().min(1).default(120),
});

export type Env = z.infer<typeof envSchema>;

export interface Config extends Env {
  /** Which embedded defaults are in use, for the loud startup log and /readyz. */
  readonly embedded: readonly string[];
}

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
  }
}

/** Validates the whole environment and reports every problem at once. */
export function loadConfig(env: NodeJS.ProcessEnv): Config {
  const parsed = envSchema.safeParse(env);
  const problems: string[] = [];
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(`${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(problems);
  }
  const c = parsed.data;
  const embedded: string[] = [];
  if (!c.REDIS_URL) embedded.push('memory-store');
  if (!c.GEOIP_CITY_DB && !c.GEOIP_ASN_DB) embedded.push('maxmind-test-databases');
  if (!c.DIDIT_API_KEY) embedded.push('didit-simulator');
  if (!c.ID_HASH_KEY) embedded.push('ephemeral-id-hash-key');
  if (!c.API_TOKENS) embedded.push('generated-api-token');
  if (c.DIDIT_API_KEY) {
    for (const name of ['DIDIT_BASE_URL', 'DIDIT_WEBHOOK_SECRET', 'DIDIT_WORKFLOW_PASSIVE', 'DIDIT_WORKFLOW_FLASHING', 'DIDIT_WORKFLOW_ACTIVE_3D'] as const) {
      if (!c[name]) problems.push(`${name}: required when DIDIT_API_KEY is set`);
    }
  }
  if (c.REDIS_URL && !c.ID_HASH_KEY) problems.push('ID_HASH_KEY: required with REDIS_URL (pseudonyms must survive restarts and match across replicas)');
  if (c.API_TOKENS && !/^[A-Za-z0-9_-]+:[^,:\s]{16,}(,[A-Za-z0-9_-]+:[^,:\s]{16,})*$/.test(c.API_TOKENS)) {
    problems.push('API_TOKENS: expected name:token pairs separated by commas, tokens of at least 16 characters');
  }
  if (c.TRUST_PROXY && /^(true|\*|\d+)$/.test(c.TRUST_PROXY.trim())) problems.push('TRUST_PROXY: list proxy addresses or CIDRs; "trust all" and hop counts are refused');
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze({ ...c, embedded });
}

/** The documented variables, for the README table (kept in step by a test). */
export const CONFIG_VARIABLES = Object.keys(envSchema.shape);
