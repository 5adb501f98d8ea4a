import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { doc, errorResponses } from './schemas.js';
import { evaluate } from '../engine/evaluate.js';
import { RUNGS } from '../engine/ladder.js';
import { formatLoadError } from '../engine/ruleset.js';
import { signalTypeProblems, type Signals } from '../engine/signals.js';
import { RiskError } from '../errors.js';
import type { RulesHolder } from '../rules-io/rules-holder.js';
import { compileFromTexts, MAX_RULE_FILE_BYTES } from '../rules-io/load.js';
import { parseBody } from './validation.js';

const evaluateBody = z.strictObject({
  signals: z.record(z.string().max(64), z.union([z.boolean(), z.number(), z.string().max(512), z.record(z.string().max(64), z.union([z.string().max(256), z.number(), z.boolean()]))])),
  degraded: z.array(z.string().max(32)).max(10).optional(),
  now: z.string().datetime().optional(),
  ruleset: z
    .strictObject({ files: z.array(z.strictObject({ name: z.string().regex(/^[a-z0-9._-]{1,64}\.ya?ml$/), text: z.string().max(MAX_RULE_FILE_BYTES) })).min(1).max(50) })
    .optional(),
});

const reason = z.object({ rule: z.string(), because: z.string() });
const evaluateReply = z.object({
  action: z.enum(RUNGS),
  score: z.number(),
  reasons: z.array(reason),
  shadow: z.array(reason.extend({ action: z.enum(RUNGS) })),
  degraded: z.array(z.string()),
  unknown: z.array(z.string()),
  ruleset: z.string(),
  results: z.array(z.object({ rule: z.string(), mode: z.enum(['enforce', 'shadow']), outcome: z.string(), because: z.string() })),
});

/**
 * POST /v1/evaluate: a signals object against the live ruleset or a supplied one, with no side
 * effects at all (no store, no Didit, no metrics): for tooling and the rule playground.
 */
export function registerEvaluate(app: FastifyInstance, deps: { rules: RulesHolder; clock: () => number }): void {
  const schema = { summary: 'Evaluate signals against the live or a supplied ruleset (no side effects)', body: doc(evaluateBody), response: { 200: doc(evaluateReply), ...errorResponses(400, 401, 413, 503) } };
  app.post('/v1/evaluate', { schema, bodyLimit: 1024 * 1024, config: { scope: 'rules' } }, async (request) => {
    const body = parseBody(evaluateBody, request.body);
    const problems = signalTypeProblems(body.signals);
    if (problems.length > 0) throw new RiskError('RISK_ERR_VALIDATION', problems.slice(0, 5).join('; '), 'signals');
    let ruleset = deps.rules.current();
    if (body.ruleset) {
      const compiled = compileFromTexts(body.ruleset.files);
      if (!compiled.ok) throw new RiskError('RISK_ERR_VALIDATION', compiled.errors.slice(0, 5).map(formatLoadError).join('; '), 'ruleset');
      ruleset = compiled.ruleset;
    }
    if (!ruleset) throw new RiskError('RISK_ERR_UNAVAILABLE', 'no ruleset is loaded');
    const decision = evaluate(ruleset, { signals: body.signals as Signals, degraded: body.degraded ?? [], now: body.now ? Date.parse(body.now) : deps.clock(), explainAll: true });
    const { bypass: _bypass, ...reply } = decision;
    return reply;
  });
}
