import type { FastifyInstance } from 'fastify';
import { buildApp, type AppDeps } from '../../src/app.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/metrics.js';
import { parseApiTokens } from '../../src/routes/auth.js';
import { createMemoryStore } from '../../src/store/memory-store.js';
import { createPseudonymiser } from '../../src/store/pseudonymise.js';
import type { Store } from '../../src/store/store.js';

/** A part a route test did not wire: calling it is a test bug, said loudly rather than answered. */
function unwired<T>(part: string): T {
  return new Proxy(
    {},
    {
      get: () => () => {
        throw new Error(`${part} is not wired in this buildTestApp; pass it in the overrides`);
      },
    },
  ) as T;
}

export const TEST_APP_TOKENS = {
  all: 'test-app-all-scopes-0123456789',
  decide: 'test-app-decide-only-0123456789',
  users: 'test-app-users-only-0123456789',
} as const;

export interface TestApp {
  readonly app: FastifyInstance;
  readonly deps: AppDeps;
  readonly store: Store;
  readonly ids: AppDeps['ids'];
  /** Bearer headers per token of TEST_APP_TOKENS. */
  readonly auth: Record<keyof typeof TEST_APP_TOKENS, { authorization: string }>;
}

/**
 * The app of src/app.ts with fakes: a memory store, a fixed pseudonym key, silent logs, and every part
 * a route group does not use left unwired (it throws if reached). For route tests that need neither
 * the rules, GeoIP, lists nor Didit: faster than the whole service, and each test names what it uses.
 */
export async function buildTestApp(overrides: Partial<AppDeps> = {}): Promise<TestApp> {
  const store = overrides.store ?? createMemoryStore();
  const ids = overrides.ids ?? createPseudonymiser({ kid: 'ta', secret: 'test-app-hash-key-0123456789abcdef' });
  const deps: AppDeps = {
    logger: createLogger('silent'),
    rules: unwired('rules'),
    enrich: unwired('enrich'),
    store,
    ids,
    metrics: createMetrics(),
    apiTokens: parseApiTokens(
      `all:${TEST_APP_TOKENS.all},login:${TEST_APP_TOKENS.decide}:decide,privacy:${TEST_APP_TOKENS.users}:users`,
    ),
    clock: Date.now,
    handleWebhook: unwired('handleWebhook'),
    decisions: unwired('decisions'),
    sandbox: unwired('sandbox'),
    ...overrides,
  };
  const app = buildApp(deps);
  await app.ready();
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  return {
    app,
    deps,
    store,
    ids,
    auth: {
      all: bearer(TEST_APP_TOKENS.all),
      decide: bearer(TEST_APP_TOKENS.decide),
      users: bearer(TEST_APP_TOKENS.users),
    },
  };
}
