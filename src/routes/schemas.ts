import { z } from 'zod';
import { RUNGS, STEP_UP_RUNGS } from '../engine/ladder.js';
import { ERROR_STATUS } from '../errors.js';

/** Reply shapes, in zod: the OpenAPI document is generated from them and tests validate real replies. */
export const errorReply = z.object({
  code: z.enum(Object.keys(ERROR_STATUS) as [keyof typeof ERROR_STATUS, ...Array<keyof typeof ERROR_STATUS>]),
  message: z.string(),
  field: z.string().optional(),
});

const reason = z.object({ rule: z.string(), because: z.string() });

export const verificationReply = z.union([
  z.object({ status: z.literal('not_needed') }),
  z.object({
    status: z.enum(['created', 'reused']),
    session_id: z.string(),
    url: z.string(),
    method: z.enum(STEP_UP_RUNGS),
    workflow_id: z.string(),
  }),
  z.object({ status: z.literal('unavailable'), method: z.enum(STEP_UP_RUNGS), reason: z.string() }),
]);

/** What decide and evaluate both answer about a decision (fields in reply order: the schema serialises). */
export const decisionFields = {
  action: z.enum(RUNGS),
  score: z.number(),
  reasons: z.array(reason),
  shadow: z.array(reason.extend({ action: z.enum(RUNGS) })),
  degraded: z.array(z.string()),
};

export const decideReply = z.object({
  decision_id: z.string().uuid(),
  ...decisionFields,
  ruleset: z.string(),
  signals: z.record(
    z.string(),
    z.union([
      z.boolean(),
      z.number(),
      z.string(),
      z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
    ]),
  ),
  verification: verificationReply,
  fallback: z.literal('backup_factor').optional(),
});

export const sessionReply = z.object({
  session_id: z.string(),
  user_id: z.string().optional(),
  status: z.string(),
  outcome: z.enum(['allow', 'deny', 'hold', 'retry', 'pending']),
  method: z.enum(STEP_UP_RUNGS),
  updated_at: z.string(),
});

export const devicesReply = z.object({
  devices: z.array(
    z.object({ device: z.string(), first_verified_at: z.string(), last_seen_at: z.string(), expires_at: z.string() }),
  ),
});

export const webhookReply = z.object({ received: z.literal(true), result: z.string() });
export const healthReply = z.object({ status: z.literal('ok') });
export const readyReply = z.object({
  status: z.enum(['ready', 'not_ready']),
  failing: z.array(z.string()),
  ruleset: z.string().nullable(),
  store: z.enum(['memory', 'redis']),
  embedded_defaults: z.array(z.string()),
  warnings: z.array(z.string()),
});

/** JSON Schema (2020-12) for a route's schema block: documentation only, zod does the validating. */
export function doc(schema: z.ZodType): Record<string, unknown> {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  delete json.$schema;
  return json;
}

export const errorResponses = (...statuses: number[]) => Object.fromEntries(statuses.map((s) => [s, doc(errorReply)]));
