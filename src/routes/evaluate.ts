import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { decisionFields, doc, errorResponses } from './schemas.js';
import { evaluate } from '../engine/evaluate.js';
import { formatLoadError, type LoadError } from '../engine/ruleset.js';
import { signalTypeProblems, type Signals } from '../engine/signals.js';
import { RiskError } from '../errors.js';
import type { RulesHolder } from '../rules-io/rules-holder.js';
import { MAX_RULE_FILE_BYTES } from '../rules-io/load.js';
import type { RuleSandbox } from '../rules-io/rule-sandbox.js';
import { parseBody } from './validation.js';

/** A supplied ruleset is untrusted work: all its files together stay near the size of a real rules directory. */
export const MAX_EVALUATE_RULESET_BYTES = 64 * 1024;
/** As on decide: a rule's cost bound (engine/cost.ts) assumes signal maps of at most 32 entries. */
const MAX_MAP_SIGNAL_ENTRIES = 32;

const mapSignal = z
  .record(z.string().max(64), z.union([z.string().max(256), z.number(), z.boolean()]))
  .refine(
    (m) => Object.keys(m).length <= MAX_MAP_SIGNAL_ENTRIES,
    `at most ${MAX_MAP_SIGNAL_ENTRIES} entries in a map signal`,
  );

const evaluateBody = z.strictObject({
  signals: z.record(z.string().max(64), z.union([z.boolean(), z.number(), z.string().max(512), mapSignal])),
  degraded: z.array(z.string().max(32)).max(10).optional(),
  now: z.string().datetime().optional(),
  ruleset: z
    .strictObject({
      files: z
        .array(
          z.strictObject({
            name: z.string().regex(/^[a-z0-9._-]{1,64}\.ya?ml$/),
            text: z.string().max(MAX_RULE_FILE_BYTES),
          }),
        )
        .min(1)
        .max(50),
    })
    .optional(),
});

const evaluateReply = z.object({
  ...decisionFields,
  unknown: z.array(z.string()),
  ruleset: z.string(),
  results: z.array(
    z.object({ rule: z.string(), mode: z.enum(['enforce', 'shadow']), outcome: z.string(), because: z.string() }),
  ),
});

/** A refused ruleset: over a work budget → 422 RISK_ERR_RULE_TOO_EXPENSIVE (those errors first), else 400. */
function rejection(errors: readonly LoadError[]): RiskError {
  const expensive = errors.filter((e) => e.tooExpensive);
  if (expensive.length > 0)
    return new RiskError(
      'RISK_ERR_RULE_TOO_EXPENSIVE',
      expensive.slice(0, 5).map(formatLoadError).join('; '),
      'ruleset',
    );
  return new RiskError('RISK_ERR_VALIDATION', errors.slice(0, 5).map(formatLoadError).join('; '), 'ruleset');
}

/**
 * POST /v1/evaluate: a signals object against the live ruleset or a supplied one, with no side
 * effects at all (no store, no Didit, no metrics): for tooling and the rule playground. A supplied
 * ruleset is untrusted: it is compiled and run in the rule sandbox (a worker with a deadline), never
 * on this event loop. The live ruleset passed the same budgets at load and runs here as on decide.
 */
export function registerEvaluate(
  app: FastifyInstance,
  deps: { rules: RulesHolder; clock: () => number; sandbox: RuleSandbox },
): void {
  const schema = {
    summary: 'Evaluate signals against the live or a supplied ruleset (no side effects)',
    body: doc(evaluateBody),
    response: { 200: doc(evaluateReply), ...errorResponses(400, 401, 413, 422, 503) },
  };
  app.post('/v1/evaluate', { schema, bodyLimit: 1024 * 1024, config: { scope: 'rules' } }, async (request, reply) => {
    const body = parseBody(evaluateBody, request.body);
    const problems = signalTypeProblems(body.signals);
    if (problems.length > 0) throw new RiskError('RISK_ERR_VALIDATION', problems.slice(0, 5).join('; '), 'signals');
    const input = {
      signals: body.signals as Signals,
      degraded: body.degraded ?? [],
      now: body.now ? Date.parse(body.now) : deps.clock(),
      explainAll: true,
    };
    if (body.ruleset) {
      const bytes = body.ruleset.files.reduce((sum, file) => sum + Buffer.byteLength(file.text), 0);
      if (bytes > MAX_EVALUATE_RULESET_BYTES)
        throw new RiskError(
          'RISK_ERR_VALIDATION',
          `the ruleset's files total ${bytes} bytes; at most ${MAX_EVALUATE_RULESET_BYTES}`,
          'ruleset',
        );
      const outcome = await deps.sandbox.evaluate(body.ruleset.files, input);
      if (outcome.kind === 'ok') return outcome.decision;
      if (outcome.kind === 'rejected') throw rejection(outcome.errors);
      if (outcome.kind === 'too_expensive')
        throw new RiskError('RISK_ERR_RULE_TOO_EXPENSIVE', `ruleset refused: ${outcome.reason}`, 'ruleset');
      void reply.header('retry-after', '1');
      throw new RiskError('RISK_ERR_UNAVAILABLE', `ruleset not evaluated: ${outcome.reason}`);
    }
    const ruleset = deps.rules.current();
    if (!ruleset) throw new RiskError('RISK_ERR_UNAVAILABLE', 'no ruleset is loaded');
    const { bypass: _bypass, ...decision } = evaluate(ruleset, input);
    return decision;
  });
}
