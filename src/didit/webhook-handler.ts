import { randomUUID } from 'node:crypto';
import { rank, type StepUpRung } from '../engine/ladder.js';
import type { Pseudonymiser } from '../store/pseudonymise.js';
import type { SessionStatus, StepUpSession, Store } from '../store/store.js';
import type { DiditClient } from './client.js';
import { webhookBody } from './schemas.js';
import { verifyWebhookSignature, type SignatureHeaders } from './signature.js';

export type WebhookResult =
  | 'verified'
  | 'duplicate'
  | 'rejected_signature'
  | 'stale'
  | 'malformed'
  | 'ignored'
  | 'unbound'
  | 'expired'
  | 'method_too_weak'
  | 'out_of_order'
  | 'retry_later';

export interface WebhookOutcome {
  readonly httpStatus: number;
  readonly result: WebhookResult;
  readonly reason?: string;
  readonly sessionId?: string;
  readonly status?: string;
}

export interface WebhookDeps {
  readonly store: Store;
  readonly ids: Pseudonymiser;
  readonly secrets: readonly string[];
  readonly toleranceS: number;
  readonly pendingTtlMs: number;
  readonly trustTtlMs: number;
  readonly claimTtlMs: number;
  readonly requireMethodMatch: boolean;
  /** Used to re-fetch the verdict when only X-Signature-Simple verified. */
  readonly client?: DiditClient;
  readonly clock: () => number;
  /** Outgoing events: device.trusted / stepup.declined / stepup.abandoned / device.revoked on each applied verdict. */
  readonly events?: { stepUpOutcome(applied: { before: StepUpSession; status: SessionStatus; diditStatus: string; userId?: string }): Promise<void> };
}

export function sessionStatusOf(diditStatus: string): SessionStatus {
  switch (diditStatus) {
    case 'Approved':
      return 'approved';
    case 'Declined':
      return 'declined';
    case 'In Review':
      return 'in_review';
    case 'Abandoned':
    case 'Expired':
    case 'Kyc Expired':
      return 'retry';
    default:
      return 'pending';
  }
}

const METHOD_NAMES: Record<string, StepUpRung> = { passive: 'PASSIVE', flashing: 'FLASHING', active_3d: 'ACTIVE_3D', active: 'ACTIVE_3D' };

/** The liveness method Didit reports, when it does (compared case-insensitively, reference §3). */
function methodRun(decision: unknown): StepUpRung | undefined {
  const checks = (decision as { liveness_checks?: Array<{ method?: string }> | null } | null | undefined)?.liveness_checks;
  const method = checks?.[0]?.method?.toLowerCase();
  return method ? METHOD_NAMES[method] : undefined;
}

/**
 * Verify → check freshness → bind to a session we created → claim once → apply. Authentic events
 * that change nothing still get 2xx (Didit would retry anything else); only a temporary failure of
 * ours is a 5xx, and then the claim is given back so the retry applies it.
 */
