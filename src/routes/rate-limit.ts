import rateLimit, { normalizeIP } from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Cluster, Redis } from 'ioredis';
import { LocalWindows } from '../lib/fixed-windows.js';
import { RiskError } from '../errors.js';
import type { Pseudonymiser } from '../store/pseudonymise.js';

type Client = Redis | Cluster;
type Callback = (error: Error | null, result: { current: number; ttl: number } | null) => void;

const INCR = `
local current = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if current == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { current, ttl }
`;

/**
 * A @fastify/rate-limit store that counts in Redis (shared by every replica) and falls back to a
 * per-process window while Redis fails: never a 500, never "Connection is closed." to a caller, and
 * never unlimited either (the plugin's skipOnError would fail open).
 */
export function fallbackStore(redis: Client | undefined, prefix: string, onFallback?: () => void) {
  const local = new LocalWindows();
  if (redis && !(redis as unknown as { riskRateLimit?: unknown }).riskRateLimit)
    redis.defineCommand('riskRateLimit', { numberOfKeys: 1, lua: INCR });
  const counter = redis as unknown as
    | { riskRateLimit(key: string, windowMs: number): Promise<[number, number]> }
    | undefined;
  // After a Redis failure the limiter counts locally for a second instead of waiting on every request
  // for a hung server (each wait is a full command timeout on the login path).
  let redisDownUntil = 0;

  return class FallbackStore {
    private readonly scope: string;
    constructor(options: { routeInfo?: { method?: string; url?: string } } = {}, scope?: string) {
      this.scope = scope ?? `${options.routeInfo?.method ?? ''}${options.routeInfo?.url ?? ''}`;
    }
    incr(key: string, callback: Callback, timeWindow: number): void {
      const fullKey = `${prefix}{rl:${this.scope}:${key}}`;
      if (!counter || Date.now() < redisDownUntil) {
        if (counter) onFallback?.();
        callback(null, local.incr(fullKey, timeWindow, Date.now()));
        return;
      }
      counter.riskRateLimit(fullKey, timeWindow).then(
        ([current, ttl]) => callback(null, { current: Number(current), ttl: Number(ttl) }),
        () => {
          redisDownUntil = Date.now() + 1000;
          onFallback?.();
          callback(null, local.incr(fullKey, timeWindow, Date.now()));
        },
      );
    }
    child(options: { routeInfo?: { method?: string; url?: string } }) {
      return new FallbackStore(options);
    }
  };
}

export interface RateLimitSettings {
  readonly redis?: Client;
  readonly keyPrefix: string;
  readonly ids: Pseudonymiser;
  readonly callerPerMinute: number;
  readonly webhookPerMinute: number;
  readonly onFallback?: () => void;
}

const rateLimitError = (_request: FastifyRequest, context: { after: string }) =>
  new RiskError('RISK_ERR_RATE_LIMITED', `rate limit exceeded, retry in ${context.after}`);

export async function registerRateLimits(app: FastifyInstance, settings: RateLimitSettings): Promise<void> {
  await app.register(rateLimit, {
    global: false,
    store: fallbackStore(settings.redis, settings.keyPrefix, settings.onFallback) as never,
    errorResponseBuilder: rateLimitError as never,
  });
}

/**
 * Didit delivers every verdict from one address and does not retry a 429, so volume alone is never
 * limited: only deliveries that fail verification are counted, per source /64 (pseudonymised), in
 * this process. Past its first few failures a source gets only the raw-bytes MAC (no parsing), which
 * Didit's own deliveries pass; over its budget, 429 for each further failure.
 */
/**
 * The share of the failure budget that still gets the costly V2 canonical form (about 4 ms for 64 KiB
 * of floats): a fortieth, so 3 a minute at the default 120. Didit's deliveries re-encoded by a proxy
 * verify under V2 and never count as failures, so a small share costs them nothing.
 */
export const REPARSE_SHARE = 1 / 40;

export function webhookFailureLimit(
  settings: Pick<RateLimitSettings, 'ids' | 'webhookPerMinute'>,
  clock: () => number = Date.now,
  tarpitMs = 1000,
) {
  const windows = new LocalWindows(10_000);
  const keyOf = (ip: string) => settings.ids.id('net', normalizeIP(ip, 64));
  return {
    /**
     * How long each failure past the first few waits for its answer (401 or 429): a sender that waits
     * for answers is slowed to a few requests a second for nothing but a timer; a parallel flood meets
     * the server's connection caps instead.
     */
    tarpitMs,
    /**
     * Whether this source may still make us re-serialise a body (V2, Simple): only its first few
     * failures of a minute. Didit's own deliveries pass the raw MAC and never need it; a proxy that
     * re-encodes them needs V2, and fails nothing.
     */
    mayReparse(ip: string): boolean {
      return windows.peek(keyOf(ip), clock()) < Math.ceil(settings.webhookPerMinute * REPARSE_SHARE);
    },
    /** Counts a failed delivery; the retry-after (s) when the source is now over its budget. */
    failed(ip: string): number | undefined {
      const window = windows.incr(keyOf(ip), 60_000, clock());
      return window.current > settings.webhookPerMinute ? Math.max(1, Math.ceil(window.ttl / 1000)) : undefined;
    },
  };
}
export type WebhookFailureLimit = ReturnType<typeof webhookFailureLimit>;

/**
 * The per-caller budget on decide, counted in this process: a safety valve against one runaway
 * login service, which needs no shared counter (and so no Redis round trip on every sign-in).
 * With N replicas behind a balancer a caller gets about N times this budget in all.
 */
export function callerLimitHook(perMinute: number, onLimited?: () => void) {
  const windows = new LocalWindows(1000);
  // A callback-style hook: an async one costs a promise and a microtask turn on every decide.
  return (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void => {
    const window = windows.incr((request as { caller?: string }).caller ?? '', 60_000, Date.now());
    if (window.current > perMinute) {
      onLimited?.();
      reply.header('retry-after', String(Math.max(1, Math.ceil(window.ttl / 1000))));
      done(new RiskError('RISK_ERR_RATE_LIMITED', 'caller rate limit exceeded'));
      return;
    }
    done();
  };
}
