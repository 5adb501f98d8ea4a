/**
 * A real-Didit configuration, as production-like settings (REDIS_URL, NODE_ENV=production, a webhook
 * secret) require; nothing contacts DIDIT_BASE_URL at startup.
 */
export const DIDIT_ENV = {
  DIDIT_API_KEY: 'test-didit-api-key-0123456789',
  DIDIT_BASE_URL: 'http://127.0.0.1:9',
  DIDIT_WEBHOOK_SECRET: 'test-webhook-secret-0123456789',
  DIDIT_WORKFLOW_PASSIVE: '11111111-1111-4111-8111-111111111111',
  DIDIT_WORKFLOW_FLASHING: '22222222-2222-4222-8222-222222222222',
  DIDIT_WORKFLOW_ACTIVE_3D: '33333333-3333-4333-8333-333333333333',
} as const;
