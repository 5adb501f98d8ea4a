import { z } from 'zod';
import { celEnvironment, MAX_EXPRESSION_LENGTH, signalsReadBy, type CelContext } from './cel-env.js';
import { COST_LIMITS, costProblem, estimateCost, regexPatterns } from './cost.js';
import { RUNGS, rank, type Rung, type ScoreBand } from './ladder.js';
import type { DeclaredPurposeClass } from './purposes.js';

const rungSchema = z.enum(RUNGS);
const isoDate = z.string().regex(/^\d{4}-\d{2}-\d{2}(T[\d:.]+Z)?$/, 'expected an ISO date such as 2027-01-31');

export const ruleSchema = z
  .strictObject({
    id: z
      .string()
      .regex(/^[a-z0-9]+(?:-[a-z0-9]+)*$/, 'id must be kebab-case')
      .max(64),
    description: z.string().min(1).max(500),
    when: z.string().min(1).max(MAX_EXPRESSION_LENGTH),
    // biome-ignore lint/suspicious/noThenProperty: `then` is the rule file's own key (when … then …), parsed from YAML, never awaited.
    then: z
      .strictObject({
        min_action: rungSchema.optional(),
        score: z.number().int().min(0).max(1000).optional(),
      })
      .refine((t) => t.min_action !== undefined || t.score !== undefined, 'then needs min_action and/or score'),
    mode: z.enum(['enforce', 'shadow']).default('enforce'),
    owner: z.string().max(100).optional(),
    expires: isoDate.optional(),
  })
  .refine((r) => r.mode !== 'shadow' || r.expires !== undefined, {
    message: 'a shadow rule must carry expires',
    path: ['expires'],
  });

export const ruleFileSchema = z.strictObject({ rules: z.array(ruleSchema).min(1) });

export const policySchema = z.strictObject({
  policy: z.strictObject({
    score_bands: z
      .array(z.strictObject({ min_score: z.number().int().min(0), action: rungSchema }))
      .min(1)
      .refine((bands) => bands.some((b) => b.min_score === 0), 'score_bands needs a band at min_score 0')
      .refine((bands) => {
        const sorted = [...bands].sort((a, b) => a.min_score - b.min_score);
        return sorted.every((b, i) => i === 0 || rank(b.action) >= rank(sorted[i - 1]!.action));
      }, 'score_bands must not step down the ladder as the score grows'),
    cold_start_floor: rungSchema,
    degraded_floor: rungSchema,
  }),
});

export type RuleDoc = z.infer<typeof ruleSchema>;
export type PolicyDoc = z.infer<typeof policySchema>['policy'];

export interface CompiledRule {
  readonly id: string;
  readonly description: string;
  readonly when: string;
  readonly minAction: Rung | undefined;
  readonly score: number;
  readonly mode: 'enforce' | 'shadow';
  readonly owner: string | undefined;
  /** Epoch ms after which the rule no longer runs. */
  readonly expiresAt: number | undefined;
  readonly reads: readonly string[];
  readonly file: string;
  readonly line: number;
  readonly run: (context: CelContext) => unknown;
  /** Static work estimate (cost.ts), summed against the ruleset's budget. */
  readonly cost: number;
}

export interface Policy {
  readonly scoreBands: readonly ScoreBand[];
  readonly coldStartFloor: Rung;
  readonly degradedFloor: Rung;
}

/** What a bypass is matched against: pseudonymised ids and network facts, never raw values. */
export interface BypassContext {
  readonly user: string;
  readonly device: string;
  readonly ip: readonly number[];
  readonly asn?: number;
  readonly country?: string;
}

/** A scoped, expiring exception. Its matcher is built by rules-io (CIDRs, pseudonyms). */
export interface CompiledBypass {
  readonly id: string;
  readonly reason: string;
  /** The lowest rung the bypass lets a decision fall to; a rule demanding DENY is never lowered. */
  readonly lowest: Rung;
  readonly expiresAt: number;
  readonly matches: (context: BypassContext) => boolean;
}

export interface CompiledRuleset {
  readonly hash: string;
  readonly rules: readonly CompiledRule[];
  readonly policy: Policy;
  readonly bypasses?: readonly CompiledBypass[];
  /** The purpose vocabulary (rules/purposes.yaml); absent: only `login`, as normal. */
  readonly purposes?: ReadonlyMap<string, DeclaredPurposeClass>;
}

