import { createHash, randomUUID } from 'node:crypto';
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
  | 'too_deep'
  | 'ignored'
  | 'unbound'
  | 'expired'
  | 'method_too_weak'
  | 'hold'
  | 'dead_letter'
  | 'out_of_order'
  | 'network_mismatch'
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
  /** How long after the step-up a reviewer's verdict on an In Review session still counts (DIDIT_REVIEW_TTL_HOURS). */
  readonly reviewTtlMs: number;
  readonly trustTtlMs: number;
  readonly claimTtlMs: number;
  readonly deadLetterTtlMs: number;
  readonly requireMethodMatch: boolean;
  /**
   * Whether an address Didit reports lies in the network a grant's `prefix` names. Without it a
   * re-bound session's Approved is held, never trusted.
   */
  readonly onNetwork?: (ip: string, prefix: string) => boolean;
  /** Used to re-fetch the verdict when only X-Signature-Simple verified, or when an Approved names no method. */
  readonly client?: DiditClient;
  readonly clock: () => number;
  /** Outgoing events: device.trusted / stepup.declined / stepup.abandoned / device.revoked on each applied verdict. */
  readonly events?: {
    stepUpOutcome(applied: {
      before: StepUpSession;
      status: SessionStatus;
      diditStatus: string;
      userId?: string;
    }): Promise<void>;
  };
}

export interface HandleOptions {
  /** False for a source over its failure budget: the raw-bytes MAC only (see verifyWebhookSignature). */
  readonly allowReparse?: boolean;
  /** A dead letter re-applied after a fix: no freshness window, and no new dead letter is written. */
  readonly replay?: boolean;
}

