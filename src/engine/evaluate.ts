import { toCelContext } from './cel-env.js';
import { higher, rank, rungForScore, type Rung } from './ladder.js';
import type { BypassContext, CompiledRule, CompiledRuleset } from './ruleset.js';
import { SIGNALS, type Signals, type SignalValue } from './signals.js';
import { classifyPurpose, UNDECLARED_PURPOSE_FLOOR, type PurposeClass } from './purposes.js';

export interface EvaluationInput {
  readonly signals: Signals;
  /** Inputs that failed during enrichment (`store`, `geoip`, `lists`, ...): reported, and they trigger the degraded floor. */
  readonly degraded?: readonly string[];
  /** Epoch ms; only used to skip expired rules, so the engine stays a pure function of its input. */
  readonly now: number;
  /** Who and where, for bypass matching (absent: no bypass can apply). */
  readonly bypass?: BypassContext;
  /** Write the `because` text of rules that did not fire too (explain, the playground); off on the hot path. */
  readonly explainAll?: boolean;
}

export type RuleOutcome = 'fired' | 'not_fired' | 'unknown' | 'expired';

export interface RuleResult {
  readonly rule: string;
  readonly mode: 'enforce' | 'shadow';
  readonly outcome: RuleOutcome;
  readonly because: string;
}

export interface Reason {
  readonly rule: string;
  readonly because: string;
}

export interface ShadowResult extends Reason {
  readonly action: Rung;
}

export interface Decision {
  readonly action: Rung;
  readonly score: number;
  readonly reasons: readonly Reason[];
  readonly shadow: readonly ShadowResult[];
  /** Failed inputs plus `signals` when a needed signal was unknown without a failed input. */
  readonly degraded: readonly string[];
  /** Signals a rule or the SKIP check needed but could not read. */
  readonly unknown: readonly string[];
  readonly ruleset: string;
  /** Every rule's outcome, for explain and replay. */
  readonly results: readonly RuleResult[];
  /** The bypass that shaped this decision, if any. */
  readonly bypass?: string;
  /** The class of `request.purpose` in the ruleset's vocabulary (absent when no purpose was given). */
  readonly purposeClass?: PurposeClass;
}

const REQUIRED_FOR_SKIP: readonly string[] = SIGNALS.filter((s) => 'requiredForSkip' in s && s.requiredForSkip).map((s) => s.name);

