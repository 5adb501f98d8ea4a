import type { StepUpRung } from '../engine/ladder.js';
import {
  pendingContextOf,
  pendingField,
  sameContext,
  type PendingContext,
  type StepUpSession,
  type Store,
} from '../store/store.js';
import { DiditError, type DiditClient } from './client.js';
import type { OpenStepUp, StepUpService, Verification } from './step-up-types.js';
import { DeadlineExceeded, withDeadline } from '../lib/deadline.js';

export interface StepUpOptions {
  readonly client: DiditClient;
  readonly store: Store;
  /** Session URLs carry Didit's session token (a bearer secret): stored sealed, never in clear. */
  readonly sealer: { seal(plain: string): string; unseal(sealed: string): string | undefined };
  readonly pendingTtlMs: number;
  readonly callbackUrl?: string;
  /** Sessions one device may open per 15 minutes. */
  readonly deviceMaxPer15m?: number;
  /** The ceiling for the whole user, above the device cap: an attacker's devices cannot spend the user's budget alone. */
  readonly userMaxPer15m: number;
  readonly globalMaxPerMin: number;
  /** The whole step-up (store calls and the Didit call) gets this long before it is `unavailable`. */
  readonly deadlineMs?: number;
  readonly log?: { warn(obj: object, msg: string): void };
}

const FIFTEEN_MINUTES = 15 * 60_000;

/** A fixed one-minute window counter for the global create budget (below Didit's 600/min). */
function minuteBudget(max: number) {
  let windowStart = 0;
  let used = 0;
  return (now: number): boolean => {
    const start = now - (now % 60_000);
    if (start !== windowStart) {
      windowStart = start;
      used = 0;
    }
    if (used >= max) return false;
    used += 1;
    return true;
  };
}

/**
 * Whether a session Didit handed back may be bound to this sign-in. Didit returns the same unfinished
 * session per (workflow, vendor_data) for days, so its session id says nothing about who asked:
 * - the same context (device, network prefix, method, purpose class) takes it again;
 * - another context's live hand-out (within PENDING_TTL) keeps it: first come, first bound;
 * - a lapsed hand-out nobody opened (`Not Started`) is re-bound to this context, marked `rebound`:
 *   the earlier link still works at Didit, so the webhook trusts an Approved of a re-bound session
 *   only when Didit's IP analysis puts the selfie on this context's network;
 * - a flow already started (`In Progress`, …) elsewhere, or by someone we have no record of, is
 *   never re-bound: the one running it would teach trust to this device.
 */
function bindable(
  existing: StepUpSession | undefined,
  context: PendingContext,
  diditStatus: string,
  now: number,
): boolean {
  if (existing && sameContext(pendingContextOf(existing), context)) return true;
  if (existing && existing.status === 'pending' && existing.expiresAt > now) return false;
  return diditStatus === 'Not Started';
}

/**
 * Opens a Didit session for a step-up, or hands out again the pending one of exactly this context
 * (user, device, network prefix, method, purpose class). Every hand-out restarts the pending window
 * and re-points the grant at this sign-in. Concurrent identical requests in this process share one
 * call (single flight). It never throws: every failure is `unavailable`, and the caller keeps the
 * action (never lowered to SKIP).
 */
