import t from 'tap';
import { SIGNALS, signalTypeProblems, type TypedSignals } from '../../src/engine/signals.js';
import { CHROME_WINDOWS, startTestService, testClock } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

const clock = testClock();
const service = await startTestService({}, { clock });
t.teardown(() => service.close());

t.test('enrich hands the engine only declared signals, each of its declared type', async (t) => {
  await trustDirectly(
    service,
    { user: 'erin', device: 'laptop', ip: '89.160.20.112', country: 'SE', asn: 29518 },
    clock(),
  );
  const response = await service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { ...service.auth, 'content-type': 'application/json' },
    payload: JSON.stringify({
      user_id: 'erin',
      device_id: 'laptop',
      ip: '89.160.20.112',
      user_agent: CHROME_WINDOWS,
      attributes: { plan: 'pro' },
    }),
  });
  t.equal(response.statusCode, 200);
  const { signals, degraded } = response.json() as { signals: Record<string, unknown>; degraded: string[] };
  t.same(degraded, [], 'every input answered, so every signal it feeds should be there');
  t.same(signalTypeProblems(signals), [], 'no unknown name, no value of the wrong type');
  // The history was read: every store signal is known (the optional ones only where they apply).
  const optional = new Set(['user.last_verified_days', 'ip.asn_known', 'geo.country_known']);
  for (const spec of SIGNALS)
    if (spec.source === 'store' && !optional.has(spec.name))
      t.not(signals[spec.name], undefined, `${spec.name} is known`);
  t.same(signals['request.attributes'], { plan: 'pro' });
  t.equal(signals['request.purpose_class'], undefined, 'derived by the engine, not by enrich');
});

t.test('the signal map is typed from the catalogue (tsc checks the lines marked below)', async (t) => {
  const s: TypedSignals = { 'ip.tor': true, 'velocity.decides_1h': 3, 'request.attributes': { plan: 'pro' } };
  // @ts-expect-error a misspelt signal name does not compile
  s['ip.torr'] = true;
  // @ts-expect-error a value of another type does not compile
  s['device.seen_count'] = true;
  // @ts-expect-error a map signal holds only strings, numbers and booleans
  s['request.attributes'] = { nested: { deep: 1 } };
  // What the compiler refuses above, the runtime check (for hand-written signals) refuses too.
  t.same(signalTypeProblems(s), ['unknown signal ip.torr', 'device.seen_count must be int']);
});
