import { randomUUID } from 'node:crypto';
import type { Decision } from '../engine/evaluate.js';
import type { StepUpRung } from '../engine/ladder.js';
import type { Outbox } from '../store/outbox-contract.js';
import type { SessionStatus, StepUpSession } from '../store/store.js';
import { orFallback } from '../lib/deadline.js';
import type { Mutable } from '../lib/mutable.js';

export const EVENT_TYPES = [
  'device.trusted',
  'device.revoked',
  'stepup.declined',
  'stepup.abandoned',
  'decision.denied',
  'decision',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** What a "was this you?" message needs, and nothing that identifies the device or address. */
export interface DeviceFacts {
  /** The device's pseudonym, the opaque id of `GET /v1/users/{id}/devices` (never the raw device id). */
  readonly id?: string;
  readonly browser?: string;
  readonly os?: string;
  /** ISO country of the address it was seen from. */
  readonly country?: string;
  /** Its city, when the GeoIP database names one. */
  readonly city?: string;
}

export interface EventFacts {
  readonly type: EventType;
  /** The user's pseudonym: the order key (one user's events leave in order). */
  readonly user: string;
  /** The raw user id; reaches the payload only with EVENTS_INCLUDE_USER_ID=true. */
  readonly userId?: string;
  readonly device?: DeviceFacts;
  readonly detail: Readonly<Record<string, unknown>>;
}

export type QueueResult = 'queued' | 'dropped';

export interface EventSinkDeps {
  readonly outbox: Outbox;
  readonly clock: () => number;
  readonly includeUserId: boolean;
  /** Emit a `decision` event for every decide (high volume). */
  readonly decisions: boolean;
  /** The longest an append may take before the event is counted as dropped. */
  readonly deadlineMs: number;
  readonly onQueued: (type: EventType, result: QueueResult) => void;
  readonly log: { warn(obj: object, msg: string): void };
  readonly newId?: () => string;
}

/** The slice of an enriched decide the events read (structural: events do not depend on signals/). */
export interface DecideFacts {
  readonly decisionId: string;
  /** The request's id, on the decision line as on the request's other lines. */
  readonly reqId: string;
  readonly userId: string;
  readonly purpose: string;
  readonly enriched: {
    readonly user: string;
    readonly device: string;
    readonly grant: StepUpSession['grant'];
    readonly signals: Readonly<Record<string, unknown>>;
  };
  readonly decision: Pick<Decision, 'action' | 'score' | 'reasons' | 'ruleset' | 'degraded' | 'shadow' | 'bypass'>;
  readonly verification: string;
  /** How long the decide took, for its log line. */
  readonly seconds: number;
  /** `enriched.signals` as JSON, made once by the decide for its reply, its line and its record. */
  readonly signalsJson?: string;
  /** The Didit session handed out for this decision, if one was (rule effectiveness joins its verdict back). */
  readonly stepUp?: { readonly sessionId: string; readonly method: StepUpRung };
}

function deviceOf(device: string, grant: StepUpSession['grant'] | undefined): DeviceFacts {
  const facts: Mutable<DeviceFacts> = { id: device };
  if (grant?.ua?.browser) facts.browser = grant.ua.browser;
  if (grant?.ua?.os) facts.os = grant.ua.os;
  if (grant?.country) facts.country = grant.country;
  if (grant?.city) facts.city = grant.city;
  return facts;
}

/**
 * Turns the facts the service learns into events and appends them to the outbox. Nothing here
 * sends anything: the dispatcher does, later. Every method resolves (never rejects) within the
 * deadline, so a caller may await it or not.
 */
export function createEventSink(deps: EventSinkDeps) {
  const newId = deps.newId ?? (() => `evt_${randomUUID().replace(/-/g, '')}`);

  async function emit(facts: EventFacts): Promise<boolean> {
    const now = deps.clock();
    const id = newId();
    const data: Record<string, unknown> = { user: facts.user };
    if (deps.includeUserId && facts.userId !== undefined) data.user_id = facts.userId;
    if (facts.device) data.device = facts.device;
    Object.assign(data, facts.detail);
    const body = JSON.stringify({ id, type: facts.type, timestamp: new Date(now).toISOString(), data });
    const appended = orFallback(
      deps.outbox.append({ eventId: id, orderKey: facts.user, type: facts.type, body, at: now }),
      deps.deadlineMs,
      false,
    );
    const ok = await appended;
    deps.onQueued(facts.type, ok ? 'queued' : 'dropped');
    if (!ok)
      deps.log.warn(
        { event_id: id, type: facts.type },
        'event dropped: the outbox did not take it in time (full or unavailable)',
      );
    return ok;
  }

  return {
    emit,
    /**
     * A Didit verdict was applied to a session. Only transitions emit, so a repeated or `data.updated`
     * copy of the same verdict does not send a second event.
     */
    async stepUpOutcome(o: {
      readonly before: StepUpSession;
      readonly status: SessionStatus;
      readonly diditStatus: string;
      readonly userId?: string;
    }): Promise<void> {
      if (o.before.status === o.status) return;
      const base = {
        user: o.before.user,
        device: deviceOf(o.before.device, o.before.grant),
        ...(o.userId !== undefined ? { userId: o.userId } : {}),
      };
      const detail = { session_id: o.before.sessionId, method: o.before.method, didit_status: o.diditStatus };
      if (o.status === 'approved') await emit({ ...base, type: 'device.trusted', detail });
      if (o.status === 'declined') await emit({ ...base, type: 'stepup.declined', detail });
      if (o.status === 'retry') await emit({ ...base, type: 'stepup.abandoned', detail });
      // A reviewer's late Declined (or any later non-approved verdict) took back what this session trusted.
      if (o.before.status === 'approved')
        await emit({
          ...base,
          type: 'device.revoked',
          detail: { ...detail, reason: o.status === 'declined' ? 'declined' : 'verdict_changed' },
        });
    },
    /** A user or the API revoked one device (`device` set) or erased the user (every device). */
    async deviceRevoked(o: {
      readonly user: string;
      readonly userId: string;
      readonly device?: string;
      readonly reason: 'user' | 'erase';
    }): Promise<void> {
      await emit({
        type: 'device.revoked',
        user: o.user,
        userId: o.userId,
        ...(o.device ? { device: { id: o.device } } : {}),
        detail: { reason: o.reason, all_devices: o.device === undefined },
      });
    },
    /** Every decide: `decision.denied` for a DENY, and `decision` when EVENTS_DECISIONS is on. Not awaited by the decide. */
    decided(o: DecideFacts): void {
      const denied = o.decision.action === 'DENY';
      if (!denied && !deps.decisions) return;
      const facts = {
        user: o.enriched.user,
        userId: o.userId,
        device: deviceOf(o.enriched.device, o.enriched.grant),
        detail: {
          decision_id: o.decisionId,
          action: o.decision.action,
          score: o.decision.score,
          purpose: o.purpose,
          rules: o.decision.reasons.map((r) => r.rule),
          ruleset: o.decision.ruleset,
          degraded: o.decision.degraded,
          verification: o.verification,
        },
      };
      if (denied) void emit({ ...facts, type: 'decision.denied' });
      if (deps.decisions) void emit({ ...facts, type: 'decision' });
    },
  };
}

export type EventSink = ReturnType<typeof createEventSink>;
