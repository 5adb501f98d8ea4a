import type { StepUpRung } from '../engine/ladder.js';
import type { Store } from '../store/store.js';
import { DiditError, type DiditClient } from './client.js';
import type { OpenStepUp, StepUpService, Verification } from './step-up-types.js';

export interface StepUpOptions {
  readonly client: DiditClient;
  readonly store: Store;
  /** Session URLs carry Didit's session token (a bearer secret): stored sealed, never in clear. */
  readonly sealer: { seal(plain: string): string; unseal(sealed: string): string | undefined };
  readonly pendingTtlMs: number;
  readonly callbackUrl?: string;
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
 * Opens a Didit session for a step-up, or reuses the pending one for the same user, device and
 * method. Concurrent identical requests in this process share one call (single flight). It never
 * throws: every failure is `unavailable`, and the caller keeps the action (never lowered to SKIP).
 */
export function createStepUpService(options: StepUpOptions): StepUpService {
  const inFlight = new Map<string, Promise<Verification>>();
  const globalBudget = minuteBudget(options.globalMaxPerMin);

  const unavailable = (method: StepUpRung, reason: string): Verification => ({ status: 'unavailable', method, reason });

  async function openFresh(request: OpenStepUp): Promise<Verification> {
    const { store, client } = options;
    const { method, now } = request;
    const reusable = await store.findPending(request.grant.user, request.grant.device, method, now);
    const reusableUrl = reusable ? options.sealer.unseal(reusable.url) : undefined;
    if (reusable && reusableUrl) return { status: 'reused', session_id: reusable.sessionId, url: reusableUrl, method, workflow_id: reusable.workflowId };
    if (client.circuitOpen()) return unavailable(method, 'didit_circuit_open');
    if ((await store.countSessionOpen(request.grant.user, FIFTEEN_MINUTES, now)) > options.userMaxPer15m) return unavailable(method, 'user_session_cap');
    if (!globalBudget(now)) return unavailable(method, 'global_session_cap');

    const workflowId = client.workflows[method];
    const callback = request.callback ?? options.callbackUrl;
    const created = await client.createSession({
      workflowId,
      vendorData: request.userId,
      // Echoed back by Didit in every webhook: ids and reasons only, never an IP or a device id.
      metadata: { decision_id: request.decisionId, purpose: request.purpose, method, rules: request.ruleIds.slice(0, 20) },
      ...(callback ? { callback } : {}),
      ...(request.portraitImage ? { portraitImage: request.portraitImage } : {}),
    });
    if (created.workflow_id != null && created.workflow_id !== workflowId) return unavailable(method, 'didit_bad_response');
    const existing = await store.getSession(created.session_id, now);
    if (existing && (existing.device !== request.grant.device || existing.user !== request.grant.user)) {
      // Didit reuses an unfinished session per user and workflow. Handing another device the URL of a
      // flow started elsewhere (and re-pointing its trust at this device) would let an attacker's
      // device ride on the real user's selfie: keep the original binding and send this one to backup.
      return unavailable(method, 'pending_on_other_device');
    }
    await store.recordPending(
      {
        sessionId: created.session_id,
        user: request.grant.user,
        device: request.grant.device,
        method,
        workflowId,
        url: options.sealer.seal(created.url),
        createdAt: existing?.createdAt ?? now,
        expiresAt: now + options.pendingTtlMs,
        status: 'pending',
        diditStatus: created.status,
        updatedAt: now,
        lastEventTs: existing?.lastEventTs ?? 0,
        grant: request.grant,
      },
      now,
    );
    // Didit itself may hand back an unfinished session for this user and workflow (its reuse rule).
    return { status: existing ? 'reused' : 'created', session_id: created.session_id, url: created.url, method, workflow_id: workflowId };
  }

  return {
    async open(request) {
      const key = `${request.grant.user}|${request.grant.device}|${request.method}`;
      const running = inFlight.get(key);
      if (running) {
        const shared = await running;
        return shared.status === 'created' ? { ...shared, status: 'reused' } : shared;
      }
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('step-up deadline')), options.deadlineMs ?? 2000);
      });
      const attempt = Promise.race([openFresh(request), deadline]).finally(() => clearTimeout(timer)).catch((error: unknown) => {
        const reason = error instanceof DiditError ? `didit_${error.code}` : (error as Error)?.message === 'step-up deadline' ? 'deadline' : 'store_unavailable';
        options.log?.warn({ reason }, 'step-up session not opened; the login service should use its backup factor');
        return unavailable(request.method, reason);
      });
      inFlight.set(key, attempt);
      try {
        return await attempt;
      } finally {
        inFlight.delete(key);
      }
    },
  };
}