export function createWebhookHandler(deps: WebhookDeps) {
  return async function handle(rawBody: Buffer, headers: SignatureHeaders): Promise<WebhookOutcome> {
    const now = deps.clock();
    const verified = verifyWebhookSignature({ rawBody, headers, secrets: deps.secrets, nowS: Math.floor(now / 1000), toleranceS: deps.toleranceS });
    if (!verified.ok) {
      if (verified.reason === 'malformed') return { httpStatus: 400, result: 'malformed' };
      if (verified.reason === 'stale' || verified.reason === 'timestamp_mismatch') return { httpStatus: 401, result: 'stale', reason: verified.reason };
      return { httpStatus: 401, result: 'rejected_signature', reason: verified.reason };
    }
    const parsed = webhookBody.safeParse(verified.body);
    if (!parsed.success) return { httpStatus: 200, result: 'ignored', reason: 'unexpected_shape' };
    const event = parsed.data;
    const type = event.webhook_type ?? 'status.updated';
    if (type !== 'status.updated' && type !== 'data.updated') return { httpStatus: 200, result: 'ignored', reason: `type_${type}`.slice(0, 40), sessionId: event.session_id };

    let diditStatus = event.status;
    let vendorData = event.vendor_data ?? undefined;
    let workflowId = event.workflow_id;
    let decision: unknown = event.decision;
    if (verified.envelopeOnly) {
      // Simple covers only timestamp, id, status and type: take the verdict from Didit itself.
      if (!deps.client) return { httpStatus: 200, result: 'ignored', reason: 'envelope_only', sessionId: event.session_id };
      try {
        const fetched = await deps.client.getDecision(event.session_id);
        diditStatus = fetched.status;
        vendorData = fetched.vendor_data ?? undefined;
        workflowId = fetched.workflow_id;
        decision = fetched;
      } catch {
        return { httpStatus: 503, result: 'retry_later', reason: 'decision_fetch_failed', sessionId: event.session_id };
      }
    }

    const base = { sessionId: event.session_id, status: diditStatus };
    let session: StepUpSession | undefined;
    try {
      session = await deps.store.getSession(event.session_id, now);
    } catch {
      return { ...base, httpStatus: 503, result: 'retry_later', reason: 'store_unavailable' };
    }
    if (!session) return { ...base, httpStatus: 200, result: 'unbound', reason: 'unknown_session' };
    if (vendorData === undefined || deps.ids.id('user', vendorData) !== session.user) return { ...base, httpStatus: 200, result: 'unbound', reason: 'user_mismatch' };
    if (workflowId !== session.workflowId) return { ...base, httpStatus: 200, result: 'unbound', reason: 'workflow_mismatch' };

    const status = sessionStatusOf(diditStatus);
    if (status === 'approved') {
      if (verified.timestamp * 1000 - session.createdAt > deps.pendingTtlMs) return { ...base, httpStatus: 200, result: 'expired', reason: 'approved_after_pending_lifetime' };
      const ran = methodRun(decision);
      if (deps.requireMethodMatch && ran && rank(ran) < rank(session.method)) return { ...base, httpStatus: 200, result: 'method_too_weak', reason: `ran_${ran}` };
    }

    const claimKey = `${event.session_id}|${diditStatus}|${type}`;
    // The claim holds this delivery's own token: when its reply times out, Redis may still have run
    // it, and a claim kept by a delivery that answered 503 would turn every retry into a duplicate.
    const owner = randomUUID();
    let claimed: boolean;
    try {
      claimed = await deps.store.claimOnce(claimKey, deps.claimTtlMs, now, owner);
    } catch {
      await deps.store.releaseClaim(claimKey, owner).catch(() => undefined);
      return { ...base, httpStatus: 503, result: 'retry_later', reason: 'store_unavailable' };
    }
    if (!claimed) return { ...base, httpStatus: 200, result: 'duplicate' };

    try {
      const updated = await deps.store.updateSession(event.session_id, { status, diditStatus, eventTs: verified.timestamp }, now);
      if (!updated || updated.lastEventTs !== verified.timestamp) return { ...base, httpStatus: 200, result: 'out_of_order' };
      if (status === 'approved') {
        await deps.store.trust({ ...session.grant, grantedBy: session.sessionId, ttlMs: deps.trustTtlMs }, now);
        // A newer reversal may have landed between our update and the grant: the latest event wins.
        const latest = await deps.store.getSession(event.session_id, now);
        if (latest && latest.status !== 'approved') await deps.store.revokeGrant(session.user, session.sessionId, now);
      } else {
        // A reviewer's late Declined (or any newer non-approved state) undoes exactly what this session granted.
        await deps.store.revokeGrant(session.user, session.sessionId, now);
      }
      if (status === 'declined') await deps.store.recordDecline(session.user, now, session.device);
      await deps.events?.stepUpOutcome({ before: session, status, diditStatus, userId: vendorData });
      return { ...base, httpStatus: 200, result: 'verified' };
    } catch {
      await deps.store.releaseClaim(claimKey, owner).catch(() => undefined);
      return { ...base, httpStatus: 503, result: 'retry_later', reason: 'store_unavailable' };
    }
  };
}

export type WebhookHandler = ReturnType<typeof createWebhookHandler>;
