import path from 'node:path';
import { z } from 'zod';
import { evaluate, type Decision } from '../engine/evaluate.js';
import { RUNGS } from '../engine/ladder.js';
import type { CompiledRuleset } from '../engine/ruleset.js';
import { SIGNAL_BY_NAME, SIGNALS, signalTypeProblems } from '../engine/signals.js';
import { isRuleFile, isTestFile, parseYaml, type TextFile } from './load.js';
import {
  FIXTURE_NAME,
  knownSignals,
  loadFixtures,
  mergeSignals,
  signalMapSchema,
  type Fixtures,
  type SignalMap,
} from './test-fixtures.js';

/** Cases here run against the whole ruleset and may name any rule: how the files combine. */
export const SCENARIOS_FILE = 'scenarios.test.yaml';

/** Inputs enrichment reports as failed (signals/enrich.ts); a case names them in `degraded`. */
const FAILED_INPUTS = ['geoip', 'lists', 'store'] as const;
/** What a decision's `degraded` may hold: the failed inputs, `signals` (unknown without a failed input), `rules` (engine error). */
const DEGRADED = [...FAILED_INPUTS, 'signals', 'rules'] as const;

const baseName = z.string().regex(FIXTURE_NAME, 'base names a fixture of fixtures.yaml, such as returning-user');
const instant = z
  .string()
  .regex(
    /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$/,
    'now is an ISO date or date-time such as 2027-01-31T12:00:00Z',
  )
  // Date.parse rolls 2027-02-30 over into March; a date that is not in the calendar is a typo.
  .refine((s) => {
    const [y, m, d] = s.slice(0, 10).split('-').map(Number) as [number, number, number];
    return m >= 1 && m <= 12 && new Date(Date.UTC(y, m - 1, d)).getUTCDate() === d && !Number.isNaN(Date.parse(s));
  }, 'now is not a date in the calendar');

const expectSchema = z
  .strictObject({
    action: z.enum(RUNGS).optional(),
    score: z.number().int().min(0).optional(),
    degraded: z.array(z.enum(DEGRADED)).optional(),
    unknown: z.array(z.string()).optional(),
    fires: z.array(z.string()).optional(),
    not_fires: z.array(z.string()).optional(),
    shadow: z.record(z.string(), z.enum(RUNGS)).optional(),
  })
  // A case that asserts nothing passes whatever the rules do.
  .refine(
    (e) => Object.keys(e).length > 0,
    'expect needs at least one of action, score, degraded, unknown, fires, not_fires, shadow',
  );

const testFileSchema = z.strictObject({
  /** A fixture name, or (as before fixtures) an inline signal map. */
  base: z.union([baseName, signalMapSchema]).optional(),
  cases: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        base: baseName.optional(),
        signals: signalMapSchema.default({}),
        degraded: z.array(z.enum(FAILED_INPUTS)).optional(),
        now: instant.optional(),
        expect: expectSchema,
      }),
    )
    .min(1),
});

type TestFile = z.infer<typeof testFileSchema>;
type TestCase = TestFile['cases'][number];

export interface CaseResult {
  readonly file: string;
  readonly name: string;
  readonly passed: boolean;
  readonly problems: readonly string[];
}

export interface RuleTestReport {
  readonly cases: readonly CaseResult[];
  /** File-level problems: unreadable test or fixture files, unknown bases, rules without the required cases. */
  readonly problems: readonly string[];
  readonly passed: boolean;
}

const sameSet = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && [...a].sort().join('\0') === [...b].sort().join('\0');
const list = (names: readonly string[]): string => `[${[...names].sort().join(', ')}]`;

function parseTestFile(file: TextFile): TestFile | string {
  const parsedYaml = parseYaml(file.name, file.text);
  if ('reason' in parsedYaml) return `${file.name}:${parsedYaml.line ?? 0}: ${parsedYaml.reason}`;
  const parsed = testFileSchema.safeParse(parsedYaml.content);
  if (!parsed.success)
    return `${file.name}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`;
  return parsed.data;
}