/** A parsed source document as rules-io hands it over: content plus where things are. */
export interface RuleSource {
  readonly file: string;
  readonly kind: 'rules' | 'policy';
  readonly content: unknown;
  /** Line of the n-th rule in the file, and of a top-level key, for error messages. */
  readonly lineOfRule?: (index: number) => number;
}

export interface LoadError {
  readonly file: string;
  readonly line?: number;
  readonly rule?: string;
  readonly reason: string;
  /** The rule (or a regex in it) is over the work budget: RISK_ERR_RULE_TOO_EXPENSIVE, not a plain validation error. */
  readonly tooExpensive?: boolean;
}

export type CompileResult = { ok: true; ruleset: CompiledRuleset } | { ok: false; errors: LoadError[] };

/** A guard's refusal: a reason, marked when the check ran out of its time budget (fail closed). */
export type RegexRefusal = string | { readonly reason: string; readonly tooExpensive: true };

/** Checked by the caller's guard (for example recheck) before a `matches()` pattern is accepted. */
export type RegexGuard = (pattern: string) => RegexRefusal | undefined;

export interface CompileOptions {
  readonly hash: string;
  readonly regexGuard?: RegexGuard;
  /** Polled between rules: a reason once the caller's time budget for this compile is spent. */
  readonly outOfTime?: () => string | undefined;
}

function zodReason(error: z.ZodError): string {
  return error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
}

function checkRegexes(ast: unknown, guard: RegexGuard | undefined): RegexRefusal | undefined {
  const { patterns, problem: shape } = regexPatterns(ast);
  if (shape) return shape;
  for (const raw of patterns) {
    if (!guard) return 'matches() is not enabled in this ruleset loader';
    const problem = guard(raw);
    if (typeof problem === 'string') return `regex ${JSON.stringify(raw)} rejected: ${problem}`;
    if (problem) return { reason: `regex ${JSON.stringify(raw)} rejected: ${problem.reason}`, tooExpensive: true };
  }
  return undefined;
}

function compileRule(
  doc: RuleDoc,
  file: string,
  line: number,
  guard: RegexGuard | undefined,
): CompiledRule | LoadError {
  const fail = (reason: string): LoadError => ({ file, line, rule: doc.id, reason });
  const tooExpensive = (reason: string): LoadError => ({
    file,
    line,
    rule: doc.id,
    reason: `rule too expensive: ${reason}`,
    tooExpensive: true,
  });
  // Size and cost first, so a pathological expression costs no regex check and no type check.
  let parsed: ReturnType<typeof celEnvironment.parse>;
  try {
    parsed = celEnvironment.parse(doc.when);
  } catch (error) {
    const e = error as { code?: string; message?: string };
    if (e.code === 'limit_exceeded') return tooExpensive(firstLine(e.message));
    return fail(`cannot parse when: ${firstLine(e.message)}`);
  }
  const costIssue = costProblem(parsed.ast);
  if (costIssue) return tooExpensive(costIssue);
  const regexProblem = checkRegexes(parsed.ast, guard);
  if (typeof regexProblem === 'string') return fail(regexProblem);
  if (regexProblem) return tooExpensive(regexProblem.reason);
  let run: (context: CelContext) => unknown;
  try {
    const checked = parsed.check();
    if (!checked.valid) return fail(`type error in when: ${firstLine(checked.error?.message)}`);
    if (checked.type !== 'bool') return fail(`when must be a bool expression, got ${String(checked.type)}`);
    run = parsed as unknown as (context: CelContext) => unknown;
  } catch (error) {
    return fail(`cannot parse when: ${firstLine((error as Error).message)}`);
  }
  const expiresAt =
    doc.expires === undefined
      ? undefined
      : Date.parse(doc.expires.length === 10 ? `${doc.expires}T23:59:59.999Z` : doc.expires);
  return {
    id: doc.id,
    description: doc.description,
    when: doc.when,
    minAction: doc.then.min_action,
    score: doc.then.score ?? 0,
    mode: doc.mode,
    owner: doc.owner,
    expiresAt,
    reads: signalsReadBy(doc.when),
    file,
    line,
    run,
    cost: estimateCost(parsed.ast).cost,
  };
}

