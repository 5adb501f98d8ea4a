/**
 * T30: SIGTERM of the real process (`node dist/…/server.js`) under 300 req/s from a client that
 * reuses its connections (http.Agent keepAlive), as a login service's pool does. Pass: 0 resets,
 * 0 requests without an answer, exit 0 within 5 s.
 */
import http from 'node:http';
import t from 'tap';
import { productionEntry, startServerProcess } from '../helpers/process.js';
import { CHROME_WINDOWS } from '../helpers/service.js';

const TOKEN = 'drain-token-0123456789abcdef';

type Outcome = { status: number; connection: string | undefined } | { error: string };

function post(agent: http.Agent, port: number, i: number): Promise<Outcome> {
  const body = JSON.stringify({
    user_id: `drain-${i % 16}`,
    device_id: 'phone',
    ip: `89.160.20.${129 + (i % 16)}`,
    user_agent: CHROME_WINDOWS,
  });
  return new Promise((resolve) => {
    const request = http.request(
      {
        host: '127.0.0.1',
        port,
        path: '/v1/decide',
        method: 'POST',
        agent,
        headers: {
          authorization: `Bearer ${TOKEN}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        },
      },
      (response) => {
        response.resume();
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, connection: response.headers.connection }),
        );
        response.on('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
      },
    );
    request.on('error', (error: NodeJS.ErrnoException) => resolve({ error: error.code ?? error.message }));
    request.end(body);
  });
}

t.test(
  'T30: SIGTERM at 300 req/s on kept-alive connections: 0 resets, 0 lost, in-flight answered with connection: close',
  async (t) => {
    const server = await startServerProcess(
      {
        API_TOKENS: `tests:${TOKEN}`,
        ID_HASH_KEY: 'dr:drain-hash-key-0123456789abcdefgh',
        RATE_LIMIT_USER_PER_MIN: '100000',
        LOG_LEVEL: 'warn',
      },
      productionEntry(),
    );
    t.teardown(() => server.child.kill('SIGKILL'));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    t.teardown(() => agent.destroy());

    // Warm up (JIT, GeoIP pages, the pool's sockets) so the paced phase measures the drain only.
    for (let i = 0; i < 20; i++)
      await Promise.all(Array.from({ length: 16 }, (_, j) => post(agent, server.port, i * 16 + j)));
    const outcomes: Array<{ sentAt: number; doneAt: number; outcome: Outcome }> = [];
    const pending: Array<Promise<void>> = [];
    let signalledAt = 0;
    const startedAt = Date.now();
    // Paced open loop: a request every 3.33 ms whatever the answers do, for 1.5 s before the signal
    // and 1.5 s after it (by then the listener is closed and the process has exited).
    for (let i = 0; Date.now() - startedAt < 3000; i++) {
      const due = startedAt + (i * 1000) / 300;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (!signalledAt && Date.now() - startedAt >= 1500) {
        signalledAt = Date.now();
        server.child.kill('SIGTERM');
      }
      const sentAt = Date.now();
      pending.push(
        post(agent, server.port, i).then((outcome) => void outcomes.push({ sentAt, doneAt: Date.now(), outcome })),
      );
    }
    await Promise.all(pending);
    const exit = await server.exited();
    const exitMs = Date.now() - signalledAt;

    const counts: Record<string, number> = {};
    for (const { outcome } of outcomes) {
      const key = 'status' in outcome ? String(outcome.status) : outcome.error;
      counts[key] = (counts[key] ?? 0) + 1;
    }
    const afterSignal = outcomes.filter((o) => o.doneAt >= signalledAt && 'status' in o.outcome);
    const drained = afterSignal.filter((o) => 'status' in o.outcome && o.outcome.status === 200).length;
    const served = outcomes.filter((o) => o.doneAt < signalledAt).length;
    t.comment(
      `outcomes: ${JSON.stringify(counts)}; ${outcomes.length} sent at 300/s, ${served} answered in the 1.5 s before SIGTERM (${Math.round(served / 1.5)}/s achieved), ${drained} answered after it; exit ${exit.code} after ${exitMs} ms`,
    );
    t.equal(exit.code, 0, 'exit code 0');
    t.ok(exitMs < 5000, `exited ${exitMs} ms after SIGTERM`);
    t.ok(served > 0 && drained > 0, 'traffic before the signal, and requests in flight at the signal answered');
    const resets = outcomes.filter(({ outcome }) => 'error' in outcome && outcome.error !== 'ECONNREFUSED');
    t.same(
      resets.map((r) => r.outcome),
      [],
      '0 resets and 0 requests without an answer (refused connections are not requests)',
    );
    t.same(
      Object.keys(counts).filter((k) => !['200', '503', 'ECONNREFUSED'].includes(k)),
      [],
      'only 200, 503 or a refused connection',
    );
    for (const { outcome } of afterSignal)
      if ('status' in outcome && outcome.status === 503)
        t.equal(outcome.connection, 'close', '503 while closing carries connection: close');
    // Answers already on the wire when the signal landed carry keep-alive; every later one closes.
    const closing = afterSignal.filter((o) => 'status' in o.outcome && o.outcome.connection === 'close').length;
    t.comment(`${closing} of ${afterSignal.length} answers completed after the signal carried connection: close`);
    t.ok(closing > 0, 'in-flight requests are answered with connection: close');
  },
);