function formatValue(value: SignalValue | undefined): string {
  if (value === undefined) return 'unknown';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : value.toFixed(2);
  if (typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

export function because(rule: CompiledRule, signals: Signals): string {
  if (rule.reads.length === 0) return rule.description;
  return rule.reads.map((name) => `${name}=${formatValue(signals[name as keyof Signals])}`).join(', ');
}

function runRule(rule: CompiledRule, context: ReturnType<typeof toCelContext>): RuleOutcome {
  try {
    return rule.run(context) === true ? 'fired' : 'not_fired';
  } catch {
    // "No such key" (an unknown signal) or any other runtime error: never read as false.
    return 'unknown';
  }
}

/** The signals with `request.purpose_class` derived from the ruleset's vocabulary (the vocabulary wins over a supplied value). */
function withPurposeClass(ruleset: CompiledRuleset, signals: Signals): { signals: Signals; purposeClass: PurposeClass | undefined } {
  const purpose = signals['request.purpose'];
  if (typeof purpose !== 'string') return { signals, purposeClass: undefined };
  const purposeClass = classifyPurpose(ruleset.purposes, purpose);
  return { signals: { ...signals, 'request.purpose_class': purposeClass }, purposeClass };
}

function evaluateUnsafe(ruleset: CompiledRuleset, input: EvaluationInput): Decision {
  const { now } = input;
  const { signals, purposeClass } = withPurposeClass(ruleset, input.signals);
  const context = toCelContext(signals);
  const policy = ruleset.policy;
  const results: RuleResult[] = [];
  const reasons: Reason[] = [];
  const firedShadow: CompiledRule[] = [];
  const unknown = new Set<string>();
  let score = 0;
  let minimum: Rung = 'SKIP';
  let enforceUnknown = false;

  for (const rule of ruleset.rules) {
    if (rule.expiresAt !== undefined && now > rule.expiresAt) {
      results.push({ rule: rule.id, mode: rule.mode, outcome: 'expired', because: 'expired; skipped' });
      continue;
    }
    const outcome = runRule(rule, context);
    const text = outcome !== 'not_fired' || input.explainAll ? because(rule, signals) : '';
    results.push({ rule: rule.id, mode: rule.mode, outcome, because: text });
    if (outcome === 'unknown') {
      for (const name of rule.reads) if (signals[name as keyof Signals] === undefined) unknown.add(name);
      if (rule.mode === 'enforce') enforceUnknown = true;
      continue;
    }
    if (outcome !== 'fired') continue;
    if (rule.mode === 'shadow') {
      firedShadow.push(rule);
      continue;
    }
    score += rule.score;
    if (rule.minAction) minimum = higher(minimum, rule.minAction);
    reasons.push({ rule: rule.id, because: text });
  }

  let action = higher(rungForScore(policy.scoreBands, score), minimum);

  for (const name of REQUIRED_FOR_SKIP) if (signals[name as keyof Signals] === undefined) unknown.add(name);
  const missingForSkip = REQUIRED_FOR_SKIP.some((name) => signals[name as keyof Signals] === undefined);
  if ((missingForSkip || enforceUnknown) && rank(action) < rank(policy.degradedFloor)) {
    action = policy.degradedFloor;
    reasons.push({ rule: 'floor:degraded', because: `unknown: ${[...unknown].sort().join(', ')}` });
  }
  if (signals['user.verified_count'] === 0 && rank(action) < rank(policy.coldStartFloor)) {
    action = policy.coldStartFloor;
    reasons.push({ rule: 'floor:cold-start', because: 'user.verified_count=0 (no verified history)' });
  }
  // Here, not only in the shipped rules: a rules edit must not be able to make an unknown purpose skip.
  const undeclared = purposeClass === 'undeclared';
  if (undeclared && rank(action) < rank(UNDECLARED_PURPOSE_FLOOR)) {
    action = UNDECLARED_PURPOSE_FLOOR;
    reasons.push({ rule: 'floor:undeclared-purpose', because: `request.purpose=${JSON.stringify(signals['request.purpose'])} is not declared in purposes.yaml` });
  }

  // A bypass may lower friction down to its `lowest` rung, but never a DENY that a rule demands,
  // and never below the floors: an exception is no licence to skip on unknown inputs or no history.
  let bypassUsed: string | undefined;
  const bypass = input.bypass ? ruleset.bypasses?.find((b) => b.expiresAt > now && b.matches(input.bypass!)) : undefined;
  if (bypass && minimum !== 'DENY' && rank(action) > rank(bypass.lowest)) {
    let floor = missingForSkip || enforceUnknown ? higher(bypass.lowest, policy.degradedFloor) : bypass.lowest;
    if (signals['user.verified_count'] === 0) floor = higher(floor, policy.coldStartFloor);
    if (undeclared) floor = higher(floor, UNDECLARED_PURPOSE_FLOOR);
    if (rank(floor) < rank(action)) {
      reasons.push({ rule: `bypass:${bypass.id}`, because: `${bypass.reason} (lowered ${action} to ${floor})` });
      action = floor;
      bypassUsed = bypass.id;
    }
  }

  const shadow: ShadowResult[] = firedShadow.map((rule) => {
    const withRule = higher(rungForScore(policy.scoreBands, score + rule.score), rule.minAction ?? 'SKIP');
    return { rule: rule.id, action: higher(action, withRule), because: because(rule, signals) };
  });

  const degraded = new Set(input.degraded ?? []);
  if (unknown.size > 0 && degraded.size === 0) degraded.add('signals');
  const decision: { -readonly [K in keyof Decision]: Decision[K] } = { action, score, reasons, shadow, degraded: [...degraded].sort(), unknown: [...unknown].sort(), ruleset: ruleset.hash, results };
  if (bypassUsed) decision.bypass = bypassUsed;
  if (purposeClass) decision.purposeClass = purposeClass;
  return decision;
}

/** A pure function of (ruleset, input). It never throws: a failure inside is a degraded decision. */
export function evaluate(ruleset: CompiledRuleset, input: EvaluationInput): Decision {
  try {
    return evaluateUnsafe(ruleset, input);
  } catch (error) {
    return {
      action: higher(ruleset.policy?.degradedFloor ?? 'PASSIVE', 'PASSIVE'),
      score: 0,
      reasons: [{ rule: 'floor:engine-error', because: `evaluation failed: ${(error as Error)?.message ?? 'unknown'}` }],
      shadow: [],
      degraded: [...new Set([...(input?.degraded ?? []), 'rules'])].sort(),
      unknown: [],
      ruleset: ruleset?.hash ?? 'none',
      results: [],
    };
  }
}