export interface DeadLetterContent {
  readonly body: string;
  readonly headers: SignatureHeaders;
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

const METHOD_NAMES: Record<string, StepUpRung> = {
  passive: 'PASSIVE',
  flashing: 'FLASHING',
  active_3d: 'ACTIVE_3D',
  active: 'ACTIVE_3D',
};

type LivenessCheck = { method?: string | null } | null | undefined;

/**
 * The weakest liveness method a decision reports (case-insensitive, reference §3), from v3's
 * `liveness_checks[]` or v1/v2's singular `liveness`; undefined when any check names none we know.
 */
export function methodRun(decision: unknown): StepUpRung | undefined {
  const d = decision as { liveness_checks?: LivenessCheck[] | null; liveness?: LivenessCheck } | null | undefined;
  const checks = [...(d?.liveness_checks ?? []), ...(d?.liveness ? [d.liveness] : [])];
  if (checks.length === 0) return undefined;
  let weakest: StepUpRung | undefined;
  for (const check of checks) {
    const ran = check?.method ? METHOD_NAMES[check.method.toLowerCase()] : undefined;
    if (!ran) return undefined;
    if (!weakest || rank(ran) < rank(weakest)) weakest = ran;
  }
  return weakest;
}

type IpAnalysis = { ip_address?: string | null } | null | undefined;

/** The addresses Didit's IP analysis saw the flow from: v3's `ip_analyses[]`, or v1/v2's singular `ip_analysis`. */
export function selfieAddresses(decision: unknown): string[] {
  const d = decision as { ip_analyses?: IpAnalysis[] | null; ip_analysis?: IpAnalysis } | null | undefined;
  const analyses = [
    ...(Array.isArray(d?.ip_analyses) ? d.ip_analyses : []),
    ...(d?.ip_analysis ? [d.ip_analysis] : []),
  ];
  return analyses.map((a) => a?.ip_address).filter((ip): ip is string => typeof ip === 'string' && ip.length > 0);
}

/** Whether an IP analysis entry names no address we can read (null, not an object, no or an empty address). */
function unreadableAnalysis(decision: unknown): boolean {
  const d = decision as { ip_analyses?: unknown; ip_analysis?: unknown } | null | undefined;
  const analyses = [
    ...(Array.isArray(d?.ip_analyses) ? d.ip_analyses : []),
    ...(d?.ip_analysis !== undefined && d?.ip_analysis !== null ? [d.ip_analysis] : []),
  ];
  return analyses.some(
    (a) =>
      typeof (a as { ip_address?: unknown } | null)?.ip_address !== 'string' ||
      (a as { ip_address: string }).ip_address.length === 0,
  );
}

/**
 * Whether a re-bound session's selfie was taken on the bound sign-in's network: every address Didit
 * reports maps to the grant's prefix, and there is at least one. The victim of a lapsed hand-out who
 * finishes it later, from her own network, teaches nothing to the device it was re-bound to.
 */
export function takenOnBoundNetwork(
  decision: unknown,
  prefix: string,
  onNetwork: WebhookDeps['onNetwork'],
): 'yes' | 'no' | 'unknown' {
  const addresses = selfieAddresses(decision);
  // One unreadable entry among readable ones could hide where the selfie was taken: not known.
  if (!onNetwork || addresses.length === 0 || unreadableAnalysis(decision)) return 'unknown';
  return addresses.every((ip) => onNetwork(ip, prefix)) ? 'yes' : 'no';
}

/** Dead letters are kept a week: long enough to fix and replay, short enough not to become an archive. */
export const DEAD_LETTER_TTL_MS = 7 * 24 * 3600_000;

/** The id of a dead letter: a hash of the delivery's bytes, so the same delivery is kept once. */
export const deadLetterId = (rawBody: Buffer): string =>
  createHash('sha256').update(rawBody).digest('base64url').slice(0, 32);

/**
 * Verify → check freshness → bind to a session we created → claim the delivery once → apply in
 * signed-timestamp order. Authentic events that change nothing still get 2xx (Didit retries only
 * 5xx and 404); a temporary failure of ours is a 503, and then the claim is given back so the retry
 * applies it. An authentic delivery that cannot be applied is kept as a dead letter, never dropped.
 */
export function createWebhookHandler(deps: WebhookDeps) {
  /**
   * Undoes exactly what this session granted, under the pseudonym it was granted under and, during an
   * ID_HASH_KEY rotation, under the user's current one: a sign-in since the switch has moved the grant there.
   */
  const revokeSessionGrant = async (
    session: StepUpSession,
    vendorData: string | undefined,
    now: number,
  ): Promise<void> => {
    await deps.store.revokeGrant(session.user, session.sessionId, now);
    const current = vendorData !== undefined ? deps.ids.id('user', vendorData) : undefined;
    if (current !== undefined && current !== session.user)
      await deps.store.revokeGrant(current, session.sessionId, now);
  };

  return async function handle(
    rawBody: Buffer,
    headers: SignatureHeaders,
    options: HandleOptions = {},
  ): Promise<WebhookOutcome> {
    const now = deps.clock();
    const verified = verifyWebhookSignature({
      rawBody,
      headers,
      secrets: deps.secrets,
      nowS: Math.floor(now / 1000),
      toleranceS: deps.toleranceS,
      allowReparse: options.allowReparse !== false,
      ignoreFreshness: options.replay === true,
    });
    if (!verified.ok) {
      if (verified.reason === 'malformed' || verified.reason === 'too_deep')
        return { httpStatus: 400, result: verified.reason };
      if (verified.reason === 'stale' || verified.reason === 'timestamp_mismatch')
        return { httpStatus: 401, result: 'stale', reason: verified.reason };
      return { httpStatus: 401, result: 'rejected_signature', reason: verified.reason };
    }

    /** Keeps the authentic delivery (sealed: it names the user) for `npm run rules -- dead-letters replay`. */
    const keep = async (
      result: 'dead_letter' | 'hold',
      reason: string,
      sessionId?: string,
      status?: string,
    ): Promise<WebhookOutcome> => {
      const base = { ...(sessionId ? { sessionId } : {}), ...(status ? { status } : {}), reason };
      if (options.replay) return { ...base, httpStatus: 200, result };
      const content: DeadLetterContent = { body: rawBody.toString('utf8'), headers };
      try {
        await deps.store.putDeadLetter(
          { id: deadLetterId(rawBody), at: now, reason, sealed: deps.ids.seal(JSON.stringify(content)) },
          deps.deadLetterTtlMs,
          now,
        );
      } catch {
        return { ...base, httpStatus: 503, result: 'retry_later', reason: 'store_unavailable' };
      }
      return { ...base, httpStatus: 200, result };
    };

    const parsed = webhookBody.safeParse(verified.body);
    if (!parsed.success) return keep('dead_letter', 'unexpected_shape');
    const event = parsed.data;
    const type = event.webhook_type ?? 'status.updated';
    if (type !== 'status.updated' && type !== 'data.updated')
      return { httpStatus: 200, result: 'ignored', reason: `type_${type}`.slice(0, 40), sessionId: event.session_id };

    let diditStatus = event.status;
    let vendorData = event.vendor_data ?? undefined;
    let workflowId = event.workflow_id ?? undefined;
    let decision: unknown = event.decision;
    let fetched = false;
    if (verified.envelopeOnly) {
      // Simple covers only timestamp, id, status and type: take the verdict from Didit itself.
      if (!deps.client) return keep('dead_letter', 'envelope_only', event.session_id, diditStatus);
      try {
        const answer = await deps.client.getDecision(event.session_id);
        diditStatus = answer.status;
        vendorData = answer.vendor_data ?? undefined;
        workflowId = answer.workflow_id ?? undefined;
        decision = answer;
        fetched = true;
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
    // The session id is ours (we created it for this user and workflow); a stated vendor_data or
    // workflow_id must agree with it, an absent or null one is simply not stated.
    if (vendorData !== undefined && !deps.ids.matches('user', vendorData, session.user))
      return { ...base, httpStatus: 200, result: 'unbound', reason: 'user_mismatch' };
    if (workflowId !== undefined && workflowId !== session.workflowId)
      return { ...base, httpStatus: 200, result: 'unbound', reason: 'workflow_mismatch' };

    const status = sessionStatusOf(diditStatus);
    if (status === 'approved') {
      const sinceStepUp = verified.timestamp * 1000 - session.createdAt;
      // The pending window is for the user; a reviewer may take days over a session the user finished in time.
      const reviewedInTime =
        session.status === 'in_review' &&
        session.lastEventTs * 1000 - session.createdAt <= deps.pendingTtlMs &&
        sinceStepUp <= deps.reviewTtlMs;
      if (sinceStepUp > deps.pendingTtlMs && !reviewedInTime)
        return { ...base, httpStatus: 200, result: 'expired', reason: 'approved_after_pending_lifetime' };
      if (deps.requireMethodMatch) {
        let ran = methodRun(decision);
        if (!ran && !fetched && deps.client) {
          // The body names no method (v1/v2 shapes, or a workflow without it): ask Didit's decision.
          try {
            ran = methodRun(await deps.client.getDecision(event.session_id));
          } catch {
            return { ...base, httpStatus: 503, result: 'retry_later', reason: 'decision_fetch_failed' };
          }
        }
        if (!ran) return keep('hold', 'method_unknown', event.session_id, diditStatus);
        if (rank(ran) < rank(session.method))
          return { ...base, httpStatus: 200, result: 'method_too_weak', reason: `ran_${ran}` };
      }
      if (session.rebound) {
        let where = takenOnBoundNetwork(decision, session.grant.prefix, deps.onNetwork);
        if (where === 'unknown' && !fetched && deps.client && deps.onNetwork) {
          // The body carries no IP analysis (an older webhook shape): Didit's decision may.
          try {
            where = takenOnBoundNetwork(
              await deps.client.getDecision(event.session_id),
              session.grant.prefix,
              deps.onNetwork,
            );
          } catch {
            return { ...base, httpStatus: 503, result: 'retry_later', reason: 'decision_fetch_failed' };
          }
        }
        if (where === 'unknown') return keep('hold', 'rebound_network_unknown', event.session_id, diditStatus);
        if (where === 'no')
          return { ...base, httpStatus: 200, result: 'network_mismatch', reason: 'rebound_selfie_elsewhere' };
      }
    }

    // One delivery is applied once: Didit's event id, else (or when only the envelope is signed) the signed time and status.
    const identity =
      event.event_id && !verified.envelopeOnly ? `e:${event.event_id}` : `t:${verified.timestamp}|${diditStatus}`;
    const claimKey = `${event.session_id}|${identity}|${type}`;
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
      const updated = await deps.store.updateSession(
        event.session_id,
        { status, diditStatus, eventTs: verified.timestamp },
        now,
      );
      // Applied only if this event is now the stored one: an older one, or a tie lost to a more cautious status, changes nothing.
      if (!updated || updated.lastEventTs !== verified.timestamp || updated.status !== status)
        return { ...base, httpStatus: 200, result: 'out_of_order' };
      if (status === 'approved') {
        await deps.store.trust({ ...session.grant, grantedBy: session.sessionId, ttlMs: deps.trustTtlMs }, now);
        // A newer reversal may have landed between our update and the grant: the latest event wins.
        const latest = await deps.store.getSession(event.session_id, now);
        if (latest && latest.status !== 'approved') await revokeSessionGrant(session, vendorData, now);
      } else {
        // A reviewer's late Declined (or any newer non-approved state) undoes exactly what this session granted.
        await revokeSessionGrant(session, vendorData, now);
      }
      // A decline is counted when the session turns declined, not per delivery of it.
      if (status === 'declined' && session.status !== 'declined')
        await deps.store.recordDecline(session.user, now, session.device);
      await deps.events?.stepUpOutcome({ before: session, status, diditStatus, userId: vendorData });
      return { ...base, httpStatus: 200, result: 'verified' };
    } catch {
      await deps.store.releaseClaim(claimKey, owner).catch(() => undefined);
      return { ...base, httpStatus: 503, result: 'retry_later', reason: 'store_unavailable' };
    }
  };
}

export type WebhookHandler = ReturnType<typeof createWebhookHandler>;
