import type { DecisionRecord } from '../../src/store/decision-records.js';

/** A PASSIVE step-up's decision record, open for ten minutes from `at`; `over` replaces any field. */
export function stepUpRecord(
  id: string,
  session: string,
  at: number,
  over: Partial<DecisionRecord> = {},
): DecisionRecord {
  return {
    id,
    at,
    user: 'u',
    device: 'd',
    action: 'PASSIVE',
    score: 0,
    rules: [],
    shadow: [],
    ruleset: 'h',
    degraded: [],
    purpose: 'login',
    signals: {},
    stepUp: { session, method: 'PASSIVE', expiresAt: at + 600_000 },
    ...over,
  };
}
