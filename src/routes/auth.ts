import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest, RouteOptions, onRequestHookHandler } from 'fastify';
import { RiskError } from '../errors.js';

/** What a token may do: `decide` (decide, sessions), `users` (device list, revoke, erase), `rules` (evaluate), `feedback` (fraud / legitimate labels). */
export const SCOPES = ['decide', 'users', 'rules', 'feedback'] as const;
export type Scope = (typeof SCOPES)[number];

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Reachable without a bearer token (health, OpenAPI, the HMAC-signed webhook). */
    public?: boolean;
    /** The scope a token needs for this route. Every route declares exactly one of the two. */
    scope?: Scope;
  }
  interface FastifyInstance {
    /** Every route as the auth hook saw it: what the route-enumeration test checks against the router. */
    readonly routeAccess: ReadonlyArray<{
      readonly method: string;
      readonly url: string;
      readonly access: RouteAccess;
    }>;
  }
}

export interface ApiToken {
  readonly name: string;
  readonly token: string;
  /** Absent: every scope (tokens from before scopes, and the generated quick-start token). */
  readonly scopes?: readonly Scope[];
}

const ENTRY = /^([A-Za-z0-9_-]{1,64}):([^,:\s\p{Cc}]{16,})(?::([^,\s]*))?$/u;

/**
 * `name:token` (every scope, so configs from before scopes keep working) or `name:token:decide+users`.
 * Problems name the entry by position and name only: a token never reaches an error message.
 */
export function checkApiTokens(text: string): { tokens: ApiToken[]; problems: string[] } {
  const tokens: ApiToken[] = [];
  const problems: string[] = [];
  text.split(',').forEach((raw, index) => {
    const match = ENTRY.exec(raw.trim());
    if (!match) {
      problems.push(
        `entry ${index + 1}: expected name:token or name:token:scope+scope, a token of at least 16 characters without ":", ",", spaces or control characters`,
      );
      return;
    }
    const [, name, token, list] = match as unknown as [string, string, string, string | undefined];
    const scopes = list === undefined ? [...SCOPES] : list.split('+');
    const unknown = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
    if (unknown.length > 0 || scopes.length === 0) {
      problems.push(
        `${name}: unknown scope ${JSON.stringify(unknown.join('+').slice(0, 32))} (scopes: ${SCOPES.join(', ')}, joined with +)`,
      );
      return;
    }
    if (tokens.some((t) => t.name === name))
      problems.push(`${name}: the name is used twice (logs could not tell the callers apart)`);
    if (tokens.some((t) => t.token === token))
      problems.push(`${name}: the same token as ${tokens.find((t) => t.token === token)!.name}`);
    tokens.push({ name, token, scopes: [...new Set(scopes as Scope[])] });
  });
  return { tokens, problems };
}

/** For a value loadConfig has already checked. */
export function parseApiTokens(text: string): ApiToken[] {
  const { tokens, problems } = checkApiTokens(text);
  if (problems.length > 0) throw new Error(`API_TOKENS: ${problems.join('; ')}`);
  return tokens;
}

/**
 * Compares a presented token with every configured one by `crypto.timingSafeEqual` over buffers of
 * one fixed width: the UTF-8 length, then the UTF-8, zero-padded. A value whose UTF-8 fits is written
 * whole, so equal buffers mean equal bytes; one that does not fit is longer than every token, and its
 * length field tells it apart (the string's own length would not: a cut multi-byte character and a
 * token ending in NULs could pad to the same bytes). The time depends on the presented value's length
 * only, never on which token it is near, and nothing is allocated per request: hashing both sides
 * first, as before, was ~1.7 µs of a decide's profile. Returns the index of the token it equals, or -1.
 */
export function tokenMatcher(tokens: readonly string[]): (presented: string) => number {
  const width = 4 + Math.max(0, ...tokens.map((token) => Buffer.byteLength(token)));
  const encode = (value: string, into: Buffer) => {
    into.fill(0);
    into.writeUInt32BE(Math.min(Buffer.byteLength(value), 0xffff_ffff), 0);
    into.write(value, 4, 'utf8');
  };
  const known = tokens.map((token) => {
    const buffer = Buffer.alloc(width);
    encode(token, buffer);
    return buffer;
  });
  const presentedBuffer = Buffer.alloc(width);
  return (presented) => {
    encode(presented, presentedBuffer);
    let index = -1;
    // Every entry is compared (no early exit), so the time does not tell which entry matched.
    for (let i = 0; i < known.length; i++) if (timingSafeEqual(known[i]!, presentedBuffer)) index = i;
    return presented === '' ? -1 : index;
  };
}

