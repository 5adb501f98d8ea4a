/**
 * A pending step-up of ours, recorded as decide would have recorded it, and Didit's signed
 * `status.updated` delivery for it. Webhook and event tests seed sessions directly (no decide, no
 * Didit call) so each case controls exactly one verdict; the shape lives here once, so a new field
 * of StepUpSession or of Didit's delivery is one edit.
 */
import { signWebhook } from '../../src/didit/signature.js';
import type { StepUpRung } from '../../src/engine/ladder.js';
import type { Pseudonymiser } from '../../src/store/pseudonymise.js';
import type { StepUpSession, Store, TrustGrant } from '../../src/store/store.js';

/** The address every seeded session was asked from (located in Sweden by the MaxMind test databases). */
export const SEEDED_IP = '89.160.20.112';
/** The pending window decide gives a hand-out (PENDING_TTL_MINUTES' default). */
const PENDING_MS = 10 * 60_000;

let counter = 0;

export interface SeededSession {
  readonly id: string;
  /** The caller's raw user id: Didit's `vendor_data`. */
  readonly user: string;
  readonly device: string;
  /** The user's pseudonym, as the store keys it. */
  readonly pseudonym: string;
  readonly method: StepUpRung;
  readonly workflowId: string;
}

export interface SeedOptions {
  readonly store: Pick<Store, 'recordPending'>;
  readonly ids: Pseudonymiser;
  readonly now: number;
  readonly user: string;
  readonly workflowId: string;
  readonly device?: string;
  readonly method?: StepUpRung;
  /** What the sign-in showed beyond device and network (place, user agent), for the grant. */
  readonly context?: Partial<Pick<TrustGrant, 'country' | 'city' | 'ua'>>;
}

export async function seedPendingSession(options: SeedOptions): Promise<SeededSession> {
  const { store, ids, now, user, workflowId, method = 'PASSIVE', device = `device-of-${user}` } = options;
  const id = `00000000-0000-4000-8000-${String(++counter).padStart(12, '0')}`;
  const pseudonym = ids.id('user', user);
  const deviceId = ids.id('device', device);
  const session: StepUpSession = {
    sessionId: id,
    user: pseudonym,
    device: deviceId,
    method,
    workflowId,
    url: 'http://127.0.0.1:1/session/x',
    createdAt: now,
    expiresAt: now + PENDING_MS,
    status: 'pending',
    diditStatus: 'Not Started',
    updatedAt: now,
    lastEventTs: 0,
    grant: {
      user: pseudonym,
      device: deviceId,
      ip: ids.id('ip', SEEDED_IP),
      prefix: ids.id('net', SEEDED_IP),
      ...options.context,
    },
  };
  await store.recordPending(session, now);
  return { id, user, device, pseudonym, method, workflowId };
}

export interface VerdictOptions {
  /** The signed timestamp, Unix seconds. */
  readonly tsS: number;
  readonly secret: string;
  readonly type?: string;
  /** Fields laid over the delivery (a different `decision`, a missing `vendor_data`, …). */
  readonly over?: Record<string, unknown>;
}

/**
 * Didit's delivery for the session, signed as Didit signs it. A v3 destination names the liveness
 * method run in `decision.liveness_checks`: without it the service holds an Approved.
 */
export function signedVerdict(
  session: Pick<SeededSession, 'id' | 'user' | 'workflowId'> & { method?: StepUpRung },
  status: string,
  options: VerdictOptions,
): { body: string; headers: Record<string, string> } {
  const { tsS, secret, type = 'status.updated', over = {} } = options;
  const decision = {
    session_id: session.id,
    status,
    liveness_checks: [{ node_id: 'feature_liveness_1', method: session.method ?? 'PASSIVE', status, score: 97.5 }],
  };
  const body = JSON.stringify({
    webhook_type: type,
    timestamp: tsS,
    created_at: tsS,
    session_id: session.id,
    status,
    vendor_data: session.user,
    workflow_id: session.workflowId,
    decision,
    ...over,
  });
  return { body, headers: signWebhook(body, secret) };
}
