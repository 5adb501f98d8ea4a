import type { AddressInfo } from 'node:net';
import { createSimulator, simulatorCredentials, type Simulator } from '../../src/didit/simulator.js';
import type { Store } from '../../src/store/store.js';
import type { StepUpRung } from '../../src/engine/ladder.js';
import { startTestService, type TestClock, type TestService } from './service.js';
import type { ServiceOptions } from '../../src/compose.js';

export interface DiditStack {
  service: TestService;
  simulator: Simulator;
  secret: string;
  baseUrl: string;
  apiKey: string;
  /** The simulator's API key and workflows, for a second client (the dead-letter CLI). */
  credentials: { apiKey: string; workflows: Record<StepUpRung, string> };
  close(): Promise<void>;
}

/** The service listening on loopback, wired to a simulator that speaks the Didit contract. */
export async function startDiditStack(
  clock: TestClock,
  env: Record<string, string> = {},
  webhookSecret?: string,
  store?: Store,
  extra: Partial<ServiceOptions> = {},
): Promise<DiditStack> {
  const credentials = { ...simulatorCredentials(), ...(webhookSecret ? { webhookSecret } : {}) };
  const simulator = createSimulator({
    ...credentials,
    publicBaseUrl: 'http://127.0.0.1:1',
    clock,
    retryDelaysMs: [10, 20],
  });
  await simulator.app.listen({ port: 0, host: '127.0.0.1' });
  const baseUrl = `http://127.0.0.1:${(simulator.app.server.address() as AddressInfo).port}`;
  const service = await startTestService(
    { DIDIT_TIMEOUT_MS: '300', ...env },
    {
      clock,
      ...extra,
      ...(store ? { store } : {}),
      didit: {
        baseUrl,
        apiKey: credentials.apiKey,
        webhookSecrets: [credentials.webhookSecret],
        workflows: credentials.workflows,
      },
    },
  );
  await service.app.listen({ port: 0, host: '127.0.0.1' });
  simulator.webhookUrl = `http://127.0.0.1:${(service.app.server.address() as AddressInfo).port}/v1/webhooks/didit`;
  return {
    service,
    simulator,
    secret: credentials.webhookSecret,
    baseUrl,
    apiKey: credentials.apiKey,
    credentials: { apiKey: credentials.apiKey, workflows: credentials.workflows },
    async close() {
      await service.close();
      await simulator.app.close();
    },
  };
}
