import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { signWebhook } from '../../src/didit/signature.js';
import { startTestService } from '../helpers/service.js';

// What an unauthenticated sender can make the webhook spend. Before: a 250 KB junk body with a junk
// signature cost ~87 ms of CPU, 40,000 nested objects gave a 500, and four junk senders made decides shed.
const secret = 'cost-test-webhook-secret-0123456789ab';
const workflows = {
  PASSIVE: 'aaaaaaaa-1111-4111-8111-000000000001',
  FLASHING: 'aaaaaaaa-1111-4111-8111-000000000002',
  ACTIVE_3D: 'aaaaaaaa-1111-4111-8111-000000000003',
};
const didit = { baseUrl: 'http://127.0.0.1:9', apiKey: 'unused', webhookSecrets: [secret], workflows };
// CPU is measured with load shedding off (a shed 503 is not the webhook's cost); the decide test below
// runs a second service with shedding on, as in production, where a shed decide would show.
const service = await startTestService({}, { didit });
t.teardown(() => service.close());

/** The costliest junk that fits: a 63 KiB JSON object of floats (canonicalising floats is the slow part). */
const numbers = Array.from({ length: 9000 }, (_, i) => (i + 0.123456789) / 7);
const junk = JSON.stringify({ session_id: 'x', status: 'Approved', timestamp: 1, pad: numbers }).slice(
  0,
  63 * 1024 - 2,
);
const junkBody = `${junk.slice(0, junk.lastIndexOf(','))}]}`;
const junkHeaders = {
  'x-signature': 'a'.repeat(64),
  'x-signature-v2': 'b'.repeat(64),
  'x-signature-simple': 'c'.repeat(64),
};

const inject = (payload: string, headers: Record<string, string>) =>
  service.app.inject({
    method: 'POST',
    url: '/v1/webhooks/didit',
    remoteAddress: '198.51.100.7',
    headers: { 'content-type': 'application/json', ...headers },
    payload,
  });

/** CPU (user + system) per request, in ms, over n requests, `parallel` at a time (a refused one waits out the tarpit). */
async function cpuPerRequest(
  n: number,
  send: () => Promise<{ statusCode: number }>,
  expect: number,
  parallel = 1,
): Promise<number> {
  const before = process.cpuUsage();
  for (let i = 0; i < n; i += parallel) {
    for (const r of await Promise.all(Array.from({ length: Math.min(parallel, n - i) }, send))) {
      if (r.statusCode !== expect) throw new Error(`expected ${expect}, got ${r.statusCode}`);
    }
  }
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000 / n;
}

t.test('CPU per failing request is bounded, and cheapest once a source spent its failure budget', async (t) => {
  t.ok(
    Buffer.byteLength(junkBody) < 64 * 1024 && Buffer.byteLength(junkBody) > 60 * 1024,
    `junk body of ${Buffer.byteLength(junkBody)} bytes`,
  );
  const authentic = JSON.stringify({
    session_id: 'not-ours',
    status: 'Approved',
    timestamp: Math.floor(Date.now() / 1000),
    webhook_type: 'status.updated',
    pad: numbers.slice(0, 2500),
  });
  const authenticHeaders = signWebhook(authentic, secret);
  // Baseline in the same process: an authentic delivery of similar size (raw MAC, then parse and look-up).
  const baseline = await cpuPerRequest(50, () => inject(authentic, authenticHeaders), 200);
  // The first 3 failures of a minute: the raw MAC fails, then the V2 canonical form runs.
  const full = await cpuPerRequest(3, () => inject(junkBody, junkHeaders), 401);
  // Failures 4 to 120: the raw MAC only, still answered 401 (after the tarpit).
  const rawOnly = await cpuPerRequest(117, () => inject(junkBody, junkHeaders), 401, 59);
  const limited = await cpuPerRequest(100, () => inject(junkBody, junkHeaders), 429, 50);
  const tooDeep = await cpuPerRequest(
    50,
    () => inject('['.repeat(40_000), { 'x-signature-v2': 'b'.repeat(64) }),
    429,
    50,
  );
  t.comment(
    `CPU per request: authentic ${baseline.toFixed(2)} ms, junk canonicalised ${full.toFixed(2)} ms, junk raw MAC only ${rawOnly.toFixed(2)} ms, junk over budget ${limited.toFixed(2)} ms, 40,000-deep ${tooDeep.toFixed(2)} ms (was ~87 ms for 250 KB)`,
  );
  // Ratios within this run only (speed is the bench's business, never an absolute time in the suite):
  // the costly canonical form is spent on a source's first few failures, and never again that minute.
  t.ok(rawOnly < full && limited < full, 'past its first failures a source costs less per request (no parsing at all)');
});

t.test('nesting and size never reach a 500: 4xx with stable codes', async (t) => {
  // Each probe from a fresh source, with its budget intact (past 3 failures a source gets the raw MAC only).
  let source = 0;
  const send = (payload: string, headers: Record<string, string>) =>
    service.app.inject({
      method: 'POST',
      url: '/v1/webhooks/didit',
      remoteAddress: `203.0.113.${++source}`,
      headers: { 'content-type': 'application/json', ...headers },
      payload,
    });
  const deepArrays = `${'['.repeat(30_000)}${']'.repeat(30_000)}`;
  const deepObjects = `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`;
  for (const [name, payload] of [
    ['30,000 nested arrays', deepArrays],
    ['10,000 nested objects', deepObjects],
  ] as const) {
    for (const headers of <Array<Record<string, string>>>[
      { 'x-signature-v2': 'b'.repeat(64) },
      { 'x-signature-simple': 'c'.repeat(64) },
      junkHeaders,
    ]) {
      const r = await send(payload, headers);
      t.equal(r.statusCode, 400, `${name}, ${Object.keys(headers).join('+')}`);
      t.equal(r.json().code, 'RISK_ERR_BODY_TOO_DEEP');
    }
  }
  const unterminated = await send('['.repeat(40_000), { 'x-signature-v2': 'b'.repeat(64) });
  t.same(
    [unterminated.statusCode, unterminated.json().code],
    [400, 'RISK_ERR_MALFORMED_BODY'],
    '40,000 unclosed brackets: not JSON',
  );
  const big = await send(`${'{"a":'.repeat(40_000)}1${'}'.repeat(40_000)}`, junkHeaders);
  t.equal(big.statusCode, 413, '40,000 nested objects are over the 64 KiB body cap');
  t.equal(big.json().code, 'RISK_ERR_BODY_TOO_LARGE');
});