/** Which routes are public and which scope each of the others needs, as the routes declared it. */
export type RouteAccess = { readonly public: true } | { readonly scope: Scope };

/** A route's decision on auth from its own config; a route without one (or with both) is a programming error. */
export function accessOf(route: Pick<RouteOptions, 'method' | 'url' | 'config'>): RouteAccess {
  const config = route.config ?? {};
  const isPublic = config.public === true;
  const scope = config.scope;
  if (isPublic && scope === undefined) return { public: true };
  if (!isPublic && scope !== undefined && (SCOPES as readonly string[]).includes(scope)) return { scope };
  throw new Error(
    `route ${String(route.method)} ${route.url}: declare config.public: true or config.scope (one of ${SCOPES.join(', ')}), not both`,
  );
}

/**
 * Bearer tokens, attached to every route that is not declared public, decided from the matched route
 * (its config), never from the URL: the router decodes `%76` and strips `http://host` before it
 * matches, so any check on the raw URL can be spelled around. Tokens are compared in constant time
 * (`tokenMatcher`).
 */
export function registerCallerAuth(app: FastifyInstance, tokens: readonly ApiToken[]): void {
  const known = tokens.map((t) => ({ name: t.name, scopes: t.scopes ?? SCOPES }));
  const matchToken = tokenMatcher(tokens.map((t) => t.token));
  app.decorateRequest('caller', '');
  const table: Array<{ method: string; url: string; access: RouteAccess }> = [];
  app.decorate('routeAccess', table);

  const identify = (header: string | undefined) => {
    const match = typeof header === 'string' ? /^Bearer +(\S+) *$/i.exec(header) : null;
    const index = matchToken(match ? match[1]! : '');
    return index >= 0 ? known[index] : undefined;
  };
  // Callback-style hooks: an async one costs a promise and a microtask turn on every request.
  const guard = (scope: Scope): onRequestHookHandler =>
    function authenticate(request, reply, done) {
      const caller = identify(request.headers.authorization);
      if (!caller) {
        void reply.header('www-authenticate', 'Bearer');
        return done(new RiskError('RISK_ERR_UNAUTHORIZED', 'missing or invalid bearer token'));
      }
      (request as FastifyRequest & { caller: string }).caller = caller.name;
      if (!caller.scopes.includes(scope))
        return done(new RiskError('RISK_ERR_FORBIDDEN', `this token lacks the "${scope}" scope`));
      done();
    };
  const guards = new Map(SCOPES.map((scope) => [scope, guard(scope)]));

  // Origin-form only (`/path`): an absolute-form target (`POST http://x/v1/decide`) is routed as its
  // path, so accepting it would give every URL-reading part (logs, limits) a second spelling.
  app.addHook('onRequest', (request, _reply, done) => {
    if (request.raw.url?.charCodeAt(0) !== 0x2f)
      return done(new RiskError('RISK_ERR_BAD_REQUEST', 'the request target must be a path (origin-form)'));
    if (request.raw.httpVersion === '1.1' && !request.headers.host)
      return done(new RiskError('RISK_ERR_BAD_REQUEST', 'an HTTP/1.1 request needs a Host header'));
    // Unmatched: 404 before any body is read, whatever the spelling, method or content type.
    if (request.is404) return done(new RiskError('RISK_ERR_NOT_FOUND', 'not found'));
    done();
  });
  app.addHook('onRoute', (route) => {
    const access = accessOf(route);
    for (const method of [route.method].flat()) table.push({ method, url: route.url, access });
    if ('public' in access) return;
    // First of the route's own hooks, so limits and handlers only ever see an authenticated caller.
    const own =
      route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? route.onRequest : [route.onRequest];
    route.onRequest = [guards.get(access.scope)!, ...own];
  });
}
