import v8 from 'node:v8';
import vm from 'node:vm';
import fc from 'fast-check';
import t from 'tap';
import { signWebhook } from '../../src/didit/signature.js';
import { startTestService } from '../helpers/service.js';
import { countBy } from '../helpers/count.js';

/**
 * T17, T18, T20: 10,000 generated bodies each for decide and the webhook, seeded (the seed is
 * printed), with prototype-pollution keys, deep nesting, huge strings, odd IP forms and lone
 * surrogates. Pass: 0 5xx, 0 crashes, Object.prototype untouched.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 20261125);
const RUNS = Number(process.env.FUZZ_RUNS ?? 10_000);
const service = await startTestService({
  RATE_LIMIT_USER_PER_MIN: '100000000',
  RATE_LIMIT_WEBHOOK_PER_MIN: '100000000',
  LOG_LEVEL: 'silent',
});
t.teardown(() => service.close());
const prototypeKeys = () => Object.getOwnPropertyNames(Object.prototype).sort().join(',');
const before = prototypeKeys();
// Heap figures mean something only after a full collection: expose gc() to this file alone.
v8.setFlagsFromString('--expose_gc');
const gc = vm.runInNewContext('gc') as () => void;
gc();
const heapBefore = process.memoryUsage().heapUsed;

const oddIp = fc.constantFrom(
  '01.02.03.04',
  'fe80::1%eth0',
  '::ffff:1.2.3.4',
  '300.1.1.1',
  '1.2.3',
  '::',
  '0.0.0.0',
  '255.255.255.255',
  '2001:db8::1',
  ' 1.2.3.4',
  '1.2.3.4\n',
  '１.２.３.４',
  '0x7f.1',
  '[::1]',
);
const poison = fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty');
const nasty = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom('\uD800', '\u0000', 'a'.repeat(65_536), '\r\n{"level":60}', '💥'.repeat(100)),
);
const deep = fc.integer({ min: 1, max: 2000 }).map((depth) => '['.repeat(depth) + ']'.repeat(depth));

const decideBody = fc.oneof(
  fc
    .record(
      {
        user_id: nasty,
        device_id: nasty,
        ip: fc.oneof(oddIp, fc.ipV4(), fc.ipV6()),
        user_agent: fc.option(nasty, { nil: undefined }),
        purpose: fc.option(fc.oneof(nasty, fc.constant('login')), { nil: undefined }),
      },
      { requiredKeys: [] },
    )
    .map((o) => JSON.stringify(o)),
  fc
    .dictionary(fc.oneof(poison, fc.string({ maxLength: 10 })), fc.jsonValue({ maxDepth: 3 }))
    .map((o) => JSON.stringify(o)),
  fc
    .tuple(poison, fc.jsonValue({ maxDepth: 2 }))
    .map(([k, v]) => `{"user_id":"u","device_id":"d","ip":"1.2.3.4","${k}":${JSON.stringify(v)}}`),
  deep,
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 200 }),
  fc
    .record({
      user_id: fc.constant('u'),
      device_id: fc.constant('d'),
      ip: fc.constant('1.2.3.4'),
      attributes: fc.dictionary(fc.oneof(poison, fc.string({ maxLength: 70 })), fc.jsonValue({ maxDepth: 2 })),
    })
    .map((o) => JSON.stringify(o)),
);

function histogram(statuses: number[]): Record<number, number> {
  return countBy(statuses, (s) => s);
}

t.test(`decide: ${RUNS} generated bodies (seed ${SEED}) never produce a 5xx`, async (t) => {
  process.stdout.write(`# fuzz seed ${SEED}\n`);
  const statuses: number[] = [];
  let slowest = 0;
  await fc.assert(
    fc.asyncProperty(decideBody, async (payload) => {
      const started = Date.now();
      const response = await service.app.inject({
        method: 'POST',
        url: '/v1/decide',
        headers: { 'content-type': 'application/json', ...service.auth },
        payload,
      });
      slowest = Math.max(slowest, Date.now() - started);
      statuses.push(response.statusCode);
      if (response.statusCode >= 500) throw new Error(`5xx for ${payload.slice(0, 200)}`);
      if (response.statusCode === 400) {
        const body = response.json() as { code: string; message: string };
        if (!/^RISK_ERR_/.test(body.code)) throw new Error('400 without a stable code');
        if (/at |\.ts:|Error:/.test(body.message)) throw new Error('stack trace in a reply');
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );
  t.equal(
    statuses.filter((s) => s >= 500).length,
    0,
    `statuses ${JSON.stringify(histogram(statuses))}, slowest ${slowest} ms`,
  );
  t.ok(statuses.includes(200) && statuses.includes(400), 'both valid and invalid bodies were generated');
});

t.test(`webhook: ${RUNS} unsigned, garbage, forged or oversized deliveries get only 2xx/400/401/413/415`, async (t) => {
  const secret = 'not-the-service-secret-0123456789';
  const delivery = fc.oneof(
    fc.jsonValue().map((v) => ({ body: JSON.stringify(v), headers: {} as Record<string, string> })),
    fc
      .record({ session_id: fc.string(), status: fc.string(), timestamp: fc.integer(), webhook_type: fc.string() })
      .map((o) => {
        const body = JSON.stringify(o);
        return { body, headers: signWebhook(body, secret) };
      }),
    fc.tuple(fc.string({ maxLength: 64 }), fc.string({ maxLength: 100 })).map(([sig, body]) => ({
      body,
      headers: { 'x-signature-v2': sig, 'x-signature': sig, 'x-signature-simple': sig, 'x-timestamp': sig },
    })),
    fc.constant({
      body: JSON.stringify({ pad: 'x'.repeat(300 * 1024) }),
      headers: { 'x-signature-v2': 'a'.repeat(64) },
    }),
    deep.map((body) => ({ body, headers: { 'x-signature-v2': 'a'.repeat(64) } })),
    poison.map((k) => ({
      body: `{"${k}":{"polluted":true},"session_id":"x"}`,
      headers: { 'x-signature-v2': 'b'.repeat(64) },
    })),
  );
  const statuses: number[] = [];
  await fc.assert(
    fc.asyncProperty(
      delivery,
      fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded'),
      async ({ body, headers }, type) => {
        const response = await service.app.inject({
          method: 'POST',
          url: '/v1/webhooks/didit',
          headers: { 'content-type': type, ...headers },
          payload: body,
        });
        statuses.push(response.statusCode);
        if (![200, 400, 401, 413, 415].includes(response.statusCode))
          throw new Error(`${response.statusCode} for ${body.slice(0, 100)}`);
      },
    ),
    { numRuns: RUNS, seed: SEED + 1 },
  );
  const h = histogram(statuses);
  t.equal(statuses.filter((s) => s >= 500).length, 0, `statuses ${JSON.stringify(h)}`);
});

t.test('Object.prototype is untouched and the heap did not run away', async (t) => {
  t.equal(prototypeKeys(), before);
  t.equal(({} as Record<string, unknown>).polluted, undefined);
  gc();
  const grown = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
  t.ok(grown < 100, `heap grew ${grown.toFixed(1)} MB over ${2 * RUNS} requests`);
});
