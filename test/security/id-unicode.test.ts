import t from 'tap';
import { CHROME_WINDOWS, injectDecide, startTestService, testClock } from '../helpers/service.js';

/**
 * Ids are hashed as UTF-8, which turns every lone surrogate into U+FFFD: `alice\ud800`, `alice\udfff`
 * and `alice\ufffd` would be one pseudonym, one history, one set of trusted devices. Ill-formed ids
 * are refused at the boundary instead, in every position and for every surrogate range.
 */
const service = await startTestService({}, { clock: testClock() });
t.teardown(() => service.close());

const LONE = ['\ud800', '\udbff', '\udc00', '\udfff', '\udc00\ud800'];
const shapes = (lone: string) => [`${lone}alice`, `al${lone}ice`, `alice${lone}`, lone];

for (const field of ['user_id', 'device_id'] as const) {
  t.test(`decide: a ${field} with a lone surrogate is a 400, in every position`, async (t) => {
    for (const lone of LONE) {
      for (const id of shapes(lone)) {
        const body = { user_id: 'alice', device_id: 'dev-1', ip: '203.0.113.7', user_agent: CHROME_WINDOWS };
        const response = await injectDecide(service, { ...body, [field]: id });
        t.equal(response.statusCode, 400, `${field} ${JSON.stringify(id)}`);
        t.equal(response.json().code, 'RISK_ERR_VALIDATION');
        t.equal(response.json().field, field);
      }
    }
  });
}

t.test('decide: well-formed ids outside the BMP, and U+FFFD itself, are accepted and stay apart', async (t) => {
  const ids = ['alice👩‍💻', 'alice\ufffd', 'алиса', 'アリス'];
  const pseudonyms = new Set<string>();
  for (const id of ids) {
    const response = await injectDecide(service, {
      user_id: id,
      device_id: `dev-${id}`,
      ip: '203.0.113.8',
      user_agent: CHROME_WINDOWS,
    });
    t.equal(response.statusCode, 200, JSON.stringify(id));
    pseudonyms.add(service.ids.id('user', id));
  }
  t.equal(pseudonyms.size, ids.length, 'each id its own pseudonym');
});

t.test('decide: a body that is not valid UTF-8 is a 400 before any field is read', async (t) => {
  // Read as a string, each of these would become U+FFFD and collide with `alice\ufffd` above.
  const invalid: Array<[string, number[]]> = [
    ['a byte no UTF-8 sequence starts with', [0xff]],
    ['a lead byte with no continuation', [0xc3]],
    ['an overlong encoding', [0xc0, 0x80]],
    ['an encoded surrogate', [0xed, 0xa0, 0x80]],
    ['a truncated four-byte sequence', [0xf0, 0x9f, 0x98]],
    ['a stray continuation byte', [0x80]],
  ];
  for (const field of ['user_id', 'device_id'] as const) {
    for (const [what, bytes] of invalid) {
      const before = Buffer.from(`{"user_id":"alice","device_id":"dev-1","ip":"203.0.113.9","${field}":"alice`);
      const payload = Buffer.concat([before, Buffer.from(bytes), Buffer.from('"}')]);
      const response = await service.app.inject({
        method: 'POST',
        url: '/v1/decide',
        headers: { 'content-type': 'application/json', ...service.auth },
        payload,
      });
      t.equal(response.statusCode, 400, `${field}: ${what}`);
      t.equal(response.json().code, 'RISK_ERR_MALFORMED_BODY');
    }
  }
});
