/**
 * Decision records: what rule effectiveness joins. One record per decide (pseudonymised user, device
 * and network; the rules that fired, the action, the score and the signals the rules saw), the
 * outcome of its step-up (Didit's verdict, or a lapsed window), and a label a person gave it later.
 *
 * Kept apart from the session store: a different lifetime (DECISION_RECORD_TTL_DAYS, 90 days by
 * default) and a different reader (the report). Every identifier is already pseudonymised.
 */
import type { Rung, StepUpRung } from '../engine/ladder.js';

/** What became of a step-up. `superseded`: the same Didit session was handed to a later decision, which carries the outcome. */
export const STEP_UP_OUTCOMES = ['approved', 'declined', 'abandoned', 'in_review'] as const;
export type StepUpOutcome = (typeof STEP_UP_OUTCOMES)[number];
export type RecordedOutcome = StepUpOutcome | 'superseded';
/** Outcomes after which nothing changes the record (in_review is on the way to one of them). */
export const FINAL_OUTCOMES: readonly RecordedOutcome[] = ['approved', 'declined', 'abandoned', 'superseded'];

export const LABELS = ['fraud', 'legitimate'] as const;
export type FeedbackLabel = (typeof LABELS)[number];

export interface DecisionRecord {
  readonly id: string;
  readonly at: number;
  /** Pseudonyms (store/pseudonymise): never the raw ids or the IP. */
  readonly user: string;
  readonly device: string;
  readonly action: Rung;
  readonly score: number;
  /** The reasons' rule ids (enforced rules, floors, bypasses), in the engine's order. */
  readonly rules: readonly string[];
  readonly shadow: ReadonlyArray<{ readonly rule: string; readonly action: Rung }>;
  readonly ruleset: string;
  readonly degraded: readonly string[];
  readonly purpose: string;
  /** The signals the rules saw: what a labelled replay re-decides from. */
  readonly signals: Readonly<Record<string, unknown>>;
  /** The Didit session handed out for it, when the step-up was opened (not when Didit was unavailable). */
  readonly stepUp?: { readonly session: string; readonly method: StepUpRung; readonly expiresAt: number };
}

/** A record with its JSON, made once (the journal shares the signals' JSON with the decision log line). */
export interface EncodedRecord {
  readonly record: DecisionRecord;
  readonly json: string;
}

export const encodeRecord = (record: DecisionRecord): EncodedRecord => ({ record, json: JSON.stringify(record) });

export interface Label {
  readonly label: FeedbackLabel;
  readonly source: string;
  readonly note?: string;
  /** The API token's name that posted it. */
  readonly by: string;
  readonly at: number;
}

export interface StoredDecision {
  readonly record: DecisionRecord;
  readonly outcome?: { readonly outcome: RecordedOutcome; readonly at: number };
  readonly label?: Label;
}

export interface DecisionRecords {
  readonly kind: 'memory' | 'redis';
  /**
   * Keeps a decision for the retention. With a step-up, the session now points at this decision and
   * the open step-up is indexed by its window's end; a decision the same session was handed to before
   * is settled as `superseded` (its outcome belongs to this one).
   */
  put(record: DecisionRecord, now: number): Promise<void>;
  /**
   * `put` for a batch, in order (a later record of the same session supersedes an earlier one), in few
   * round trips. A partial failure rejects with `records`, the number not stored, when the store knows it.
   */
  putMany(batch: readonly EncodedRecord[], now: number): Promise<void>;
  get(id: string, now: number): Promise<StoredDecision | undefined>;
  /** The decision a Didit session was last handed out for. */
  decisionOf(session: string): Promise<string | undefined>;
  /**
   * Claims the step-up's outcome, atomically and once: a final outcome is taken once per decision,
   * `in_review` once before it. `session` must be the decision's session (a lapse passes its own).
   * `lapse`: only a step-up with no verdict at all (pending) is taken. Returns the record when this
   * call took it, so the caller counts it exactly once, across replicas.
   */
  settle(
    id: string,
    session: string,
    outcome: RecordedOutcome,
    now: number,
    lapse?: boolean,
  ): Promise<DecisionRecord | undefined>;
  /** Open step-ups whose window ended at or before `now` (at most `max`), for the sweep. */
  lapsed(now: number, max: number): Promise<Array<{ id: string; session: string }>>;
  /** Sets the decision's label, replacing any; undefined when the decision is unknown or expired. */
  label(id: string, label: Label, now: number): Promise<{ previous?: Label; record: DecisionRecord } | undefined>;
  /** Every live record made at or after `since`, oldest first (read-only: the report). */
  list(since: number, now: number): Promise<StoredDecision[]>;
  close(): Promise<void>;
}

/** FNV-1a: a stable shard for an id, the same in every process. */
export function shardOf(id: string, shards: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) hash = Math.imul(hash ^ id.charCodeAt(i), 0x01000193) >>> 0;
  return hash % shards;
}

export const isFinal = (outcome: RecordedOutcome | undefined): boolean =>
  outcome !== undefined && FINAL_OUTCOMES.includes(outcome);

/**
 * Whether a claim of `outcome` takes a step-up now at `current`: the one rule both stores apply (the
 * Redis script spells it again in Lua).
 */
export function claimable(current: RecordedOutcome | undefined, outcome: RecordedOutcome, lapse: boolean): boolean {
  if (isFinal(current)) return false;
  if (lapse) return current === undefined;
  if (outcome === 'in_review') return current === undefined;
  return true;
}
