import type { StepUpRung } from '../../src/engine/ladder.js';
import { SEEDED_IP, seedPendingSession, signedVerdict } from '../helpers/pending-session.js';
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
export const RAW_IP = SEEDED_IP;

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
  const context = { country: 'SE', city: 'Linköping', ua: { browser: 'Chrome', os: 'Windows' } };
  const { id } = await seedPendingSession({
    store: service.store,
    ids: service.ids,
    now: clock(),
    user,
    device,
    workflowId: WORKFLOWS.PASSIVE,
    context,
  });
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
  const tsS = Math.floor(clock() / 1000) + delayS;
  const { body, headers } = signedVerdict({ ...session, workflowId: WORKFLOWS.PASSIVE }, status, {
    tsS,
    secret: DIDIT_SECRET,
    type,
  });
  const response = await service.app.inject({
    method: 'POST',
    url: '/v1/webhooks/didit',
    headers: { 'content-type': 'application/json', ...headers },
    payload: body,
  });
  return (response.json() as { result: string }).result;
}
