import { isStepUp, type Rung } from '../engine/ladder.js';
import type { CompiledRuleset } from '../engine/ruleset.js';

/** The slice of a stored decision the report reads (structural: the store's DecisionRecords give it). */
export interface ReportedDecision {
  readonly record: {
    readonly id: string;
    readonly at: number;
    readonly action: Rung;
    readonly rules: readonly string[];
    readonly shadow: ReadonlyArray<{ readonly rule: string; readonly action: Rung }>;
    readonly stepUp?: { readonly method: string };
  };
  readonly outcome?: { readonly outcome: string };
  readonly label?: { readonly label: string };
}

const OUTCOMES = ['approved', 'declined', 'abandoned', 'in_review', 'pending'] as const;
type Outcome = (typeof OUTCOMES)[number];

export interface RuleEffect {
  readonly rule: string;
  /** `engine`: a floor or bypass; `removed`: named by records, gone from this ruleset. */
  readonly mode: 'enforce' | 'shadow' | 'engine' | 'removed';
  /** Decisions it fired on (a shadow rule: fired in shadow). */
  readonly fired: number;
  /** Step-ups it raised (a shadow rule: would have raised, on sign-ins that stepped up anyway). */
  readonly stepUps: number;
  readonly outcomes: Record<Outcome, number>;
  readonly fraud: number;
  readonly legitimate: number;
  /** fraud / (fraud + legitimate) over its labelled decisions; null without labels. */
  readonly precisionLabels: number | null;
  /** declined / (approved + declined) over its step-ups' verdicts (abandoned may be either); null without verdicts. */
  readonly precisionDeclines: number | null;
  /** approved / (approved + declined + abandoned): the friction it puts on good users; null without outcomes. */
  readonly approvalRate: number | null;
}

export interface EffectivenessReport {
  readonly since: number;
  readonly decisions: number;
  readonly stepUps: number;
  /** Step-ups whose session was handed again to a later decision, which carries the outcome. */
  readonly superseded: number;
  readonly labelled: { readonly fraud: number; readonly legitimate: number };
  readonly rules: readonly RuleEffect[];
  readonly shadow: readonly RuleEffect[];
  /** Rules of the ruleset that never fired. */
  readonly dead: readonly string[];
  /** Enforced rules that fired but never caused a step-up. */
  readonly noisy: readonly string[];
  /** Rules whose approval rate is at or above `frictionApproval` over at least `frictionMinimum` outcomes: friction only. */
  readonly frictionOnly: readonly string[];
}

export interface ReportOptions {
  readonly since: number;
  readonly frictionApproval?: number;
  readonly frictionMinimum?: number;
}

interface Tally {
  fired: number;
  stepUps: number;
  outcomes: Record<Outcome, number>;
  fraud: number;
  legitimate: number;
}

const ratio = (a: number, b: number): number | null => (b > 0 ? a / b : null);

