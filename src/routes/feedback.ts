import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { RiskError } from '../errors.js';
import type { Effectiveness } from '../events/effectiveness.js';
import { LABELS } from '../store/decision-records.js';
import { parseBody } from './validation.js';
import { doc, errorResponses } from './schemas.js';

export const feedbackBody = z.strictObject({
  decision_id: z.string().uuid('decision_id is the decision_id a decide answered'),
  label: z.enum(LABELS),
  /** Who learned it: bounded, so the report can group by it. */
  source: z
    .string()
    .regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'source is a lowercase word such as user_report, fraud_team or support'),
  // Free text may name a person: kept with the record (pseudonymised store), never logged.
  note: z.string().max(500).optional(),
});

export const feedbackReply = z.object({
  decision_id: z.string(),
  label: z.enum(LABELS),
  /** The label this one replaced, if the decision had one. */
  replaced: z.enum(LABELS).optional(),
});

/**
 * Labels for outcomes learned later ("this wasn't me", a confirmed takeover, a cleared false alarm).
 * A second label replaces the first; both are audited with the caller's name.
 */
/**
 * `sealNote`: the free-text note may name people or addresses, so it is stored sealed (it is for an
 * investigator with the key, never for the report or a metric).
 */
export function registerFeedback(
  app: FastifyInstance,
  deps: { effectiveness: Pick<Effectiveness, 'feedback'>; sealNote: (note: string) => string },
): void {
  const options = {
    config: { scope: 'feedback' as const },
    schema: {
      summary: 'Label a decision fraud or legitimate',
      body: doc(feedbackBody),
      response: { 200: doc(feedbackReply), ...errorResponses(400, 401, 403, 404, 415, 503) },
    },
  };
  app.post('/v1/feedback', options, async (request) => {
    const body = parseBody(feedbackBody, request.body);
    const caller = (request as { caller?: string }).caller ?? '';
    let result: Awaited<ReturnType<Effectiveness['feedback']>>;
    try {
      result = await deps.effectiveness.feedback(body.decision_id, {
        label: body.label,
        source: body.source,
        ...(body.note !== undefined ? { note: deps.sealNote(body.note) } : {}),
        by: caller,
      });
    } catch {
      throw new RiskError('RISK_ERR_UNAVAILABLE', 'decision records unavailable');
    }
    if (!result)
      throw new RiskError(
        'RISK_ERR_UNKNOWN_DECISION',
        'no such decision (unknown, or older than the decision record retention)',
        'decision_id',
      );
    request.log.info(
      {
        audit: 'feedback_label',
        decision_id: body.decision_id,
        label: body.label,
        source: body.source,
        ...(result.previous ? { replaced: result.previous.label, replaced_by: result.previous.by } : {}),
        caller,
      },
      result.previous ? 'decision label replaced' : 'decision labelled',
    );
    return {
      decision_id: body.decision_id,
      label: body.label,
      ...(result.previous ? { replaced: result.previous.label } : {}),
    };
  });
}
