import { evaluate } from '../engine/evaluate.js';
import { RUNGS, type Rung } from '../engine/ladder.js';
import type { CompiledRuleset } from '../engine/ruleset.js';
import type { Signals } from '../engine/signals.js';

/** What `rules replay` needs from a decision log line (the service writes it, msg "decision"). */
export interface LoggedDecision {
  readonly decision_id?: string;
  readonly time?: string | number;
  readonly action: Rung;
  readonly rules?: readonly string[];
  readonly degraded?: readonly string[];
  readonly signals: Signals;
}

export interface ReplayReport {
  readonly decisions: number;
  readonly skipped: number;
  /** matrix[old][new] = count */
  readonly matrix: Record<Rung, Record<Rung, number>>;
  readonly changed: number;
  /** Rules that fired on one side only, counted over the decisions whose action changed. */
  readonly responsible: ReadonlyArray<{ rule: string; count: number }>;
  /** Up to `examplesPerCell` decision ids for every changed cell, "OLD->NEW". */
  readonly examples: Record<string, string[]>;
  /** With labels: what the candidate does to the labelled decisions (a challenge is any action above SKIP). */
  readonly labelled?: LabelledReplay;
}

export type ReplayLabel = 'fraud' | 'legitimate';

export interface LabelledReplay {
  readonly fraud: {
    readonly total: number;
    readonly challengedBefore: number;
    readonly stillChallenged: number;
    readonly nowLetThrough: number;
    readonly ids: Readonly<Record<'nowLetThrough', string[]>>;
  };
  readonly legitimate: {
    readonly total: number;
    readonly challengedBefore: number;
    readonly challengedAfter: number;
    readonly nowLetThrough: number;
    readonly newlyChallenged: number;
    readonly ids: Readonly<Record<'newlyChallenged', string[]>>;
  };
}

const FLOOR = /^(floor|bypass):/;

export function parseDecisionLine(line: string): LoggedDecision | undefined {
  if (!line.trim()) return undefined;
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (
    parsed.msg !== 'decision' ||
    typeof parsed.signals !== 'object' ||
    parsed.signals === null ||
    !RUNGS.includes(parsed.action as Rung)
  )
    return undefined;
  return parsed as unknown as LoggedDecision;
}

