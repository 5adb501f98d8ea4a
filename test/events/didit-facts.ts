import { signWebhook } from '../../src/didit/signature.js';
import type { StepUpRung } from '../../src/engine/ladder.js';
import type { StepUpSession } from '../../src/store/store.js';
import type { TestClock, TestService } from '../helpers/service.js';

export const DIDIT_SECRET = 'didit-webhook-secret-for-events-0123456789';
export const WORKFLOWS: Record<StepUpRung, string> = {
  PASSIVE: 'aaaaaaaa-1111-4111-8111-000000000001',
  FLASHING: 'aaaaaaaa-1111-4111-8111-000000000002',
  ACTIVE_3D: 'aaaaaaaa-1111-4111-8111-000000000003',
};
/** Didit settings for a service whose verdicts a test posts itself (signed like Didit signs them). */
export const DIDIT = {
  baseUrl: 'http://127.0.0.1:1',
  apiKey: 'events-test-key',
  webhookSecrets: [DIDIT_SECRET],
  workflows: WORKFLOWS,
};
export const RAW_IP = '89.160.20.112';

let counter = 0;

export interface Session {
  readonly id: string;
  readonly user: string;
  readonly device: string;
}

/** A pending step-up of ours, as a decide would have recorded it (Chrome on Windows, from Sweden). */
export async function pendingSession(
  service: TestService,
  clock: TestClock,
  user: string,
  device = `device-of-${user}`,
): Promise<Session> {
  const id = `00000000-0000-4000-8000-${String(++counter).padStart(12, '0')}`;
  const now = clock();
  const u = service.ids.id('user', user);
  const d = service.ids.id('device', device);
  const session: StepUpSession = {
    sessionId: id,
    user: u,
    device: d,
    method: 'PASSIVE',
    workflowId: WORKFLOWS.PASSIVE,
    url: 'http://127.0.0.1:1/session/x',
    createdAt: now,
    expiresAt: now + 10 * 60_000,
    status: 'pending',
    diditStatus: 'Not Started',
    updatedAt: now,
    lastEventTs: 0,
    grant: {
      user: u,
      device: d,
      ip: service.ids.id('ip', RAW_IP),
      prefix: service.ids.id('net', RAW_IP),
      country: 'SE',
      city: 'Linköping',
      ua: { browser: 'Chrome', os: 'Windows' },
    },
  };
  await service.store.recordPending(session, now);
  return { id, user, device };
}

/** Posts Didit's verdict for the session through the real route; `delayS` makes it newer than the last one. */
export async function verdict(
  service: TestService,
  clock: TestClock,
  session: Session,
  status: string,
  delayS = 0,
  type = 'status.updated',
): Promise<string> {
  const ts = Math.floor(clock() / 1000) + delayS;
  const body = JSON.stringify({
    webhook_type: type,
    timestamp: ts,
    created_at: ts,
    session_id: session.id,
    status,
    vendor_data: session.user,
    workflow_id: WORKFLOWS.PASSIVE,
    // v3 names the liveness method run: without it an Approved is held until the decision is fetched.
    ...(status === 'Approved' ? { decision: { session_id: session.id, status, liveness_checks: [{ method: 'PASSIVE', status: 'Approved', score: 97.5 }] } } : {}),
  });
  const response = await service.app.inject({
    method: 'POST',
    url: '/v1/webhooks/didit',
    headers: { 'content-type': 'application/json', ...signWebhook(body, DIDIT_SECRET) },
    payload: body,
  });
  return (response.json() as { result: string }).result;
}
