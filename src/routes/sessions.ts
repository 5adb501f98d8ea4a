import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { RiskError } from '../errors.js';
import type { Pseudonymiser } from '../store/pseudonymise.js';
import type { SessionStatus, Store } from '../store/store.js';
import { idText } from '../lib/id-text.js';
import { parseBody } from './validation.js';
import { doc, errorResponses, sessionReply } from './schemas.js';

export type Outcome = 'allow' | 'deny' | 'hold' | 'retry' | 'pending';

const OUTCOME: Record<SessionStatus, Outcome> = {
  approved: 'allow',
  declined: 'deny',
  in_review: 'hold',
  retry: 'retry',
  pending: 'pending',
};

const params = z.strictObject({ session_id: z.string().regex(/^[0-9a-f-]{36}$/, 'session_id is a lowercase UUID') });
const query = z.strictObject({ user_id: idText(128).optional() });

/**
 * GET /v1/sessions/{id}: what the login service does next. The store keeps only the pseudonymised
 * user, so `user_id` is echoed when the caller passes it and it matches; a mismatch is a 404 (no
 * cross-user probing of session ids).
 */
export function registerSessions(
  app: FastifyInstance,
  deps: { store: Store; ids: Pseudonymiser; clock: () => number },
): void {
  const schema = {
    summary: 'What the login service does next',
    params: doc(params),
    querystring: doc(query),
    response: { 200: doc(sessionReply), ...errorResponses(400, 401, 404, 503) },
  };
  app.get('/v1/sessions/:session_id', { schema, config: { scope: 'decide' } }, async (request) => {
    const { session_id } = parseBody(params, request.params);
    const { user_id } = parseBody(query, request.query);
    const now = deps.clock();
    let session: Awaited<ReturnType<typeof deps.store.getSession>>;
    try {
      session = await deps.store.getSession(session_id, now);
    } catch {
      throw new RiskError('RISK_ERR_UNAVAILABLE', 'state store unavailable');
    }
    if (!session || (user_id !== undefined && !deps.ids.matches('user', user_id, session.user)))
      throw new RiskError('RISK_ERR_NOT_FOUND', 'no such session');
    const timedOut = session.status === 'pending' && session.expiresAt <= now;
    return {
      session_id,
      ...(user_id !== undefined ? { user_id } : {}),
      status: session.diditStatus,
      outcome: timedOut ? 'retry' : OUTCOME[session.status],
      method: session.method,
      updated_at: new Date(session.updatedAt).toISOString(),
    };
  });
}