/** The signal map each case starts from, or the problems that stop the file: an unknown base is a load error, not a failed case. */
function startingPoints(
  file: string,
  parsed: TestFile,
  fixtures: Fixtures,
): { bases: SignalMap[] } | { problems: string[] } {
  const problems: string[] = [];
  const lookup = (name: string, where: string): SignalMap => {
    const found = fixtures.get(name);
    if (found) return found;
    if (fixtures.names.includes(name))
      problems.push(`${file}: ${where}base ${name}: the fixture has problems of its own (see fixtures.yaml)`);
    else
      problems.push(
        `${file}: ${where}base ${name} is not a fixture${fixtures.names.length ? ` (fixtures.yaml has: ${fixtures.names.join(', ')})` : ' (there is no fixtures.yaml)'}`,
      );
    return {};
  };
  const inline = typeof parsed.base === 'object' ? signalTypeProblems(parsed.base) : [];
  if (inline.length > 0) problems.push(`${file}: base: ${inline.join('; ')}`);
  const fileBase = typeof parsed.base === 'string' ? lookup(parsed.base, '') : (parsed.base ?? {});
  const bases = parsed.cases.map((c) => (c.base === undefined ? fileBase : lookup(c.base, `case "${c.name}": `)));
  return problems.length > 0 ? { problems } : { bases };
}

/** Each signal source a case says failed must have left at least one of its signals unknown, as it does in production. */
function outageProblems(testCase: TestCase, merged: SignalMap): string[] {
  return (testCase.degraded ?? [])
    .filter(
      (input) => !SIGNALS.some((s) => s.source === input && (merged[s.name] === null || merged[s.name] === undefined)),
    )
    .map(
      (input) =>
        `degraded names ${input} but every ${input} signal is known (an outage leaves them unknown: set them to null, or use a fixture such as ${input}-down)`,
    );
}

interface Scope {
  /** The rules a case may name, and the ones that are evaluated. */
  readonly ruleset: CompiledRuleset;
  /** Where a rule of another file lives, to say so instead of "unknown rule". */
  readonly elsewhere: (id: string) => string | undefined;
}

function expectationProblems(testCase: TestCase, decision: Decision, scope: Scope): string[] {
  const problems: string[] = [];
  const { expect } = testCase;
  const fired = new Set(decision.results.filter((r) => r.outcome === 'fired').map((r) => r.rule));
  const ruleProblem = (key: string, id: string): string | undefined => {
    if (scope.ruleset.rules.some((r) => r.id === id)) return undefined;
    const other = scope.elsewhere(id);
    return other
      ? `${key} names ${id}, a rule of ${other}: a case that needs rules of several files belongs in ${SCENARIOS_FILE}`
      : `${key} names unknown rule ${id}`;
  };
  if (expect.action && decision.action !== expect.action)
    problems.push(`action ${decision.action}, expected ${expect.action}`);
  if (expect.score !== undefined && decision.score !== expect.score)
    problems.push(`score ${decision.score}, expected ${expect.score}`);
  if (expect.degraded && !sameSet(decision.degraded, expect.degraded))
    problems.push(`degraded ${list(decision.degraded)}, expected ${list(expect.degraded)}`);
  if (expect.unknown) {
    const misspelt = expect.unknown.filter((name) => !SIGNAL_BY_NAME.has(name));
    if (misspelt.length > 0) problems.push(`unknown names no signal ${misspelt.join(', ')}`);
    else if (!sameSet(decision.unknown, expect.unknown))
      problems.push(`unknown ${list(decision.unknown)}, expected ${list(expect.unknown)}`);
  }
  for (const id of expect.fires ?? []) {
    const problem = ruleProblem('fires', id);
    if (problem) problems.push(problem);
    else if (!fired.has(id))
      problems.push(`${id} did not fire (${decision.results.find((r) => r.rule === id)?.outcome})`);
  }
  for (const id of expect.not_fires ?? []) {
    const problem = ruleProblem('not_fires', id);
    if (problem) problems.push(problem);
    else if (fired.has(id)) problems.push(`${id} fired`);
  }
  // Exact, like degraded and unknown: a shadow rule that fires unasked is reported too, and `{}` means none.
  for (const other of decision.shadow) {
    if (expect.shadow && !Object.hasOwn(expect.shadow, other.rule))
      problems.push(`shadow ${other.rule}: ${other.action}, expected it not to fire`);
  }
  for (const [id, rung] of Object.entries(expect.shadow ?? {})) {
    const problem = ruleProblem('shadow', id);
    if (problem) problems.push(problem);
    else {
      const got = decision.shadow.find((s) => s.rule === id)?.action;
      if (got !== rung) problems.push(`shadow ${id}: ${got ?? 'did not fire'}, expected ${rung}`);
    }
  }
  return problems;
}

