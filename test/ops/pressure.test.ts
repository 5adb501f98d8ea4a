import t from 'tap';
import { startTestService, injectDecide } from '../helpers/service.js';

t.test('an overloaded event loop sheds with 503 + Retry-After instead of queueing', async (t) => {
  // under-pressure compares the mean loop delay of each sample window with the limit, and keeps that
  // verdict until the next sample: a 100 ms window makes the shed reply last long enough to see.
  const service = await startTestService({
    PRESSURE_MAX_EVENT_LOOP_DELAY_MS: '50',
    PRESSURE_SAMPLE_INTERVAL_MS: '100',
  });
  t.teardown(() => service.close());
  const decide = () => injectDecide(service, { user_id: 'p', device_id: 'd', ip: '89.160.20.112' });
  let calm = 0;
  for (let i = 0; i < 100 && calm !== 200; i++) {
    await new Promise((r) => setTimeout(r, 25));
    calm = (await decide()).statusCode;
  }
  t.equal(calm, 200, 'a calm loop serves (after the start-up load has left the sample)');
  const until = Date.now() + 1500;
  while (Date.now() < until) {
    // Block the event loop, as a CPU-bound overload would.
  }
  // The lag shows up in the next sample or the one after: poll without pause for up to a second.
  let shed = await decide();
  const pollUntil = Date.now() + 1000;
  while (shed.statusCode !== 503 && Date.now() < pollUntil) {
    await new Promise((r) => setImmediate(r));
    shed = await decide();
  }
  t.equal(shed.statusCode, 503);
  t.equal(shed.json().code, 'RISK_ERR_UNAVAILABLE');
  t.ok(Number(shed.headers['retry-after']) > 0);
  let recovered = 0;
  for (let i = 0; i < 100 && recovered !== 200; i++) {
    await new Promise((r) => setTimeout(r, 20));
    recovered = (await decide()).statusCode;
  }
  t.equal(recovered, 200, 'serves again once the loop is calm');
});

t.test(
  'the service sheds decides past MAX_DECIDES_IN_FLIGHT with 503 + Retry-After, counted by reason; other routes pass',
  async (t) => {
    const service = await startTestService({ MAX_DECIDES_IN_FLIGHT: '2' });
    t.teardown(() => service.close());
    const decide = (i: number) => injectDecide(service, { user_id: `p-${i}`, device_id: 'd', ip: '89.160.20.112' });
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => decide(i)));
    const shed = answers.filter((a) => a.statusCode === 503);
    t.equal(answers.filter((a) => a.statusCode === 200).length + shed.length, 20, 'each decide answered 200 or 503');
    t.ok(shed.length > 0 && shed.length <= 18, `${shed.length} of 20 concurrent decides shed, at least 2 served`);
    for (const a of shed) {
      t.equal(a.json().code, 'RISK_ERR_UNAVAILABLE');
      t.equal(a.headers['retry-after'], '1');
    }
    const metrics = await service.metrics.registry.metrics();
    t.match(
      metrics,
      new RegExp(`^risk_shed_total\\{reason="in_flight"\\} ${shed.length}$`, 'm'),
      'every shed decide counted',
    );
    t.equal((await service.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
    t.equal((await decide(99)).statusCode, 200, 'once the burst is answered, decides are admitted again');
  },
);