export function createStepUpService(options: StepUpOptions): StepUpService {
  const inFlight = new Map<string, Promise<Verification>>();
  const globalBudget = minuteBudget(options.globalMaxPerMin);

  const unavailable = (method: StepUpRung, reason: string): Verification => ({ status: 'unavailable', method, reason });

  const contextOf = (request: OpenStepUp): PendingContext => ({
    user: request.grant.user,
    device: request.grant.device,
    prefix: request.grant.prefix,
    method: request.method,
    purposeClass: request.purposeClass,
  });

  /** Records a hand-out of this session to this sign-in: the pending window starts now. */
  const handOut = (
    request: OpenStepUp,
    context: PendingContext,
    session: {
      sessionId: string;
      workflowId: string;
      sealedUrl: string;
      diditStatus: string;
      lastEventTs: number;
      rebound: boolean;
    },
  ) =>
    options.store.recordPending(
      {
        sessionId: session.sessionId,
        user: context.user,
        device: context.device,
        method: context.method,
        workflowId: session.workflowId,
        url: session.sealedUrl,
        // The hand-out, not Didit's creation: an Approved counts when it follows the latest hand-out within PENDING_TTL.
        createdAt: request.now,
        expiresAt: request.now + options.pendingTtlMs,
        status: 'pending',
        diditStatus: session.diditStatus,
        updatedAt: request.now,
        lastEventTs: session.lastEventTs,
        grant: request.grant,
        purposeClass: context.purposeClass,
        ...(session.rebound ? { rebound: true } : {}),
      },
      request.now,
    );

  async function openFresh(request: OpenStepUp): Promise<Verification> {
    const { store, client } = options;
    const { method, now } = request;
    const context = contextOf(request);
    const reusable = await store.findPending(context, now);
    const reusableUrl = reusable ? options.sealer.unseal(reusable.url) : undefined;
    if (
      reusable &&
      reusableUrl &&
      (await handOut(request, context, {
        sessionId: reusable.sessionId,
        workflowId: reusable.workflowId,
        sealedUrl: reusable.url,
        diditStatus: reusable.diditStatus,
        lastEventTs: reusable.lastEventTs,
        rebound: reusable.rebound === true,
      }))
    ) {
      return {
        status: 'reused',
        session_id: reusable.sessionId,
        url: reusableUrl,
        method,
        workflow_id: reusable.workflowId,
      };
    }
    if (client.circuitOpen()) return unavailable(method, 'didit_circuit_open');
    const opened = await store.countSessionOpen(context.user, context.device, FIFTEEN_MINUTES, now);
    if (opened.device > (options.deviceMaxPer15m ?? options.userMaxPer15m))
      return unavailable(method, 'device_session_cap');
    if (opened.user > options.userMaxPer15m) return unavailable(method, 'user_session_cap');
    if (!globalBudget(now)) return unavailable(method, 'global_session_cap');

    const workflowId = client.workflows[method];
    const callback = request.callback ?? options.callbackUrl;
    const created = await client.createSession({
      workflowId,
      vendorData: request.userId,
      // Echoed back by Didit in every webhook: ids and reasons only, never an IP or a device id.
      metadata: {
        decision_id: request.decisionId,
        purpose: request.purpose,
        method,
        rules: request.ruleIds.slice(0, 20),
      },
      ...(callback ? { callback } : {}),
      ...(request.portraitImage ? { portraitImage: request.portraitImage } : {}),
    });
    if (created.workflow_id != null && created.workflow_id !== workflowId)
      return unavailable(method, 'didit_bad_response');
    // Didit itself may hand back an unfinished session for this user and workflow (its reuse rule).
    const existing = await store.getSession(created.session_id, now);
    // Handing this sign-in a flow bound to (or started by) another one would let that other device or
    // network ride on this user's selfie, or this one on theirs: keep the binding, use backup. The
    // store re-checks the binding atomically, for two sign-ins racing with the same Didit session.
    // Once handed to another context, the earlier link stays live at Didit: the flag outlives later hand-outs.
    const rebound = !!existing && (existing.rebound === true || !sameContext(pendingContextOf(existing), context));
    const bound =
      bindable(existing, context, created.status, now) &&
      (await handOut(request, context, {
        sessionId: created.session_id,
        workflowId,
        sealedUrl: options.sealer.seal(created.url),
        diditStatus: created.status,
        lastEventTs: existing?.lastEventTs ?? 0,
        rebound,
      }));
    if (!bound)
      return unavailable(
        method,
        !existing || existing.device !== context.device ? 'pending_on_other_device' : 'pending_in_other_context',
      );
    return {
      status: existing ? 'reused' : 'created',
      session_id: created.session_id,
      url: created.url,
      method,
      workflow_id: workflowId,
    };
  }

  return {
    async open(request) {
      const key = `${request.grant.user}|${pendingField(contextOf(request))}`;
      const running = inFlight.get(key);
      if (running) {
        const shared = await running;
        return shared.status === 'created' ? { ...shared, status: 'reused' } : shared;
      }
      const attempt = withDeadline(openFresh(request), options.deadlineMs ?? 2000, 'step-up deadline').catch(
        (error: unknown) => {
          const reason =
            error instanceof DiditError
              ? `didit_${error.code}`
              : error instanceof DeadlineExceeded
                ? 'deadline'
                : 'store_unavailable';
          options.log?.warn({ reason }, 'step-up session not opened; the login service should use its backup factor');
          return unavailable(request.method, reason);
        },
      );
      inFlight.set(key, attempt);
      try {
        return await attempt;
      } finally {
        inFlight.delete(key);
      }
    },
  };
}
