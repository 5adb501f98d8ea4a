import { isStepUp, type StepUpRung } from '../engine/ladder.js';
import type {
  DecisionRecord,
  DecisionRecords,
  FeedbackLabel,
  Label,
  RecordedOutcome,
  StepUpOutcome,
} from '../store/decision-records.js';
import type { SessionStatus, StepUpSession } from '../store/store.js';
import {
  createDecisionJournal,
  type DecisionLineSink,
  type JournalDeps,
  type JournalFacts,
} from './decision-journal.js';

const NO_LINES: DecisionLineSink = { enabled: () => false, line: () => '', write: () => undefined };

/** What a decide hands over (the journal's facts: its log line and its record). */
export type DecidedFacts = JournalFacts;

export interface EffectivenessCounters {
  /** A step-up's outcome, once per rule that raised it (`shadow`: a shadow rule that would have). */
  outcome(rule: string, method: StepUpRung, outcome: StepUpOutcome, shadow: boolean): void;
  feedback(rule: string, label: FeedbackLabel): void;
  /** A record, outcome or sweep the store did not take: that much evidence is missing, nothing else changes. */
  failed(operation: 'record' | 'outcome' | 'sweep'): void;
}

export interface EffectivenessDeps {
  readonly records: DecisionRecords;
  readonly counters: EffectivenessCounters;
  /** A bounded metric label for a rule id: the live ruleset's ids and the floors, anything else one fixed value. */
  readonly ruleLabel: (rule: string) => string;
  /** How long a step-up may take before it counts as abandoned (PENDING_TTL_MINUTES). */
  readonly pendingTtlMs: number;
  readonly clock: () => number;
  readonly log: { warn(obj: object, msg: string): void };
  /** Where the decision lines go; without, the journal writes records only. */
  readonly lines?: DecisionLineSink;
  /** The journal's batching (decision-journal.ts): flush interval, batch size, writes in flight. */
  readonly journal?: Pick<JournalDeps, 'flushMs' | 'maxBatch' | 'maxInFlight'>;
}

const OUTCOME_OF: Partial<Record<SessionStatus, StepUpOutcome>> = {
  approved: 'approved',
  declined: 'declined',
  in_review: 'in_review',
  retry: 'abandoned',
};

/**
 * Joins each step-up's outcome to the rules that raised it. The decide hands over its facts (not
 * awaited: a record write never slows a sign-in); the webhook hands over each applied verdict; a
 * sweep settles the step-ups whose window lapsed without one. Every outcome is claimed atomically
 * on the decision's record, so it is counted once whichever replica or delivery gets there first.
 */
export function createEffectiveness(deps: EffectivenessDeps) {
  const journal = createDecisionJournal({
    records: deps.records,
    lines: deps.lines ?? NO_LINES,
    pendingTtlMs: deps.pendingTtlMs,
    clock: deps.clock,
    failed: (records) => {
      for (let i = 0; i < records; i++) deps.counters.failed('record');
    },
    log: deps.log,
    ...deps.journal,
  });

  const count = (record: DecisionRecord, outcome: RecordedOutcome) => {
    if (outcome === 'superseded' || !record.stepUp) return;
    const method = record.stepUp.method;
    for (const rule of new Set(record.rules)) deps.counters.outcome(deps.ruleLabel(rule), method, outcome, false);
    // Partial evidence: only the sign-ins that stepped up anyway show what a shadow rule's step-up would meet.
    for (const rule of new Set(record.shadow.filter((s) => isStepUp(s.action)).map((s) => s.rule)))
      deps.counters.outcome(deps.ruleLabel(rule), method, outcome, true);
  };

  const api = {
    /** Every decide: its log line and its record, written by the journal off the request path. */
    decided(facts: DecidedFacts): void {
      journal.add(facts);
    },

    /**
     * A verdict the webhook applied. Throws when the store fails, so the delivery is answered 503 and
     * Didit's retry counts it (the claim makes the retry count it once).
     */
    async stepUpOutcome(applied: { readonly before: StepUpSession; readonly status: SessionStatus }): Promise<void> {
      const outcome = OUTCOME_OF[applied.status];
      if (!outcome) return;
      const session = applied.before.sessionId;
      await journal.settled();
      const id = await deps.records.decisionOf(session);
      if (!id) return;
      const record = await deps.records.settle(id, session, outcome, deps.clock());
      if (record) count(record, outcome);
    },

    /** Step-ups whose window lapsed with no verdict are abandoned: claimed once across replicas. */
    async sweep(now = deps.clock(), batch = 500, maxBatches = 10): Promise<number> {
      let settled = 0;
      try {
        await journal.settled();
        for (let round = 0; round < maxBatches; round++) {
          const due = await deps.records.lapsed(now, batch);
          for (const { id, session } of due) {
            const record = await deps.records.settle(id, session, 'abandoned', now, true);
            if (record) {
              count(record, 'abandoned');
              settled += 1;
            }
          }
          if (due.length < batch) break;
        }
      } catch (error) {
        deps.counters.failed('sweep');
        deps.log.warn({ err: (error as Error)?.message }, 'rule effectiveness sweep failed; the next one retries');
      }
      return settled;
    },

    /** A label from someone who learned the truth later; undefined for an unknown or expired decision. */
    async feedback(
      id: string,
      given: Omit<Label, 'at'>,
    ): Promise<{ previous?: Label; record: DecisionRecord } | undefined> {
      const now = deps.clock();
      const label: Label = { ...given, at: now };
      await journal.settled();
      const result = await deps.records.label(id, label, now);
      // A decision's first label counts; a replacement is kept in the record (the report reads it) but
      // not counted again, so flipping one decision's label cannot inflate the per-rule series.
      if (result && result.previous === undefined)
        for (const rule of new Set(result.record.rules)) deps.counters.feedback(deps.ruleLabel(rule), label.label);
      return result;
    },

    /** Writes the journal's batch and waits for its records, at most `maxMs`: a hung store never holds a shutdown. */
    flush(maxMs = 2000): Promise<void> {
      return journal.settled(maxMs);
    },

    /** Writes the journal's lines now (a reader of the log sees every answered decide). */
    writeLines(): void {
      journal.writeNow();
    },

    /** Runs the sweep every `intervalMs` (unref'd); returns the stop. */
    start(intervalMs: number): () => void {
      let running = false;
      const timer = setInterval(() => {
        if (running) return;
        running = true;
        void api.sweep().finally(() => (running = false));
      }, intervalMs);
      timer.unref();
      return () => clearInterval(timer);
    },
  };
  return api;
}

export type Effectiveness = ReturnType<typeof createEffectiveness>;
