/**
 * T30: SIGTERM of the real process (`node dist/…/server.js`) under 300 req/s from a client that
 * reuses its connections (http.Agent keepAlive), as a login service's pool does. Pass: 0 resets,
 * 0 requests without an answer, exit 0 within 5 s.
 */
import http from 'node:http';
import t from 'tap';
import { decideBody, openLoop, postDecide } from '../helpers/paced-load.js';
import { productionEntry, startServerProcess } from '../helpers/process.js';

const TOKEN = 'drain-token-0123456789abcdef';

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

    const post = (i: number) => postDecide(agent, server.port, TOKEN, decideBody('drain', i, 16));
    // Warm up (JIT, GeoIP pages, the pool's sockets) so the paced phase measures the drain only.
    for (let i = 0; i < 20; i++) await Promise.all(Array.from({ length: 16 }, (_, j) => post(i * 16 + j)));
    let signalledAt = 0;
    // Paced open loop at 300/s for 1.5 s before the signal and 1.5 s after it (by then the listener is
    // closed and the process has exited).
    const startedAt = Date.now();
    const outcomes = await openLoop(300, 3, (i) => {
      if (!signalledAt && Date.now() - startedAt >= 1500) {
        signalledAt = Date.now();
        server.child.kill('SIGTERM');
      }
      return post(i);
    });
    const exit = await server.exited();
    const exitMs = Date.now() - signalledAt;

    const counts: Record<string, number> = {};
    for (const { status } of outcomes) counts[status] = (counts[status] ?? 0) + 1;
    const answered = outcomes.filter((o) => typeof o.status === 'number');
    const afterSignal = answered.filter((o) => o.at >= signalledAt);
    const drained = afterSignal.filter((o) => o.status === 200).length;
    const served = outcomes.filter((o) => o.at < signalledAt).length;
    t.comment(
      `outcomes: ${JSON.stringify(counts)}; ${outcomes.length} sent at 300/s, ${served} answered in the 1.5 s before SIGTERM (${Math.round(served / 1.5)}/s achieved), ${drained} answered after it; exit ${exit.code} after ${exitMs} ms`,
    );
    t.equal(exit.code, 0, 'exit code 0');
    t.ok(exitMs < 5000, `exited ${exitMs} ms after SIGTERM`);
    t.ok(served > 0 && drained > 0, 'traffic before the signal, and requests in flight at the signal answered');
    t.same(
      outcomes.filter((o) => typeof o.status === 'string' && o.status !== 'ECONNREFUSED').map((o) => o.status),
      [],
      '0 resets and 0 requests without an answer (refused connections are not requests)',
    );
    t.same(
      Object.keys(counts).filter((k) => !['200', '503', 'ECONNREFUSED'].includes(k)),
      [],
      'only 200, 503 or a refused connection',
    );
    for (const { status, headers } of afterSignal)
      if (status === 503) t.equal(headers.connection, 'close', '503 while closing carries connection: close');
    // Answers already on the wire when the signal landed carry keep-alive; every later one closes.
    const closing = afterSignal.filter((o) => o.headers.connection === 'close').length;
    t.comment(`${closing} of ${afterSignal.length} answers completed after the signal carried connection: close`);
    t.ok(closing > 0, 'in-flight requests are answered with connection: close');
  },
);
