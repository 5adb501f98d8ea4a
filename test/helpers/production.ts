/**
 * The production process on a real Redis (any topology), a Didit simulator in the test process, and
 * what the tests say to it over HTTP. Pending step-ups are seeded through the test's own store with
 * the service's hash key, as decide would have recorded them.
 */
import type { AddressInfo } from 'node:net';
import { createSimulator, simulatorCredentials } from '../../src/didit/simulator.js';
import { createPseudonymiser, parseHashKey } from '../../src/store/pseudonymise.js';
import type { Store } from '../../src/store/store.js';
import { seedPendingSession, signedVerdict } from './pending-session.js';
import { productionEntry, type ServerProcess } from './process.js';
import { CHROME_WINDOWS } from './service.js';

export const TOKEN = 'production-redis-token-0123456789';
export const HASH_KEY = 'p1:production-redis-hash-key-0123456789ab';
export const PREFIX = 'prod:';
const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
export const ids = createPseudonymiser(parseHashKey(HASH_KEY));
export const entry = productionEntry();

export const credentials = simulatorCredentials();
export const simulator = createSimulator({
  ...credentials,
  publicBaseUrl: 'http://127.0.0.1:1',
  retryDelaysMs: [50, 100],
});
await simulator.app.listen({ port: 0, host: '127.0.0.1' });
const simulatorBase = `http://127.0.0.1:${(simulator.app.server.address() as AddressInfo).port}`;

export function serviceEnv(redisUrl: string, over: Record<string, string> = {}): Record<string, string> {
  return {
    REDIS_URL: redisUrl,
    REDIS_KEY_PREFIX: PREFIX,
    ID_HASH_KEY: HASH_KEY,
    API_TOKENS: `tests:${TOKEN}`,
    DIDIT_API_KEY: credentials.apiKey,
    DIDIT_BASE_URL: simulatorBase,
    DIDIT_WEBHOOK_SECRET: credentials.webhookSecret,
    DIDIT_WORKFLOW_PASSIVE: credentials.workflows.PASSIVE,
    DIDIT_WORKFLOW_FLASHING: credentials.workflows.FLASHING,
    DIDIT_WORKFLOW_ACTIVE_3D: credentials.workflows.ACTIVE_3D,
    // Retention from the environment, at values no default has, so the TTLs show where they came from.
    TRUST_TTL_DAYS: '7',
    HISTORY_TTL_DAYS: '3',
    // 5,000 deliveries from one loopback address within seconds.
    RATE_LIMIT_WEBHOOK_PER_MIN: '100000',
    LOG_LEVEL: 'warn',
    // The shipped Tor list is months old: off here, so decisions are not degraded by it
    // (test/data-io/staleness.test.ts covers the 48 h default).
    TOR_LIST_MAX_AGE_HOURS: '0',
    ...over,
  };
}

export async function decide(server: ServerProcess, user: string, device = 'phone', ip = '89.160.20.112') {
  const response = await fetch(`${server.base}/v1/decide`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({ user_id: user, device_id: device, ip, user_agent: CHROME_WINDOWS }),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, any> };
}

export async function deliver(server: ServerProcess, body: string, headers: Record<string, string>) {
  const response = await fetch(`${server.base}/v1/webhooks/didit`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
  });
  return { status: response.status, body: (await response.json()) as Record<string, any> };
}

/**
 * Delivers as Didit does: again after a 5xx or 404, never after a 2xx/4xx. On a shared 2-core
 * machine a store command can pass its 100 ms deadline under this load; that is a 503 by design.
 */
export async function deliverLikeDidit(
  server: ServerProcess,
  body: string,
  headers: Record<string, string>,
  retried: { count: number },
) {
  for (let attempt = 0; ; attempt++) {
    const result = await deliver(server, body, headers);
    if ((result.status < 500 && result.status !== 404) || attempt === 20) return result;
    retried.count += 1;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function readyz(server: ServerProcess) {
  const response = await fetch(`${server.base}/readyz`);
  return { status: response.status, body: (await response.json()) as { failing: string[]; store: string } };
}

export async function metric(server: ServerProcess, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
  const match = text.match(pattern);
  return match ? Number(match[1]) : 0;
}

let counter = 0;
/** A pending step-up of ours in Redis, as the service's decide would have recorded it. */
export async function pendingSession(store: Store, user = `wh-user-${++counter}`) {
  const session = await seedPendingSession({
    store,
    ids,
    now: Date.now(),
    user,
    workflowId: credentials.workflows.PASSIVE,
  });
  return { sessionId: session.id, user, u: session.pseudonym };
}

/** Didit's signed Approved for the session; vendor_data carries the caller's user id, as decide sends it to Didit. */
export function approved(s: { sessionId: string; user: string }) {
  const session = { id: s.sessionId, user: s.user, workflowId: credentials.workflows.PASSIVE };
  return signedVerdict(session, 'Approved', { tsS: Math.floor(Date.now() / 1000), secret: credentials.webhookSecret });
}