function firstLine(text: string | undefined): string {
  return (text ?? 'unknown error').split('\n')[0]!.trim();
}

/**
 * Validate → type-check → compile, all or nothing: one bad file fails the whole set, so a caller
 * never swaps in a partial ruleset. Rules are ordered by id, so file order cannot change a result.
 */
export function compileRuleset(sources: readonly RuleSource[], options: CompileOptions): CompileResult {
  const errors: LoadError[] = [];
  const rules: CompiledRule[] = [];
  const seen = new Map<string, string>();
  let policy: Policy | undefined;
  let stopped = false;
  // Counted before any rule is compiled, so an oversized set costs nothing to refuse.
  const declared = sources.reduce(
    (sum, source) =>
      sum +
      (source.kind === 'rules' && Array.isArray((source.content as { rules?: unknown } | null)?.rules)
        ? (source.content as { rules: unknown[] }).rules.length
        : 0),
    0,
  );
  if (declared > COST_LIMITS.maxRules)
    return {
      ok: false,
      errors: [
        {
          file: '(ruleset)',
          reason: `ruleset too expensive: ${declared} rules (at most ${COST_LIMITS.maxRules})`,
          tooExpensive: true,
        },
      ],
    };

  for (const source of sources) {
    if (source.kind === 'policy') {
      const parsed = policySchema.safeParse(source.content);
      if (!parsed.success) {
        errors.push({ file: source.file, reason: zodReason(parsed.error) });
        continue;
      }
      if (policy) errors.push({ file: source.file, reason: 'a second policy file; exactly one is allowed' });
      const p = parsed.data.policy;
      policy = { scoreBands: p.score_bands, coldStartFloor: p.cold_start_floor, degradedFloor: p.degraded_floor };
      continue;
    }
    const parsed = ruleFileSchema.safeParse(source.content);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        const index = typeof issue.path[1] === 'number' && issue.path[0] === 'rules' ? issue.path[1] : undefined;
        const rawRules = (source.content as { rules?: unknown[] } | null)?.rules;
        const rawId =
          index !== undefined && Array.isArray(rawRules)
            ? (rawRules[index] as { id?: unknown } | undefined)?.id
            : undefined;
        errors.push({
          file: source.file,
          ...(index !== undefined && source.lineOfRule ? { line: source.lineOfRule(index) } : {}),
          ...(typeof rawId === 'string' ? { rule: rawId } : {}),
          reason: issue.path.length ? `${issue.path.join('.')}: ${issue.message}` : issue.message,
        });
      }
      continue;
    }
    parsed.data.rules.forEach((doc, index) => {
      if (errors.length >= COST_LIMITS.maxErrors || stopped) return;
      const late = options.outOfTime?.();
      if (late) {
        stopped = true;
        errors.push({ file: source.file, rule: doc.id, reason: `ruleset too expensive: ${late}`, tooExpensive: true });
        return;
      }
      const line = source.lineOfRule?.(index) ?? 0;
      const other = seen.get(doc.id);
      if (other) {
        errors.push({ file: source.file, line, rule: doc.id, reason: `duplicate rule id (also in ${other})` });
        return;
      }
      seen.set(doc.id, source.file);
      const compiled = compileRule(doc, source.file, line, options.regexGuard);
      if ('reason' in compiled) errors.push(compiled);
      else rules.push(compiled);
    });
  }
  const totalCost = rules.reduce((sum, rule) => sum + rule.cost, 0);
  if (totalCost > COST_LIMITS.maxRulesetCost) {
    // Every decide runs every rule: many cheap rules add up to one expensive ruleset.
    errors.push({
      file: '(ruleset)',
      reason: `ruleset too expensive: estimated cost ${totalCost} exceeds the budget of ${COST_LIMITS.maxRulesetCost} steps`,
      tooExpensive: true,
    });
  }
  if (!policy && errors.length === 0) errors.push({ file: '(ruleset)', reason: 'no policy file (policy.yaml) found' });
  if (errors.length > 0 || !policy) return { ok: false, errors };
  rules.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { ok: true, ruleset: { hash: options.hash, rules, policy } };
}

export function formatLoadError(error: LoadError): string {
  const where = error.line ? `${error.file}:${error.line}` : error.file;
  return `${where}${error.rule ? ` [${error.rule}]` : ''}: ${error.reason}`;
}
