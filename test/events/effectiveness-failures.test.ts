import t from 'tap';
import { startDiditStack } from '../helpers/didit.js';
import { testClock, injectDecide } from '../helpers/service.js';
import { scenarioRules, value } from './effectiveness-scenario.js';

const clock = testClock();
const stack = await startDiditStack(clock, { DIDIT_TIMEOUT_MS: '5000', RULES_DIR: scenarioRules() });
const { service, simulator } = stack;
t.teardown(() => stack.close());
const records = service.records as { -readonly [K in keyof typeof service.records]: (typeof service.records)[K] };

let n = 0;
const decide = async () => {
  const user = `fail-${++n}`;
  const reply = await injectDecide(service, {
    user_id: user,
    device_id: `${user}-d`,
    ip: '2001:218::1',
    attributes: { risky: true, watch: false, noisy: false, never: false, shadowy: false },
  });
  return reply;
};

t.test('a records store that fails or hangs never changes or holds a decide; the loss is counted', async (t) => {
  const putMany = records.putMany;
  try {
    records.putMany = async () => {
      throw new Error('store down');
    };
    const before = await value(service.metrics.effectivenessFailures, { operation: 'record' });
    const failed = await decide();
    t.equal(failed.statusCode, 200);
    t.match(
      failed.json(),
      { action: 'PASSIVE', verification: { status: 'created' } },
      'the same answer: a step-up, never SKIP',
    );
    await service.effectiveness.flush();
    t.equal(
      await value(service.metrics.effectivenessFailures, { operation: 'record' }),
      before + 1,
      'risk_effectiveness_failures_total{operation="record"}',
    );

    records.putMany = () => new Promise(() => undefined);
    const hung = await Promise.race([
      decide().then((r) => r.statusCode),
      new Promise((resolve) => setTimeout(() => resolve('held'), 10_000)),
    ]);
    t.equal(hung, 200, 'a hung records store does not hold the decide');
    const started = Date.now();
    await service.effectiveness.flush(200);
    t.ok(Date.now() - started < 5000, 'and flush (shutdown) gives up on it');
  } finally {
    records.putMany = putMany;
  }
});

t.test(
  'a verdict whose outcome cannot be stored answers 503 (Didit retries) and the retry counts it once',
  async (t) => {
    const reply = await decide();
    const session = (reply.json() as { verification: { session_id: string } }).verification.session_id;
    await service.effectiveness.flush();
    const settle = records.settle;
    const approved = () =>
      value(service.metrics.stepUpOutcomes, { rule: 'risky-flag', method: 'PASSIVE', outcome: 'approved' });
    const before = await approved();
    const delivery = simulator.webhookFor(session, 'Approved');
    simulator.sessions.get(session)!.status = 'Approved';
    try {
      records.settle = async () => {
        throw new Error('store down');
      };
      const first = await service.app.inject({
        method: 'POST',
        url: '/v1/webhooks/didit',
        headers: delivery.headers,
        payload: delivery.body,
      });
      t.equal(first.statusCode, 503, 'retry later');
      t.equal(await approved(), before, 'nothing counted');
    } finally {
      records.settle = settle;
    }
    const retry = await service.app.inject({
      method: 'POST',
      url: '/v1/webhooks/didit',
      headers: delivery.headers,
      payload: delivery.body,
    });
    t.equal(retry.statusCode, 200);
    const again = await service.app.inject({
      method: 'POST',
      url: '/v1/webhooks/didit',
      headers: delivery.headers,
      payload: delivery.body,
    });
    t.equal(again.statusCode, 200);
    t.equal(await approved(), before + 1, 'the retry counted it, once');
  },
);

t.test('a sweep that fails is counted and the next one settles the lapse', async (t) => {
  await decide();
  await service.effectiveness.flush();
  clock.advance(11 * 60_000);
  const lapsed = records.lapsed;
  const before = await value(service.metrics.effectivenessFailures, { operation: 'sweep' });
  try {
    records.lapsed = async () => {
      throw new Error('store down');
    };
    t.equal(await service.effectiveness.sweep(), 0);
  } finally {
    records.lapsed = lapsed;
  }
  t.equal(await value(service.metrics.effectivenessFailures, { operation: 'sweep' }), before + 1);
  t.ok((await service.effectiveness.sweep()) >= 1, 'the next sweep abandons it');
});
