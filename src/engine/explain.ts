import { evaluate, type Decision, type EvaluationInput } from './evaluate.js';
import { rank, type Rung } from './ladder.js';
import type { CompiledRuleset } from './ruleset.js';
import { SIGNALS, type SignalSpec, type Signals, type SignalValue } from './signals.js';

export interface Counterfactual {
  readonly signal: string;
  readonly from: SignalValue | undefined;
  readonly to: SignalValue;
  readonly action: Rung;
}

export interface Explanation {
  readonly decision: Decision;
  /** Single-signal changes that move the action exactly one rung down, smallest first. */
  readonly lower: readonly Counterfactual[];
  /** ... and one rung up. */
  readonly higher: readonly Counterfactual[];
}

/** Values worth trying for a signal: the flip of a bool, and the literals the rules compare it with. */
function candidates(spec: SignalSpec, current: SignalValue | undefined, ruleset: CompiledRuleset): SignalValue[] {
  if (spec.type === 'bool') return current === undefined ? [true, false] : [!current];
  const texts = ruleset.rules.filter((r) => r.reads.includes(spec.name)).map((r) => r.when);
  if (spec.type === 'string') {
    const literals = texts.flatMap((t) => [...t.matchAll(/"([^"\\]{0,64})"/g)].map((m) => m[1]!));
    return [...new Set(['', ...literals])].filter((v) => v !== current);
  }
  if (spec.type === 'map') return [];
  const numbers = texts.flatMap((t) => [...t.matchAll(/(?<![\w.])(\d+(?:\.\d+)?)/g)].map((m) => Number(m[1])));
  const values = new Set<number>([0]);
  for (const n of numbers)
    for (const v of [n - 1, n, n + 1]) if (v >= 0) values.add(spec.type === 'int' ? Math.round(v) : v);
  return [...values].filter((v) => v !== current);
}

const distance = (a: SignalValue | undefined, b: SignalValue): number =>
  typeof a === 'number' && typeof b === 'number' ? Math.abs(a - b) : 0;

/** One decision with every rule's outcome and the smallest single-signal changes that move it. */
export function explain(ruleset: CompiledRuleset, input: EvaluationInput): Explanation {
  const decision = evaluate(ruleset, { ...input, explainAll: true });
  const lower: Counterfactual[] = [];
  const higher: Counterfactual[] = [];
  for (const spec of SIGNALS as readonly SignalSpec[]) {
    const from = input.signals[spec.name as keyof Signals];
    for (const to of candidates(spec, from, ruleset)) {
      const action = evaluate(ruleset, { ...input, signals: { ...input.signals, [spec.name]: to } }).action;
      const step = rank(action) - rank(decision.action);
      if (step === -1) lower.push({ signal: spec.name, from, to, action });
      if (step === 1) higher.push({ signal: spec.name, from, to, action });
    }
  }
  const order = (a: Counterfactual, b: Counterfactual) =>
    distance(a.from, a.to) - distance(b.from, b.to) || a.signal.localeCompare(b.signal);
  return { decision, lower: dedupe(lower.sort(order)), higher: dedupe(higher.sort(order)) };
}

/** Keeps the smallest change per signal. */
function dedupe(list: Counterfactual[]): Counterfactual[] {
  const seen = new Set<string>();
  return list.filter((c) => {
    if (seen.has(c.signal)) return false;
    seen.add(c.signal);
    return true;
  });
}