/** What a file's cases showed about its own rules, for the coverage requirements. */
interface Coverage {
  readonly fires: Set<string>;
  readonly quiet: Set<string>;
  /** A case asserted `unknown` while one of the file's rules could not be evaluated. */
  unknownShown: boolean;
}

function runCases(
  file: string,
  parsed: TestFile,
  bases: readonly SignalMap[],
  scope: Scope,
  now: number,
  coverage: Coverage,
): CaseResult[] {
  return parsed.cases.map((testCase, i) => {
    const merged = mergeSignals(bases[i]!, testCase.signals);
    const problems = [...signalTypeProblems(testCase.signals), ...outageProblems(testCase, merged)];
    const decision = evaluate(scope.ruleset, {
      signals: knownSignals(merged),
      degraded: testCase.degraded ?? [],
      now: testCase.now ? Date.parse(testCase.now) : now,
    });
    problems.push(...expectationProblems(testCase, decision, scope));
    for (const id of testCase.expect.fires ?? []) coverage.fires.add(id);
    for (const id of testCase.expect.not_fires ?? []) coverage.quiet.add(id);
    if (testCase.expect.unknown && decision.results.some((r) => r.outcome === 'unknown')) coverage.unknownShown = true;
    return { file, name: testCase.name, passed: problems.length === 0, problems };
  });
}

/**
 * Runs the rule tests of a rules directory.
 *
 * `<name>.test.yaml` runs against `<name>.yaml` alone, with the policy (score bands, floors) and the
 * purpose vocabulary: its `action` and `score` are what that file's rules make of the signals, so an
 * edit to one file cannot break another file's tests, and its cases may name only its own rules. Each
 * rule needs a case where it fires and one where it does not, and each file a case where one of its
 * rules reads an unknown signal and the case asserts `unknown` (unknown must never pass for false).
 * `scenarios.test.yaml` runs against the whole ruleset, as production does, and may name any rule.
 */
export function runRuleTests(files: readonly TextFile[], ruleset: CompiledRuleset, now = Date.now()): RuleTestReport {
  const fixtures = loadFixtures(files);
  const problems: string[] = [...fixtures.problems];
  const cases: CaseResult[] = [];
  const fileOf = (id: string): string | undefined => ruleset.rules.find((r) => r.id === id)?.file;
  const ruleFiles = files.filter((f) => isRuleFile(f.name) && !/^policy\.ya?ml$/.test(path.basename(f.name)));
  const testFileFor = new Map(ruleFiles.map((f) => [f.name.replace(/\.ya?ml$/, '.test.yaml'), f.name]));

  for (const testFile of files.filter((f) => isTestFile(f.name))) {
    const scenarios = path.basename(testFile.name) === SCENARIOS_FILE;
    const ruleFile = testFileFor.get(testFile.name.replace(/\.test\.yml$/, '.test.yaml'));
    if (!scenarios && !ruleFile) {
      problems.push(`${testFile.name}: no rule file beside it (cases that combine files belong in ${SCENARIOS_FILE})`);
      continue;
    }
    const parsed = parseTestFile(testFile);
    if (typeof parsed === 'string') {
      problems.push(parsed);
      continue;
    }
    const start = startingPoints(testFile.name, parsed, fixtures);
    if ('problems' in start) {
      problems.push(...start.problems);
      continue;
    }
    const own = scenarios ? ruleset.rules : ruleset.rules.filter((r) => r.file === ruleFile);
    const scope: Scope = { ruleset: scenarios ? ruleset : { ...ruleset, rules: own }, elsewhere: fileOf };
    const coverage: Coverage = { fires: new Set(), quiet: new Set(), unknownShown: false };
    cases.push(...runCases(testFile.name, parsed, start.bases, scope, now, coverage));
    if (scenarios) continue;
    for (const { id } of own) {
      if (!coverage.fires.has(id)) problems.push(`${testFile.name}: rule ${id} has no case where it fires`);
      if (!coverage.quiet.has(id)) problems.push(`${testFile.name}: rule ${id} has no case where it does not fire`);
    }
    if (own.length > 0 && !coverage.unknownShown) {
      problems.push(
        `${testFile.name}: no case where a signal its rules read is unknown (set one to null and assert expect.unknown)`,
      );
    }
  }
  for (const [testName, ruleName] of testFileFor) {
    if (!files.some((f) => f.name === testName || f.name === testName.replace(/\.yaml$/, '.yml')))
      problems.push(`${ruleName}: no test file ${testName} beside it`);
  }
  return { cases, problems, passed: problems.length === 0 && cases.every((c) => c.passed) };
}