/** Re-decides logged decisions with another ruleset, from exactly the signals the rules saw then. */
export function replay(
  lines: Iterable<string>,
  candidate: CompiledRuleset,
  examplesPerCell = 3,
  labels?: ReadonlyMap<string, ReplayLabel>,
): ReplayReport {
  const fraud = {
    total: 0,
    challengedBefore: 0,
    stillChallenged: 0,
    nowLetThrough: 0,
    ids: { nowLetThrough: [] as string[] },
  };
  const legitimate = {
    total: 0,
    challengedBefore: 0,
    challengedAfter: 0,
    nowLetThrough: 0,
    newlyChallenged: 0,
    ids: { newlyChallenged: [] as string[] },
  };
  const matrix = Object.fromEntries(
    RUNGS.map((from) => [from, Object.fromEntries(RUNGS.map((to) => [to, 0]))]),
  ) as Record<Rung, Record<Rung, number>>;
  const responsible = new Map<string, number>();
  const examples: Record<string, string[]> = {};
  let decisions = 0;
  let skipped = 0;
  let changed = 0;
  for (const line of lines) {
    const logged = parseDecisionLine(line);
    if (!logged) {
      if (line.trim()) skipped += 1;
      continue;
    }
    decisions += 1;
    const now = typeof logged.time === 'number' ? logged.time : logged.time ? Date.parse(logged.time) : Date.now();
    const fresh = evaluate(candidate, { signals: logged.signals, degraded: logged.degraded ?? [], now });
    matrix[logged.action][fresh.action] += 1;
    const label = logged.decision_id !== undefined ? labels?.get(logged.decision_id) : undefined;
    if (label) {
      const before = logged.action !== 'SKIP';
      const after = fresh.action !== 'SKIP';
      const id = logged.decision_id!;
      if (label === 'fraud') {
        fraud.total += 1;
        if (before) fraud.challengedBefore += 1;
        if (after) fraud.stillChallenged += 1;
        if (before && !after) {
          fraud.nowLetThrough += 1;
          if (fraud.ids.nowLetThrough.length < examplesPerCell) fraud.ids.nowLetThrough.push(id);
        }
      } else {
        legitimate.total += 1;
        if (before) legitimate.challengedBefore += 1;
        if (after) legitimate.challengedAfter += 1;
        if (before && !after) legitimate.nowLetThrough += 1;
        if (!before && after) {
          legitimate.newlyChallenged += 1;
          if (legitimate.ids.newlyChallenged.length < examplesPerCell) legitimate.ids.newlyChallenged.push(id);
        }
      }
    }
    if (fresh.action === logged.action) continue;
    changed += 1;
    const before = new Set((logged.rules ?? []).filter((r) => !FLOOR.test(r)));
    const after = new Set(fresh.reasons.map((r) => r.rule).filter((r) => !FLOOR.test(r)));
    let blamed = [...new Set([...before, ...after])].filter((rule) => before.has(rule) !== after.has(rule));
    if (blamed.length === 0) {
      // The same rules fired, so one of them now weighs differently: blame the fired candidate
      // rules that set the new action (its min_action) or fed the score band that did.
      const fired = candidate.rules.filter((r) => after.has(r.id));
      const setIt = fired.filter((r) => r.minAction === fresh.action);
      blamed = (setIt.length ? setIt : fired.filter((r) => r.score > 0)).map((r) => r.id);
    }
    for (const rule of blamed) responsible.set(rule, (responsible.get(rule) ?? 0) + 1);
    const cell = `${logged.action}->${fresh.action}`;
    const list = (examples[cell] ??= []);
    if (list.length < examplesPerCell) list.push(logged.decision_id ?? `line ${decisions}`);
  }
  return {
    decisions,
    skipped,
    matrix,
    changed,
    responsible: [...responsible.entries()]
      .map(([rule, count]) => ({ rule, count }))
      .sort((a, b) => b.count - a.count || a.rule.localeCompare(b.rule)),
    examples,
    ...(labels ? { labelled: { fraud, legitimate } } : {}),
  };
}

/** Labels for replay: one JSON object a line, `{"decision_id": "…", "label": "fraud" | "legitimate"}` (later lines win). */
export function parseLabelLines(lines: Iterable<string>): Map<string, ReplayLabel> {
  const labels = new Map<string, ReplayLabel>();
  for (const line of lines) {
    if (!line.trim()) continue;
    try {
      const parsed = JSON.parse(line) as { decision_id?: unknown; label?: unknown };
      if (typeof parsed.decision_id === 'string' && (parsed.label === 'fraud' || parsed.label === 'legitimate'))
        labels.set(parsed.decision_id, parsed.label);
    } catch {
      // Not a label line: skipped, like the replay skips log lines that are not decisions.
    }
  }
  return labels;
}

export function formatLabelled(labelled: LabelledReplay): string {
  const f = labelled.fraud;
  const l = labelled.legitimate;
  return [
    'labelled decisions (challenge = any action above SKIP):',
    `  fraud       ${String(f.total).padStart(6)}   challenged now ${f.challengedBefore}, by the candidate ${f.stillChallenged} (still challenged), let through ${f.nowLetThrough}${f.ids.nowLetThrough.length ? `: ${f.ids.nowLetThrough.join(', ')}` : ''}`,
    `  legitimate  ${String(l.total).padStart(6)}   challenged now ${l.challengedBefore}, by the candidate ${l.challengedAfter}; now let through ${l.nowLetThrough}, newly challenged ${l.newlyChallenged}${l.ids.newlyChallenged.length ? `: ${l.ids.newlyChallenged.join(', ')}` : ''}`,
  ].join('\n');
}

export function formatMatrix(report: ReplayReport): string {
  const width = 10;
  const head = `${'old \\ new'.padEnd(width)}${RUNGS.map((r) => r.padStart(width)).join('')}`;
  const rows = RUNGS.map(
    (from) => `${from.padEnd(width)}${RUNGS.map((to) => String(report.matrix[from][to]).padStart(width)).join('')}`,
  );
  return [head, ...rows].join('\n');
}
