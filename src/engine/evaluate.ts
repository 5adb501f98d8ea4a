import { toCelContext } from './cel-env.js';
import { higher, rank, rungForScore, type Rung } from './ladder.js';
import type { BypassContext, CompiledRule, CompiledRuleset, Policy } from './ruleset.js';
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

/** A decision's fields, writable only while `evaluate` builds one; everyone else sees `Decision`. */
interface DecisionDraft {
  action: Rung;
  score: number;
  reasons: readonly Reason[];
  shadow: readonly ShadowResult[];
  /** Failed inputs plus `signals` when a needed signal was unknown without a failed input. */
  degraded: readonly string[];
  /** Signals a rule or the SKIP check needed but could not read. */
  unknown: readonly string[];
  ruleset: string;
  /** Every rule's outcome, for explain and replay. */
  results: readonly RuleResult[];
  /** The bypass that shaped this decision, if any. */
  bypass?: string;
  /** The class of `request.purpose` in the ruleset's vocabulary (absent when no purpose was given). */
  purposeClass?: PurposeClass;
}

export type Decision = Readonly<DecisionDraft>;

const REQUIRED_FOR_SKIP: readonly string[] = SIGNALS.filter((s) => 'requiredForSkip' in s && s.requiredForSkip).map(
  (s) => s.name,
);

