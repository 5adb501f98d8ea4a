/**
 * The store contract. Every identifier that reaches a store is already pseudonymised (see
 * pseudonymise.ts); a store never sees a raw user id, device id or IP. Each method is one round
 * trip on Redis and atomic there. Time is always an argument (epoch ms).
 */
import type { StepUpRung } from '../engine/ladder.js';

export interface UaFamily {
  readonly browser: string;
  readonly os: string;
}

export interface Place {
  /** Coarse coordinates only: rounded to 0.1°. */
  readonly lat: number;
  readonly lon: number;
  readonly accuracyKm: number;
  /** Pseudonymised /24 (IPv4) or /64 (IPv6) of the address the place came from. */
  readonly travelNet: string;
}

export interface Sighting {
  readonly user: string;
  readonly device: string;
  readonly ip: string;
  readonly prefix: string;
  readonly asn?: number;
  readonly country?: string;
}

export interface History {
  readonly deviceKnown: boolean;
  readonly deviceSeenCount: number;
  readonly deviceFirstSeenAt: number | undefined;
  readonly deviceUa: UaFamily | undefined;
  readonly ipKnown: boolean;
  readonly prefixKnown: boolean;
  readonly asnKnown: boolean;
  readonly countryKnown: boolean;
  readonly verifiedCount: number;
  readonly lastVerifiedAt: number | undefined;
  readonly lastPlace: (Place & { readonly at: number }) | undefined;
  readonly decides1h: number;
  readonly distinctIps1h: number;
  readonly declines24h: number;
  /** The part of `declines24h` declined on the device of this sighting (the rest was elsewhere). */
  readonly deviceDeclines24h: number;
}

/** A sighting the user proved by an Approved step-up: what the store then trusts for `ttlMs`. */
export interface TrustGrant extends Sighting {
  /** The city's name at decide time, for notifications (events); the store's trust keeps no city. */
  readonly city?: string;
  readonly place?: Place;
  readonly ua?: UaFamily;
  /** The Didit session whose Approved verdict earned this trust; revoking it undoes exactly this grant. */
  readonly grantedBy: string;
  readonly ttlMs: number;
}

export type SessionStatus = 'pending' | 'approved' | 'declined' | 'in_review' | 'retry';

/**
 * Which status wins a tie. Events apply in signed-timestamp order; two of the same second resolve to
 * the more cautious verdict, so a Declined and an Approved of the same second leave no trust. A
 * progress event (Not Started, In Progress) precedes every verdict and so loses every tie.
 */
export const STATUS_CAUTION: Readonly<Record<SessionStatus, number>> = {
  pending: 0,
  approved: 1,
  retry: 2,
  in_review: 3,
  declined: 4,
};

/** Whether an event (status, signed timestamp) replaces the stored one: newer, or as new and more cautious. */
export function supersedes(
  stored: { status: SessionStatus; lastEventTs: number },
  change: { status: SessionStatus; eventTs: number },
): boolean {
  if (change.eventTs !== stored.lastEventTs) return change.eventTs > stored.lastEventTs;
  return STATUS_CAUTION[change.status] > STATUS_CAUTION[stored.status];
}

/**
 * An authentic Didit delivery that could not be applied, kept so it can be replayed after a fix. The
 * delivery itself (body and signature headers) is sealed; the id is a hash of the bytes, so the same
 * delivery is stored once.
 */
export interface DeadLetter {
  readonly id: string;
  readonly at: number;
  readonly reason: string;
  readonly sealed: string;
}

export interface StepUpSession {
  readonly sessionId: string;
  readonly user: string;
  readonly device: string;
  readonly method: StepUpRung;
  readonly workflowId: string;
  /** The hosted URL, sealed (it embeds Didit's session token). */
  readonly url: string;
  /** When the service last handed this session out (Didit may have created it days before): the pending window starts here. */
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly status: SessionStatus;
  /** Didit's status text of the latest applied event, and that event's signed timestamp. */
  readonly diditStatus: string;
  readonly updatedAt: number;
  readonly lastEventTs: number;
  /** What an Approved verdict will trust: the network and device seen at decide time. */
  readonly grant: Omit<TrustGrant, 'grantedBy' | 'ttlMs'>;
  /** The class of the purpose it was handed out for (`normal`, `sensitive`); part of the reuse key. */
  readonly purposeClass?: string;
  /**
   * Set once the session has been handed to a context other than the one it was first bound to (a
   * lapsed, unopened hand-out Didit gave back to another device, network or purpose). The earlier
   * link still works at Didit, so its Approved teaches trust only when Didit saw the selfie taken
   * from this binding's network.
   */
  readonly rebound?: boolean;
}

/**
 * What a pending step-up may be reused for: the same device, network prefix, method and purpose
 * class. Anything wider lets one sign-in's selfie teach trust to another sign-in's network.
 */
export interface PendingContext {
  readonly user: string;
  readonly device: string;
  readonly prefix: string;
  readonly method: StepUpRung;
  readonly purposeClass: string;
}

/** The reuse key of a session record (records stored before purpose classes count as `normal`). */
export function pendingContextOf(session: StepUpSession): PendingContext {
  return {
    user: session.user,
    device: session.device,
    prefix: session.grant.prefix,
    method: session.method,
    purposeClass: session.purposeClass ?? 'normal',
  };
}

/** Whether `existing` is a live pending binding of another context, which a new hand-out must not take over. */
export function heldElsewhere(existing: StepUpSession | undefined, next: StepUpSession, now: number): boolean {
  return (
    !!existing &&
    !sameContext(pendingContextOf(existing), pendingContextOf(next)) &&
    existing.status === 'pending' &&
    existing.expiresAt > now
  );
}

