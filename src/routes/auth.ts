import { hash } from 'node:crypto';
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

const ENTRY = /^([A-Za-z0-9_-]{1,64}):([^,:\s]{16,})(?::([^,\s]*))?$/;

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
        `entry ${index + 1}: expected name:token or name:token:scope+scope, a token of at least 16 characters without ":", "," or spaces`,
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

// One-shot hashing to a hex string: a Hash object per request cost ~5 times as much, a Buffer
// digest ~4 times (each is a new ArrayBuffer from native code, which young collections then sweep).
const digest = (value: string): string => hash('sha256', value, 'hex');

/**
 * Whether two digests are equal, looking at every character whatever the first difference: the
 * compare sees only SHA-256 digests, of equal length, so even a leak of where they differ would say
 * nothing about a token; the loop keeps it uninformative anyway.
 */
export function sameDigest(a: string, b: string): boolean {
  let difference = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return difference === 0;
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
 * matches, so any check on the raw URL can be spelled around. Both sides are hashed first so the
 * constant-time compare sees equal lengths whatever the caller sends.
 */
export function registerCallerAuth(app: FastifyInstance, tokens: readonly ApiToken[]): void {
  const known = tokens.map((t) => ({ name: t.name, scopes: t.scopes ?? SCOPES, digest: digest(t.token) }));
  app.decorateRequest('caller', '');
  const table: Array<{ method: string; url: string; access: RouteAccess }> = [];
  app.decorate('routeAccess', table);

  const identify = (header: string | undefined) => {
    const match = typeof header === 'string' ? /^Bearer +(\S+) *$/i.exec(header) : null;
    const presented = match ? match[1]! : '';
    const presentedDigest = digest(presented);
    let caller: (typeof known)[number] | undefined;
    // Every entry is compared (no early exit), so the time does not tell which entry matched.
    for (const entry of known) if (sameDigest(entry.digest, presentedDigest) && presented !== '') caller = entry;
    return caller;
  };
  const guard = (scope: Scope): onRequestHookHandler =>
    async function authenticate(request, reply) {
      const caller = identify(request.headers.authorization);
      if (!caller) {
        void reply.header('www-authenticate', 'Bearer');
        throw new RiskError('RISK_ERR_UNAUTHORIZED', 'missing or invalid bearer token');
      }
      (request as FastifyRequest & { caller: string }).caller = caller.name;
      if (!caller.scopes.includes(scope))
        throw new RiskError('RISK_ERR_FORBIDDEN', `this token lacks the "${scope}" scope`);
    };
  const guards = new Map(SCOPES.map((scope) => [scope, guard(scope)]));

  // Origin-form only (`/path`): an absolute-form target (`POST http://x/v1/decide`) is routed as its
  // path, so accepting it would give every URL-reading part (logs, limits) a second spelling.
  app.addHook('onRequest', async (request) => {
    if (request.raw.url?.charCodeAt(0) !== 0x2f)
      throw new RiskError('RISK_ERR_BAD_REQUEST', 'the request target must be a path (origin-form)');
    if (request.raw.httpVersion === '1.1' && !request.headers.host)
      throw new RiskError('RISK_ERR_BAD_REQUEST', 'an HTTP/1.1 request needs a Host header');
    // Unmatched: 404 before any body is read, whatever the spelling, method or content type.
    if (request.is404) throw new RiskError('RISK_ERR_NOT_FOUND', 'not found');
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