t.test('four junk senders from one address do not make decides shed: p99 within 2× of quiet + 10 ms', async (t) => {
  const shedding = await startTestService(
    { PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '250', RATE_LIMIT_USER_PER_MIN: '100000' },
    { didit },
  );
  t.teardown(() => shedding.close());
  await shedding.app.listen({ port: 0, host: '127.0.0.1' });
  const base = `http://127.0.0.1:${(shedding.app.server.address() as AddressInfo).port}`;
  let user = 0;
  const shed = { quiet: 0, loaded: 0 };
  let phase: 'quiet' | 'loaded' = 'quiet';
  const decide = async (): Promise<number> => {
    const started = performance.now();
    const response = await fetch(`${base}/v1/decide`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...shedding.auth },
      body: JSON.stringify({ user_id: `cost-${++user}`, device_id: 'd', ip: '89.160.20.112' }),
    });
    await response.arrayBuffer();
    if (response.status === 503) shed[phase] += 1;
    else if (response.status !== 200) throw new Error(`decide answered ${response.status}`);
    return performance.now() - started;
  };
  const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.99)]!;
  for (let i = 0; i < 50; i++) await decide(); // warm-up

  // The four senders run in a worker thread: their own sending must not count against this event loop.
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
    let stop = true;
    const codes = {};
    const sender = async () => {
      while (!stop) {
        try {
          const r = await fetch(workerData.url, { method: 'POST', headers: workerData.headers, body: workerData.body });
          await r.arrayBuffer();
          codes[r.status] = (codes[r.status] || 0) + 1;
        } catch { codes.error = (codes.error || 0) + 1; }
      }
    };
    parentPort.on('message', async (m) => {
      if (m === 'start') { stop = false; Promise.all([sender(), sender(), sender(), sender()]).then(() => parentPort.postMessage(codes)); }
      else stop = true;
    });`,
    {
      eval: true,
      workerData: {
        url: `${base}/v1/webhooks/didit`,
        headers: { 'content-type': 'application/json', ...junkHeaders },
        body: junkBody,
      },
    },
  );
  t.teardown(() => worker.terminate());
  let junkSent = 0;
  const junkCodes: Record<string, number> = {};
  const senders = {
    start: () => worker.postMessage('start'),
    stop: () =>
      new Promise<void>((resolve) => {
        worker.once('message', (codes: Record<string, number>) => {
          for (const [code, count] of Object.entries(codes)) junkCodes[code] = count;
          junkSent = Object.values(junkCodes).reduce((a, b) => a + b, 0);
          resolve();
        });
        worker.postMessage('stop');
      }),
  };
  // Quiet and loaded rounds alternate, so the other work on this shared machine falls on both alike.
  const quiet: number[] = [];
  const loaded: number[] = [];
  // Ten short rounds each, so bursts of other work on this shared machine land on both pools alike.
  for (let round = 0; round < 10; round++) {
    phase = 'quiet';
    for (let i = 0; i < 50; i++) quiet.push(await decide());
    senders.start();
    await new Promise((r) => setTimeout(r, 100));
    phase = 'loaded';
    try {
      for (let i = 0; i < 50; i++) loaded.push(await decide());
    } finally {
      await senders.stop();
    }
  }
  t.comment(
    `decide p99: quiet ${p99(quiet).toFixed(1)} ms, with 4 junk senders ${p99(loaded).toFixed(1)} ms; shed (503): quiet ${shed.quiet}, loaded ${shed.loaded}; ${junkSent} junk requests answered ${JSON.stringify(junkCodes)}`,
  );
  t.ok(
    junkSent > 40,
    `the senders kept sending past their first 3 failures (${junkSent}; each answer then waits out the 1 s tarpit)`,
  );
  t.notOk(junkCodes[500], 'no 500');
  // A 503 answers at once, so the latency check alone would pass a sender that stalls the loop into
  // shedding (a synchronous tarpit: 497 of 500 loaded decides shed, and 412 of the quiet ones after
  // them, p99 11.7 ms). 1% of the 1,000 for a stall of the shared machine's own.
  t.ok(
    shed.loaded + shed.quiet <= 10,
    `decides shed: ${shed.loaded} with the junk senders, ${shed.quiet} between their rounds (≤ 10 of 1,000)`,
  );
  // The p99 of 500 decides is their fifth slowest: on a 2-core box running other test files one
  // stall of theirs moves it by ~10 ms (CI: 13.4 against 5.4 ms quiet, once, with 43 junk requests in
  // all). A sender that cost the loop real time (a synchronous tarpit holds it for 1 s, a costly
  // signature check tens of ms under four senders) adds far more than that margin.
  t.ok(
    p99(loaded) <= 2 * p99(quiet) + 10,
    `p99 with junk ${p99(loaded).toFixed(1)} ms ≤ 2 × quiet ${p99(quiet).toFixed(1)} ms + 10 ms`,
  );
});
