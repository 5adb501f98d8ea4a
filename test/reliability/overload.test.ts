/**
 * T33: the production process (`node dist/…/server.js`, production PRESSURE_* defaults: shedding on)
 * is driven past its measured capacity. Shedding is the production default: PRESSURE_MAX_QUEUE_DELAY_MS
 * (503 for decides read late in a long event-loop turn), MAX_DECIDES_IN_FLIGHT and
 * PRESSURE_MAX_EVENT_LOOP_DELAY_MS. Capacity is measured first in the same test, on the same machine, so
 * the ramp is relative to what this box can do now; latency bounds are relative to the 0.5× phase.
 *
 * The load comes from raw keep-alive sockets (test/helpers/open-loop.ts), a pool of 512 like a login
 * fleet's: node's http client cost as much CPU as a decide and queued past its sockets, so the old
 * version of this test measured the client's own queue (1–2.5 s) rather than the service.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import t from 'tap';
import { type Answer, OpenLoop } from '../helpers/open-loop.js';
import { productionEntry, startServerProcess, type ServerProcess } from '../helpers/process.js';
import { CHROME_WINDOWS } from '../helpers/service.js';

const TOKEN = 'overload-token-0123456789abcdef';

const body = (i: number) =>
  JSON.stringify({
    user_id: `ol-${i % 64}`,
    device_id: 'phone',
    ip: `89.160.20.${129 + (i % 64)}`,
    user_agent: CHROME_WINDOWS,
  });

const p = (values: number[], q: number) => {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 10) / 10;
};

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
        // One caller sends ~100,000 decides here; its per-process limit (60,000/min) is not the subject.
        RATE_LIMIT_CALLER_PER_MIN: '100000000',
        LOG_LEVEL: 'warn',
      },
      productionEntry(),
    );
    t.teardown(() => server.child.kill('SIGKILL'));
    // Two caller addresses × 256: the per-address connection cap (256) is not the subject either.
    const load = new OpenLoop({
      port: server.port,
      path: '/v1/decide',
      headers: { authorization: `Bearer ${TOKEN}` },
      body,
      sources: ['127.0.0.2', '127.0.0.3'],
      perSource: 256,
    });
    t.teardown(() => load.close());
    await load.warm(512);

    // Capacity: 64 closed-loop workers for 3 s after a 2 s warm-up (JIT, first GCs), answered 200s per second.
    await load.closed(16, 2, 0);
    const capacityAnswers = await load.closed(64, 3, 1_000_000);
    const capacity = Math.round(capacityAnswers.filter((a) => a.status === 200).length / 3);
    const rssBefore = await rssMb(server);
    t.comment(`measured capacity: ${capacity} decides/s (this machine, now); RSS ${rssBefore} MB`);
    t.ok(capacity > 0);

    const shedQueueBefore = await shedBy(server, 'queue_delay');
    const phases: Array<{ factor: number; samples: Answer[]; lagMs: number }> = [];
    for (const factor of [0.5, 1, 1.5, 2]) {
      // This process's own scheduling delay in the phase: what the machine withheld from it.
      const lag = monitorEventLoopDelay({ resolution: 5 });
      lag.enable();
      const samples = await load.paced(capacity * factor, 3, factor * 10_000_000);
      lag.disable();
      phases.push({ factor, samples, lagMs: Math.round(lag.percentile(99) / 1e5) / 10 });
    }
    const rampEnded = Date.now();
    const rssPeak = await rssMb(server);
    const shedQueue = (await shedBy(server, 'queue_delay')) - shedQueueBefore;

    let recoveredMs = -1;
    while (Date.now() - rampEnded < 10_000) {
      const probe = await Promise.all(Array.from({ length: 5 }, (_, j) => load.send(900_000 + j)));
      if (probe.every((s) => s.status === 200)) {
        recoveredMs = Date.now() - rampEnded;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }

    const rows = phases.map(({ factor, samples, lagMs }) => {
      const ok = samples.filter((s) => s.status === 200);
      const shed = samples.filter((s) => s.status === 503);
      const full = samples.filter((s) => s.status === 'client_full');
      return {
        offered: `${factor}× (${Math.round(capacity * factor)}/s)`,
        sent: samples.length,
        ok: ok.length,
        shed: shed.length,
        client_full: full.length,
        other: samples.length - ok.length - shed.length - full.length,
        other_kinds: [
          ...new Set(
            samples
              .filter((s) => s.status !== 200 && s.status !== 503 && s.status !== 'client_full')
              .map((s) => s.status),
          ),
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
        client_lag_p99_ms: lagMs,
      };
    });
    for (const row of rows) t.comment(JSON.stringify(row));
    t.comment(
      `RSS ${rssBefore} → ${rssPeak} MB; ${shedQueue} shed on queue delay; full service ${recoveredMs} ms after the ramp ended`,
    );

    // A burst of 200 decides at once (a login service's pool reconnecting), after a quiet second:
    // read in one or two loop turns, answered 200 or 503 + Retry-After, none left waiting.
    await new Promise((r) => setTimeout(r, 1000));
    const burst = await Promise.all(Array.from({ length: 200 }, (_, j) => load.send(800_000 + j)));
    const burstOk = burst.filter((s) => s.status === 200);
    t.comment(
      `burst of 200: ${burstOk.length} × 200 (p99 ${p(
        burstOk.map((s) => s.ms),
        0.99,
      )} ms), ${burst.filter((s) => s.status === 503).length} × 503`,
    );
    t.ok(
      burst.every((s) => s.status === 200 || (s.status === 503 && s.retryAfter !== undefined)),
      'every decide of the burst answered 200, or 503 + Retry-After',
    );

    t.comment(
      `shed by the service: ${await shedBy(server, 'queue_delay')} on queue delay, ${await shedBy(server, 'in_flight')} in flight, ${await shedBy(server, 'event_loop')} on event-loop delay`,
    );

    t.equal(server.child.exitCode, null, 'no crash');
    t.equal(rows[0]!.other, 0, 'below capacity every request is answered 200 or 503: no timeout, no reset');
    t.equal(rows[0]!.shed, 0, 'below capacity nothing is shed');
    t.same(
      rows.map((r) => r.shed_without_retry_after),
      [0, 0, 0, 0],
      'every 503 carries Retry-After',
    );
    for (const row of rows.slice(1))
      t.equal(row.other, 0, `${row.offered}: no timeout, no reset (${row.other_kinds || 'none other'})`);
    t.ok(rows[3]!.shed > 0, `2×: the service sheds (${rows[3]!.shed} × 503)`);
    t.ok(shedQueue > 0, `the sheds are counted in risk_shed_total{reason="queue_delay"} (${shedQueue})`);
    // The bound: 50 ms (the bar) on a quiet machine, where the 0.5× p99 is 10–15 ms and 1.5–2× gave
    // 25–30 ms. A busy machine stretches every latency, the baseline's too: the bound is then 3× the
    // baseline (a phase's p99 spans about two loop turns plus the baseline's own wait), plus this
    // process's own p99 scheduling delay in the phase (the time the machine withheld, which lands
    // on every answer it reads). Without the queue-delay gate the same ramp gave 436–3,000 ms.
    const baseline = rows[0]!.ok_p99_ms;
    for (const [i, row] of rows.slice(2).entries()) {
      const bound = Math.round(Math.max(50, 3 * baseline) + phases[i + 2]!.lagMs);
      t.ok(
        row.ok_p99_ms <= bound,
        `${row.offered}: accepted p99 ${row.ok_p99_ms} ms ≤ max(50, 3 × ${baseline}) + ${phases[i + 2]!.lagMs} ms`,
      );
      if (row.shed > 0)
        t.ok(
          row.shed_p99_ms <= bound,
          `${row.offered}: 503 p99 ${row.shed_p99_ms} ms ≤ max(50, 3 × ${baseline}) + ${phases[i + 2]!.lagMs} ms`,
        );
      // A gate that shed everything would pass the latency checks: 40% of capacity is still served
      // (65–80% on a quiet box; the rest of the CPU goes to the 503s and the load generator).
      t.ok(row.ok >= capacity * 3 * 0.4, `${row.offered}: ${row.ok} served, ≥ 40% of capacity`);
    }
    t.ok(rssPeak < rssBefore + 200, `memory bounded: RSS ${rssBefore} → ${rssPeak} MB`);
    t.ok(recoveredMs >= 0 && recoveredMs <= 5000, `full service ${recoveredMs} ms after the ramp (≤ 5 s)`);
  },
);