/** Per rule: what it fired on, the step-ups it caused, what became of them and what people said. */
export function effectivenessReport(
  decisions: Iterable<ReportedDecision>,
  ruleset: Pick<CompiledRuleset, 'rules'>,
  options: ReportOptions,
): EffectivenessReport {
  const live = new Map<string, Tally>();
  const shadow = new Map<string, Tally>();
  const tally = (table: Map<string, Tally>, rule: string) => {
    let t = table.get(rule);
    if (!t)
      table.set(
        rule,
        (t = {
          fired: 0,
          stepUps: 0,
          outcomes: { approved: 0, declined: 0, abandoned: 0, in_review: 0, pending: 0 },
          fraud: 0,
          legitimate: 0,
        }),
      );
    return t;
  };
  for (const rule of ruleset.rules) tally(rule.mode === 'shadow' ? shadow : live, rule.id);

  let count = 0;
  let stepUps = 0;
  let superseded = 0;
  const labelled = { fraud: 0, legitimate: 0 };
  for (const d of decisions) {
    if (d.record.at < options.since) continue;
    count += 1;
    const outcome = d.outcome?.outcome ?? 'pending';
    const stepped = d.record.stepUp !== undefined && outcome !== 'superseded';
    if (d.record.stepUp && outcome === 'superseded') superseded += 1;
    if (stepped) stepUps += 1;
    const label = d.label?.label === 'fraud' || d.label?.label === 'legitimate' ? d.label.label : undefined;
    if (label) labelled[label] += 1;
    const add = (t: Tally, caused: boolean) => {
      t.fired += 1;
      if (caused) {
        t.stepUps += 1;
        if ((OUTCOMES as readonly string[]).includes(outcome)) t.outcomes[outcome as Outcome] += 1;
      }
      if (label) t[label] += 1;
    };
    for (const rule of new Set(d.record.rules)) add(tally(live, rule), stepped);
    const shadowRules = new Map(d.record.shadow.map((s) => [s.rule, s.action]));
    for (const [rule, action] of shadowRules) add(tally(shadow, rule), stepped && isStepUp(action));
  }

  const modes = new Map(ruleset.rules.map((r) => [r.id, r.mode]));
  const effect = (rule: string, t: Tally, mode: RuleEffect['mode']): RuleEffect => {
    const o = t.outcomes;
    return {
      rule,
      mode,
      fired: t.fired,
      stepUps: t.stepUps,
      outcomes: { ...o },
      fraud: t.fraud,
      legitimate: t.legitimate,
      precisionLabels: ratio(t.fraud, t.fraud + t.legitimate),
      precisionDeclines: ratio(o.declined, o.approved + o.declined),
      approvalRate: ratio(o.approved, o.approved + o.declined + o.abandoned),
    };
  };
  const order = (a: RuleEffect, b: RuleEffect) =>
    b.stepUps - a.stepUps || b.fired - a.fired || a.rule.localeCompare(b.rule);
  const rules = [...live]
    .map(([rule, t]) =>
      effect(rule, t, modes.get(rule) === 'enforce' ? 'enforce' : /^(floor|bypass):/.test(rule) ? 'engine' : 'removed'),
    )
    .sort(order);
  const shadowRules = [...shadow]
    .map(([rule, t]) => effect(rule, t, modes.has(rule) ? 'shadow' : 'removed'))
    .sort(order);
  const threshold = options.frictionApproval ?? 0.98;
  const minimum = options.frictionMinimum ?? 20;
  const outcomesOf = (r: RuleEffect) => r.outcomes.approved + r.outcomes.declined + r.outcomes.abandoned;
  return {
    since: options.since,
    decisions: count,
    stepUps,
    superseded,
    labelled,
    rules,
    shadow: shadowRules,
    dead: [...rules, ...shadowRules]
      .filter((r) => modes.has(r.rule) && r.fired === 0)
      .map((r) => r.rule)
      .sort(),
    noisy: rules
      .filter((r) => r.mode === 'enforce' && r.fired > 0 && r.stepUps === 0)
      .map((r) => r.rule)
      .sort(),
    frictionOnly: [...rules, ...shadowRules]
      .filter((r) => outcomesOf(r) >= minimum && (r.approvalRate ?? 0) >= threshold)
      .map((r) => r.rule)
      .sort(),
  };
}

const percent = (value: number | null): string => (value === null ? '-' : `${(100 * value).toFixed(1)}%`);

function table(rows: readonly RuleEffect[]): string[] {
  const width = Math.max(24, ...rows.map((r) => r.rule.length + 1));
  const head = `${'rule'.padEnd(width)}${['fired', 'step-ups', 'approved', 'declined', 'abandoned', 'review', 'pending', 'fraud', 'legit', 'prec.labels', 'prec.declines'].map((h) => h.padStart(h.length > 9 ? 14 : 10)).join('')}`;
  const share = (r: RuleEffect, o: Outcome) => (r.stepUps ? percent(r.outcomes[o] / r.stepUps) : '-');
  const lines = rows
    .filter((r) => r.fired > 0)
    .map(
      (r) =>
        `${r.rule.padEnd(width)}${[String(r.fired), String(r.stepUps), share(r, 'approved'), share(r, 'declined'), share(r, 'abandoned'), share(r, 'in_review'), share(r, 'pending'), String(r.fraud), String(r.legitimate)].map((c) => c.padStart(10)).join('')}${[percent(r.precisionLabels), percent(r.precisionDeclines)].map((c) => c.padStart(14)).join('')}`,
    );
  return [head, ...lines];
}

export function formatEffectiveness(report: EffectivenessReport): string {
  const out = [
    `since ${new Date(report.since).toISOString()}: ${report.decisions} decisions, ${report.stepUps} step-ups${report.superseded ? ` (+${report.superseded} handed the same session again, counted once)` : ''}, labelled ${report.labelled.fraud} fraud / ${report.labelled.legitimate} legitimate`,
    '',
    ...table(report.rules),
  ];
  if (report.shadow.some((r) => r.fired > 0))
    out.push(
      '',
      'shadow rules (partial evidence: step-ups they would have raised, seen only on sign-ins that stepped up for another reason):',
      ...table(report.shadow),
    );
  out.push('', `dead (never fired): ${report.dead.join(', ') || 'none'}`);
  out.push(`noisy (fired, never caused a step-up): ${report.noisy.join(', ') || 'none'}`);
  out.push(`friction only (approval >= 98%): ${report.frictionOnly.join(', ') || 'none'}`);
  return out.join('\n');
}
