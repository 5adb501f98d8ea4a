import { hash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RiskError } from '../errors.js';

export interface ApiToken {
  readonly name: string;
  readonly token: string;
}

/** `name:token,name:token` → tokens. The name is what logs and metrics show; the token never is. */
export function parseApiTokens(text: string): ApiToken[] {
  return text.split(',').map((pair) => {
    const at = pair.indexOf(':');
    return { name: pair.slice(0, at).trim(), token: pair.slice(at + 1).trim() };
  });
}

// One-shot hashing: a fraction of the cost of a Hash object per request.
const digest = (value: string): Buffer => hash('sha256', value, 'buffer') as unknown as Buffer;

/**
 * Bearer tokens for every /v1 route except the Didit webhook (which is HMAC-signed). Both sides
 * are hashed first so the constant-time compare sees equal lengths whatever the caller sends.
 */
export function registerCallerAuth(app: FastifyInstance, tokens: readonly ApiToken[], publicPaths: readonly string[]): void {
  const known = tokens.map((t) => ({ name: t.name, digest: digest(t.token) }));
  app.decorateRequest('caller', '');
  app.addHook('onRequest', async (request: FastifyRequest) => {
    const path = request.url.split('?', 1)[0]!;
    if (!path.startsWith('/v1/') || publicPaths.includes(path)) return;
    const header = request.headers.authorization;
    const presented = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7).trim() : '';
    const presentedDigest = digest(presented);
    let caller: string | undefined;
    for (const entry of known) if (timingSafeEqual(entry.digest, presentedDigest) && presented !== '') caller = entry.name;
    if (!caller) throw new RiskError('RISK_ERR_UNAUTHORIZED', 'missing or invalid bearer token');
    (request as FastifyRequest & { caller: string }).caller = caller;
  });
}
