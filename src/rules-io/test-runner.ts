import path from 'node:path';
import { z } from 'zod';
import { evaluate } from '../engine/evaluate.js';
import { RUNGS } from '../engine/ladder.js';
import type { CompiledRuleset } from '../engine/ruleset.js';
import { signalTypeProblems, type Signals } from '../engine/signals.js';
import { isRuleFile, isTestFile, parseYaml, type TextFile } from './load.js';

const signalValue = z.union([z.boolean(), z.number(), z.string(), z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])), z.null()]);
const signalMap = z.record(z.string(), signalValue);

const testFileSchema = z.strictObject({
  base: signalMap.optional(),
  cases: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        signals: signalMap.default({}),
        degraded: z.array(z.string()).optional(),
        now: z.string().optional(),
        expect: z.strictObject({
          action: z.enum(RUNGS).optional(),
          fires: z.array(z.string()).optional(),
          not_fires: z.array(z.string()).optional(),
          shadow: z.record(z.string(), z.enum(RUNGS)).optional(),
        }),
      }),
    )
    .min(1),
});

export interface CaseResult {
  readonly file: string;
  readonly name: string;
  readonly passed: boolean;
  readonly problems: readonly string[];
}

export interface RuleTestReport {
  readonly cases: readonly CaseResult[];
  /** File-level problems: unreadable test files, rules without a firing and a non-firing case. */
  readonly problems: readonly string[];
  readonly passed: boolean;
}

/** base + case, where null removes a signal (makes it unknown). */
function mergeSignals(base: Record<string, unknown>, own: Record<string, unknown>): Signals {
  const merged: Record<string, unknown> = { ...base, ...own };
  for (const key of Object.keys(merged)) if (merged[key] === null) delete merged[key];
  return merged as Signals;
}

/**
 * Runs every `<name>.test.yaml` against the whole compiled ruleset, and requires each rule of
 * `<name>.yaml` to have at least one case where it fires and one where it does not.
 */
export function runRuleTests(files: readonly TextFile[], ruleset: CompiledRuleset, now = Date.now()): RuleTestReport {
  const problems: string[] = [];
  const cases: CaseResult[] = [];
  const testFiles = new Map(files.filter((f) => isTestFile(f.name)).map((f) => [f.name, f]));

  for (const ruleFile of files.filter((f) => isRuleFile(f.name) && !/^policy\.ya?ml$/.test(path.basename(f.name)))) {
    const testName = ruleFile.name.replace(/\.ya?ml$/, '.test.yaml');
    const rulesHere = ruleset.rules.filter((r) => r.file === ruleFile.name).map((r) => r.id);
    const testFile = testFiles.get(testName);
    if (!testFile) {
      problems.push(`${ruleFile.name}: no test file ${testName} beside it`);
      continue;
    }
    const parsedYaml = parseYaml(testFile.name, testFile.text);
    if ('reason' in parsedYaml) {
      problems.push(`${testFile.name}:${parsedYaml.line ?? 0}: ${parsedYaml.reason}`);
      continue;
    }
    const parsed = testFileSchema.safeParse(parsedYaml.content);
    if (!parsed.success) {
      problems.push(`${testFile.name}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
      continue;
    }
    const base = parsed.data.base ?? {};
    const firedSomewhere = new Set<string>();
    const quietSomewhere = new Set<string>();
    for (const testCase of parsed.data.cases) {
      const caseProblems = signalTypeProblems({ ...base, ...testCase.signals });
      const signals = mergeSignals(base, testCase.signals);
      const decision = evaluate(ruleset, {
        signals,
        degraded: testCase.degraded ?? [],
        now: testCase.now ? Date.parse(testCase.now) : now,
      });
      const fired = new Set(decision.results.filter((r) => r.outcome === 'fired').map((r) => r.rule));
      const { expect } = testCase;
      if (expect.action && decision.action !== expect.action) caseProblems.push(`action ${decision.action}, expected ${expect.action}`);
      for (const id of expect.fires ?? []) {
        if (!ruleset.rules.some((r) => r.id === id)) caseProblems.push(`fires names unknown rule ${id}`);
        else if (!fired.has(id)) caseProblems.push(`${id} did not fire`);
        firedSomewhere.add(id);
      }
      for (const id of expect.not_fires ?? []) {
        if (!ruleset.rules.some((r) => r.id === id)) caseProblems.push(`not_fires names unknown rule ${id}`);
        else if (fired.has(id)) caseProblems.push(`${id} fired`);
        quietSomewhere.add(id);
      }
      for (const [id, rung] of Object.entries(expect.shadow ?? {})) {
        const got = decision.shadow.find((s) => s.rule === id)?.action;
        if (got !== rung) caseProblems.push(`shadow ${id}: ${got ?? 'did not fire'}, expected ${rung}`);
      }
      cases.push({ file: testFile.name, name: testCase.name, passed: caseProblems.length === 0, problems: caseProblems });
    }
    for (const id of rulesHere) {
      if (!firedSomewhere.has(id)) problems.push(`${testFile.name}: rule ${id} has no case where it fires`);
      if (!quietSomewhere.has(id)) problems.push(`${testFile.name}: rule ${id} has no case where it does not fire`);
    }
  }
  return { cases, problems, passed: problems.length === 0 && cases.every((c) => c.passed) };
}
