import { z } from 'zod';

/**
 * Didit's replies and deliveries, parsed null-tolerantly: Didit writes `null` for optional fields it has
 * no value for (`method`, `workflow_id`, a score), and an authentic Approved refused for a null is an
 * approval lost (Didit does not retry a 2xx). Only what the service reads is checked; unknown keys pass.
 */

/** Didit's ids as its own docs print them: 36 hex-and-dash characters (zod's .uuid() refuses many of them). */
export const DIDIT_ID = /^[0-9a-fA-F-]{36}$/;
const diditId = z.string().regex(DIDIT_ID);
const optionalText = (max = 1000) => z.string().max(max).nullish();

/** `POST /v3/session/` 201 body (reference §2.4). */
export const createSessionResponse = z.object({
  session_id: diditId,
  session_number: z.number().int().nullish(),
  session_token: z.string().min(1).max(64).nullish(),
  url: z.string().url(),
  vendor_data: z.string().nullish(),
  metadata: z.unknown().optional(),
  status: z.string(),
  workflow_id: z.string().nullish(),
  workflow_version: z.number().int().nullish(),
  callback: z.string().nullish(),
});
export type CreateSessionResponse = z.infer<typeof createSessionResponse>;

const livenessCheck = z
  .object({ method: z.string().max(40).nullish(), status: z.string().nullish(), score: z.number().nullish() })
  .passthrough();

/** What a decision says about liveness: v3's `liveness_checks[]`, or the v1/v2 singular `liveness`. */
const livenessFields = {
  liveness_checks: z.array(livenessCheck).nullish(),
  liveness: livenessCheck.nullish(),
};

/** `GET /v3/session/{id}/decision/` (reference §3). */
export const decisionResponse = z
  .object({
    session_id: z.string(),
    status: z.string(),
    workflow_id: z.string().nullish(),
    vendor_data: z.string().nullish(),
    ...livenessFields,
  })
  .passthrough();
export type DecisionResponse = z.infer<typeof decisionResponse>;

/** A session webhook body (reference §5.4), v3 and the v1/v2 shapes. */
export const webhookBody = z
  .object({
    session_id: z.string().min(1).max(100),
    status: z.string().min(1).max(40),
    webhook_type: optionalText(60),
    timestamp: z.number().int(),
    vendor_data: optionalText(),
    workflow_id: optionalText(100),
    event_id: optionalText(100),
    decision: z.object(livenessFields).passthrough().nullish(),
  })
  .passthrough();
export type WebhookBody = z.infer<typeof webhookBody>;

export const SESSION_STATUSES = [
  'Not Started',
  'In Progress',
  'Awaiting User',
  'In Review',
  'Approved',
  'Declined',
  'Resubmitted',
  'Expired',
  'Kyc Expired',
  'Abandoned',
] as const;