export function sameContext(a: PendingContext, b: PendingContext): boolean {
  return (
    a.user === b.user &&
    a.device === b.device &&
    a.prefix === b.prefix &&
    a.method === b.method &&
    a.purposeClass === b.purposeClass
  );
}

/** One field name per reuse context, for the per-user pending index. */
export function pendingField(c: Omit<PendingContext, 'user'>): string {
  return `${c.device}:${c.method}:${c.prefix}:${c.purposeClass}`;
}

/** A session record lives `claimMs` from its last hand-out, on the caller's clock (as its Redis TTL does on Redis's). */
export function sessionRecordLive(session: StepUpSession, retention: Retention, now: number): boolean {
  return now - session.createdAt < retention.claimMs;
}

export interface TrustedDevice {
  readonly device: string;
  readonly firstVerifiedAt: number;
  readonly lastSeenAt: number;
  readonly expiresAt: number;
}

export interface Retention {
  readonly trustMs: number;
  readonly historyMs: number;
  readonly pendingMs: number;
  readonly claimMs: number;
}

export const DEFAULT_RETENTION: Retention = {
  trustMs: 90 * 24 * 3600_000,
  historyMs: 30 * 24 * 3600_000,
  pendingMs: 10 * 60_000,
  // Sessions are kept for the status API well past the pending window; claims past Didit's retries.
  claimMs: 24 * 3600_000,
};

export const CAPS = { devices: 50, networks: 100, recentEvents: 200, deadLetters: 10_000 } as const;

/**
 * The user spent the decides of this minute: nothing was read or recorded. Thrown by `observe`, so
 * the limit costs no round trip of its own on the login path.
 */
export class UserRateLimited extends Error {
  constructor(readonly retryAfterMs: number) {
    super('user rate limit exceeded');
  }
}

export interface ObserveLimit {
  /** Decides one user may make per fixed minute window, shared by every replica on the same store. */
  readonly perMinute: number;
}

/**
 * Moves what a user has under the previous key's pseudonym to the current one (ID_HASH_KEY rotation).
 * `renames` pairs the previous pseudonym of each identifier this request knows (device, address,
 * networks) with its current one: entries under it, wherever they sit, are renamed. Entries of
 * identifiers not seen yet keep their previous pseudonym until they are (reads of the user's other
 * devices find nothing under the current one, so they are renamed on their own next touch).
 */
export interface Migration {
  readonly from: string;
  readonly to: string;
  readonly renames: ReadonlyArray<readonly [string, string]>;
}

export interface Store {
  readonly kind: 'memory' | 'redis';
  /**
   * Reads the user's history and counters and records this sighting, atomically. With a limit, the
   * decide is counted first and, over the limit, rejected with UserRateLimited before anything else.
   */
  observe(sighting: Sighting, now: number, limit?: ObserveLimit): Promise<History>;
  /** The same read without recording anything (rules explain). */
  peek(sighting: Sighting, now: number): Promise<History>;
  /**
   * Binds a step-up session to this hand-out and indexes it for reuse in its context, atomically on
   * the session record: false (nothing written) while another context holds a live pending binding.
   */
  recordPending(session: StepUpSession, now: number): Promise<boolean>;
  /** A still-pending session handed out in exactly this context (device, prefix, method, purpose class), if any. */
  findPending(context: PendingContext, now: number): Promise<StepUpSession | undefined>;
  getSession(sessionId: string, now: number): Promise<StepUpSession | undefined>;
  /** Applies a status change when it supersedes the stored one (see `supersedes`); returns the stored session. */
  updateSession(
    sessionId: string,
    change: { status: SessionStatus; diditStatus: string; eventTs: number },
    now: number,
  ): Promise<StepUpSession | undefined>;
  /** Counts step-up sessions opened in the trailing window, adding this one: from this device, and for the whole user. */
  countSessionOpen(
    user: string,
    device: string,
    windowMs: number,
    now: number,
  ): Promise<{ device: number; user: number }>;
  trust(grant: TrustGrant, now: number): Promise<void>;
  /** Removes what one session's grant trusted. */
  revokeGrant(user: string, grantedBy: string, now: number): Promise<void>;
  /** Counts a declined step-up for the user, and for the device that asked for it when known. */
  recordDecline(user: string, now: number, device?: string): Promise<void>;
  /** True exactly once per key within `ttlMs`. */
  claimOnce(key: string, ttlMs: number, now: number, owner?: string): Promise<boolean>;
  /**
   * Gives a claim back when applying its event failed, so the retried delivery can apply it. With
   * `owner`, only a claim that owner holds: a claim whose reply timed out may have been taken (Redis
   * ran it) or not (a concurrent delivery holds it), and only the first must be given back.
   */
  releaseClaim(key: string, owner?: string): Promise<void>;
  /** Keeps an unapplied delivery for `ttlMs` (idempotent per id). */
  putDeadLetter(letter: DeadLetter, ttlMs: number, now: number): Promise<void>;
  /** Dead letters still within their lifetime, oldest first. */
  listDeadLetters(now: number): Promise<DeadLetter[]>;
  removeDeadLetter(id: string): Promise<void>;
  /**
   * Merges the `from` user's families into the `to` user's and renames entries, atomically on one
   * Redis (on a Cluster the two users live in two slots: copy, merge, then remove what was copied,
   * each step idempotent). A merge never replaces a newer entry: a grant made meanwhile survives.
   */
  migrate(migration: Migration, now: number): Promise<void>;
  listDevices(user: string, now: number): Promise<TrustedDevice[]>;
  revokeDevice(user: string, device: string, now: number): Promise<boolean>;
  erase(user: string): Promise<void>;
  ping(): Promise<boolean>;
  close(): Promise<void>;
}
