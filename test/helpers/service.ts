import { Writable } from 'node:stream';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { createService, type Service, type ServiceOptions } from '../../src/compose.js';

export const TEST_TOKEN = 'test-caller-token-0123456789';
export const TEST_HASH_KEY = 't1:test-hash-key-0123456789abcdefghij';

/** Collects every log line the service writes, so tests can assert on them (and on their absence). */
export function captureLogs(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(line);
      done();
    },
  });
  return { lines, stream };
}

export interface TestClock {
  (): number;
  advance(ms: number): void;
  set(ms: number): void;
}

export function testClock(start = Date.parse('2026-11-25T12:00:00Z')): TestClock {
  let now = start;
  const clock = (() => now) as TestClock;
  clock.advance = (ms) => {
    now += ms;
  };
  clock.set = (ms) => {
    now = ms;
  };
  return clock;
}

export interface TestService extends Service {
  logs: string[];
  auth: { authorization: string };
}

export async function startTestService(
  env: Record<string, string> = {},
  options: Partial<ServiceOptions> = {},
): Promise<TestService> {
  // Several services share one test process and block its event loop while they load data, and
  // functional tests fire bursts of concurrent decides (100 at once for the step-up dedupe), so load
  // shedding is off here unless a test turns it on (test/ops/pressure.test.ts does). Processes
  // started from the real entry point (startServerProcess) keep the production defaults.
  const config = loadConfig({
    API_TOKENS: `tests:${TEST_TOKEN}`,
    ID_HASH_KEY: TEST_HASH_KEY,
    LOG_LEVEL: 'info',
    PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '0',
    PRESSURE_MAX_QUEUE_DELAY_MS: '0',
    MAX_DECIDES_IN_FLIGHT: '0',
    ...env,
  });
  const { lines, stream } = captureLogs();
  const service = await createService(config, { logger: createLogger(config.log.level, stream), ...options });
  await service.app.ready();
  // The decision lines of answered decides are written by the journal within milliseconds; a test
  // reading the log sees them at once.
  Object.defineProperty(service, 'logs', {
    get: () => {
      service.effectiveness.writeLines();
      return lines;
    },
  });
  return Object.assign(service as Service & { logs: string[] }, { auth: { authorization: `Bearer ${TEST_TOKEN}` } });
}

/** POST /v1/decide in process (no socket), as the test caller. */
export function injectDecide(service: Pick<TestService, 'app' | 'auth'>, body: unknown) {
  return service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...service.auth },
    payload: JSON.stringify(body),
  });
}

export const CHROME_WINDOWS =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36';
export const FIREFOX_LINUX = 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0';
