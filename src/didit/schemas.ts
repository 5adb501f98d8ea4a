import { z } from 'zod';

/** `POST /v3/session/` 201 body (reference §2.4); unknown keys are tolerated, required ones are not optional. */
export const createSessionResponse = z.object({
  session_id: z.string().uuid(),
  session_number: z.number().int().optional(),
  session_token: z.string().min(1).max(64).optional(),
  url: z.string().url(),
  vendor_data: z.string().nullable().optional(),
  metadata: z.unknown().optional(),
  status: z.string(),
  workflow_id: z.string(),
  workflow_version: z.number().int().optional(),
  callback: z.string().nullable().optional(),
});
export type CreateSessionResponse = z.infer<typeof createSessionResponse>;

const livenessCheck = z.object({ method: z.string().optional(), status: z.string().optional(), score: z.number().nullable().optional() }).passthrough();

/** `GET /v3/session/{id}/decision/` (reference §3): only what the engine reads is checked. */
export const decisionResponse = z
  .object({
    session_id: z.string(),
    status: z.string(),
    workflow_id: z.string().optional(),
    vendor_data: z.string().nullable().optional(),
    liveness_checks: z.array(livenessCheck).nullable().optional(),
  })
  .passthrough();
export type DecisionResponse = z.infer<typeof decisionResponse>;

/** A v3 session webhook body (reference §5.4). */
export const webhookBody = z
  .object({
    session_id: z.string().min(1).max(100),
    status: z.string().min(1).max(40),
    webhook_type: z.string().max(60).optional(),
    timestamp: z.number().int(),
    vendor_data: z.string().max(1000).nullable().optional(),
    workflow_id: z.string().max(100).optional(),
    event_id: z.string().max(100).optional(),
    decision: z.object({ liveness_checks: z.array(livenessCheck).nullable().optional() }).passthrough().nullable().optional(),
  })
  .passthrough();
export type WebhookBody = z.infer<typeof webhookBody>;

export const SESSION_STATUSES = ['Not Started', 'In Progress', 'Awaiting User', 'In Review', 'Approved', 'Declined', 'Resubmitted', 'Expired', 'Kyc Expired', 'Abandoned'] as const;