function formatValue(value: SignalValue | undefined): string {
  if (value === undefined) return 'unknown';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : value.toFixed(2);
  if (typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

/**
 * The signals as the rules see them: the input's, with `request.purpose_class` from the ruleset's
 * vocabulary when a purpose was given (the vocabulary wins over a supplied value). Read through
 * this view, not set on a copy: a decide's sixty-odd signals were cloned to add that one.
 */
interface SignalView {
  readonly signals: Signals;
  /** Set when `request.purpose` is a string: what `request.purpose_class` reads as. */
  readonly purposeClass: PurposeClass | undefined;
}

const PURPOSE_CLASS = 'request.purpose_class';

function read(view: SignalView, name: string): SignalValue | undefined {
  if (name === PURPOSE_CLASS && view.purposeClass !== undefined) return view.purposeClass;
  return view.signals[name as keyof Signals];
}

function because(rule: CompiledRule, view: SignalView): string {
  if (rule.reads.length === 0) return rule.description;
  return rule.reads.map((name) => `${name}=${formatValue(read(view, name))}`).join(', ');
}

function runRule(rule: CompiledRule, context: ReturnType<typeof toCelContext>): RuleOutcome {
  try {
    return rule.run(context) === true ? 'fired' : 'not_fired';
  } catch {
    // "No such key" (an unknown signal) or any other runtime error: never read as false.
    return 'unknown';
  }
}

function viewOf(ruleset: CompiledRuleset, signals: Signals): SignalView {
  const purpose = signals['request.purpose'];
  return {
    signals,
    purposeClass: typeof purpose === 'string' ? classifyPurpose(ruleset.purposes, purpose) : undefined,
  };
}

/** What the rules said, before the score band, the floors and any bypass. */
interface RulesOutcome {
  readonly results: RuleResult[];
  readonly reasons: Reason[];
  readonly firedShadow: CompiledRule[];
  readonly unknown: Set<string>;
  readonly score: number;
  /** The highest `min_action` of the enforced rules that fired. */
  readonly minimum: Rung;
  /** An enforced rule could not be evaluated (it read an unknown signal). */
  readonly enforceUnknown: boolean;
}

function runRules(ruleset: CompiledRuleset, view: SignalView, input: EvaluationInput): RulesOutcome {
  const context = toCelContext(view.signals, view.purposeClass);
  const results: RuleResult[] = [];
  const reasons: Reason[] = [];
  const firedShadow: CompiledRule[] = [];
  const unknown = new Set<string>();
  let score = 0;
  let minimum: Rung = 'SKIP';
  let enforceUnknown = false;
  for (const rule of ruleset.rules) {
    if (rule.expiresAt !== undefined && input.now > rule.expiresAt) {
      results.push({ rule: rule.id, mode: rule.mode, outcome: 'expired', because: 'expired; skipped' });
      continue;
    }
    const outcome = runRule(rule, context);
    const text = outcome !== 'not_fired' || input.explainAll ? because(rule, view) : '';
    results.push({ rule: rule.id, mode: rule.mode, outcome, because: text });
    if (outcome === 'unknown') {
      for (const name of rule.reads) if (read(view, name) === undefined) unknown.add(name);
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
  return { results, reasons, firedShadow, unknown, score, minimum, enforceUnknown };
}

/** The floors this input is under: the decision goes below none of them, bypass or not. */
interface Floors {
  /** A signal needed for SKIP is unknown, or an enforced rule could not be evaluated. */
  readonly degraded: boolean;
  /** No verified history: `user.verified_count` is 0. */
  readonly coldStart: boolean;
  /** `request.purpose` is not declared in the ruleset's vocabulary. */
  readonly undeclared: boolean;
}

/** Which floors apply; adds the unknown signals needed for SKIP to `unknown`. */
function floorsFor(view: SignalView, rules: RulesOutcome): Floors {
  const { signals, purposeClass } = view;
  let missingForSkip = false;
  for (const name of REQUIRED_FOR_SKIP) {
    if (read(view, name) !== undefined) continue;
    rules.unknown.add(name);
    missingForSkip = true;
  }
  return {
    degraded: missingForSkip || rules.enforceUnknown,
    coldStart: signals['user.verified_count'] === 0,
    undeclared: purposeClass === 'undeclared',
  };
}

/** Raises `action` to each floor that applies, with a reason for each floor that raised it. */
function applyFloors(
  action: Rung,
  floors: Floors,
  policy: Policy,
  signals: Signals,
  unknown: ReadonlySet<string>,
  reasons: Reason[],
): Rung {
  if (floors.degraded && rank(action) < rank(policy.degradedFloor)) {
    action = policy.degradedFloor;
    reasons.push({ rule: 'floor:degraded', because: `unknown: ${[...unknown].sort().join(', ')}` });
  }
  if (floors.coldStart && rank(action) < rank(policy.coldStartFloor)) {
    action = policy.coldStartFloor;
    reasons.push({ rule: 'floor:cold-start', because: 'user.verified_count=0 (no verified history)' });
  }
  // Here, not only in the shipped rules: a rules edit must not be able to make an unknown purpose skip.
  if (floors.undeclared && rank(action) < rank(UNDECLARED_PURPOSE_FLOOR)) {
    action = UNDECLARED_PURPOSE_FLOOR;
    reasons.push({
      rule: 'floor:undeclared-purpose',
      because: `request.purpose=${JSON.stringify(signals['request.purpose'])} is not declared in purposes.yaml`,
    });
  }
  return action;
}

/**
 * A bypass may lower friction down to its `lowest` rung, but never a DENY that a rule demands, and
 * never below the floors: an exception is no licence to skip on unknown inputs or no history.
 * Returns the lowered action and the bypass, or undefined when no bypass lowers this decision.
 */
function applyBypass(
  ruleset: CompiledRuleset,
  input: EvaluationInput,
  action: Rung,
  minimum: Rung,
  floors: Floors,
  reasons: Reason[],
): { action: Rung; bypass: string } | undefined {
  const context = input.bypass;
  if (!context) return undefined;
  const bypass = ruleset.bypasses?.find((b) => b.expiresAt > input.now && b.matches(context));
  if (!bypass || minimum === 'DENY' || rank(action) <= rank(bypass.lowest)) return undefined;
  const policy = ruleset.policy;
  let floor = floors.degraded ? higher(bypass.lowest, policy.degradedFloor) : bypass.lowest;
  if (floors.coldStart) floor = higher(floor, policy.coldStartFloor);
  if (floors.undeclared) floor = higher(floor, UNDECLARED_PURPOSE_FLOOR);
  if (rank(floor) >= rank(action)) return undefined;
  reasons.push({ rule: `bypass:${bypass.id}`, because: `${bypass.reason} (lowered ${action} to ${floor})` });
  return { action: floor, bypass: bypass.id };
}

/**
 * Precedence, each step working on what the one before left: rules (score and `min_action`) →
 * score band → floors (degraded, cold start, undeclared purpose: they only raise) → bypass (only
 * lowers, never below a floor nor a rule's DENY) → shadow (reports what each shadow rule would have
 * made of the final action; it never changes it).
 */
function evaluateUnsafe(ruleset: CompiledRuleset, input: EvaluationInput): Decision {
  const view = viewOf(ruleset, input.signals);
  const { signals, purposeClass } = view;
  const policy = ruleset.policy;
  const rules = runRules(ruleset, view, input);
  const { reasons, unknown, score } = rules;

  let action = higher(rungForScore(policy.scoreBands, score), rules.minimum);
  const floors = floorsFor(view, rules);
  action = applyFloors(action, floors, policy, signals, unknown, reasons);
  const bypassed = applyBypass(ruleset, input, action, rules.minimum, floors, reasons);
  if (bypassed) action = bypassed.action;

  const shadow: ShadowResult[] = rules.firedShadow.map((rule) => {
    const withRule = higher(rungForScore(policy.scoreBands, score + rule.score), rule.minAction ?? 'SKIP');
    // In the reply schema's order: the decide writes its reply with JSON.stringify, not the schema.
    return { rule: rule.id, because: because(rule, view), action: higher(action, withRule) };
  });

  const degraded = new Set(input.degraded ?? []);
  if (unknown.size > 0 && degraded.size === 0) degraded.add('signals');
  const decision: DecisionDraft = {
    action,
    score,
    reasons,
    shadow,
    degraded: [...degraded].sort(),
    unknown: [...unknown].sort(),
    ruleset: ruleset.hash,
    results: rules.results,
  };
  if (bypassed) decision.bypass = bypassed.bypass;
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
      reasons: [
        { rule: 'floor:engine-error', because: `evaluation failed: ${(error as Error)?.message ?? 'unknown'}` },
      ],
      shadow: [],
      degraded: [...new Set([...(input?.degraded ?? []), 'rules'])].sort(),
      unknown: [],
      ruleset: ruleset?.hash ?? 'none',
      results: [],
    };
  }
}
