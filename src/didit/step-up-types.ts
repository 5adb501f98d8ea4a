import type { StepUpRung } from '../engine/ladder.js';
import type { StepUpSession } from '../store/store.js';

export type Verification =
  | { status: 'not_needed' }
  | { status: 'created' | 'reused'; session_id: string; url: string; method: StepUpRung; workflow_id: string }
  | { status: 'unavailable'; method: StepUpRung; reason: string };

export interface OpenStepUp {
  readonly decisionId: string;
  readonly userId: string;
  readonly method: StepUpRung;
  readonly purpose: string;
  /** How the ruleset's vocabulary classes the purpose (undeclared counts as sensitive): reuse never crosses classes. */
  readonly purposeClass: 'normal' | 'sensitive';
  readonly ruleIds: readonly string[];
  readonly callback?: string;
  readonly portraitImage?: string;
  readonly grant: StepUpSession['grant'];
  readonly now: number;
}

/** Opens (or reuses) a liveness session for a step-up decision; never throws. */
export interface StepUpService {
  open(request: OpenStepUp): Promise<Verification>;
}
