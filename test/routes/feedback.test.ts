import t from 'tap';
import { startTestService, testClock, TEST_TOKEN } from '../helpers/service.js';

const clock = testClock();
const service = await startTestService(
  { API_TOKENS: `tests:${TEST_TOKEN},login:login-token-0123456789:decide,fraud:fraud-token-0123456789:feedback` },
  { clock },
);
t.teardown(() => service.close());

const post = (payload: unknown, token = 'fraud-token-0123456789', contentType = 'application/json') =>
  service.app.inject({
    method: 'POST',
    url: '/v1/feedback',
    headers: { 'content-type': contentType, authorization: `Bearer ${token}` },
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });

async function decision(): Promise<string> {
  const reply = await service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', authorization: 'Bearer login-token-0123456789' },
    payload: { user_id: `u-${Math.random()}`, device_id: 'd', ip: '89.160.20.112' },
  });
  await service.effectiveness.flush();
  return (reply.json() as { decision_id: string }).decision_id;
}

t.test(
  'a label for a known decision is stored and audited with the caller; the feedback scope alone suffices',
  async (t) => {
    const id = await decision();
    const reply = await post({
      decision_id: id,
      label: 'fraud',
      source: 'fraud_team',
      note: 'ATO confirmed, ticket 4411',
    });
    t.equal(reply.statusCode, 200);
    t.same(reply.json(), { decision_id: id, label: 'fraud' });
    const stored = await service.records.get(id, clock());
    t.match(stored?.label, { label: 'fraud', source: 'fraud_team', by: 'fraud' });
    t.notOk(
      JSON.stringify(stored).includes('ticket 4411'),
      'the note is not stored in clear (it may name people or addresses)',
    );
    t.equal(
      service.ids.unseal(stored?.label?.note ?? ''),
      'ATO confirmed, ticket 4411',
      'it is stored sealed, for an investigator with the key',
    );
    t.ok(service.logs.some((l) => l.includes('"audit":"feedback_label"') && l.includes('"caller":"fraud"')));
    t.notOk(
      service.logs.some((l) => l.includes('ticket 4411')),
      'the note stays out of the logs',
    );
  },
);

t.test('a decide-only token cannot label (403), no token is 401', async (t) => {
  const id = await decision();
  t.equal((await post({ decision_id: id, label: 'fraud', source: 'x' }, 'login-token-0123456789')).statusCode, 403);
  t.equal(
    (
      await service.app.inject({
        method: 'POST',
        url: '/v1/feedback',
        headers: { 'content-type': 'application/json' },
        payload: { decision_id: id, label: 'fraud', source: 'x' },
      })
    ).statusCode,
    401,
  );
  t.equal((await service.records.get(id, clock()))?.label, undefined, 'nothing was stored');
});

t.test('unknown and expired decisions are 404 RISK_ERR_UNKNOWN_DECISION', async (t) => {
  const unknown = await post({
    decision_id: '0b7c4b5e-8f7a-4c1e-9d55-6f1f2f0f9a10',
    label: 'legitimate',
    source: 'support',
  });
  t.equal(unknown.statusCode, 404);
  t.match(unknown.json(), { code: 'RISK_ERR_UNKNOWN_DECISION', field: 'decision_id' });
  const id = await decision();
  clock.advance(90 * 86_400_000);
  const expired = await post({ decision_id: id, label: 'legitimate', source: 'support' });
  t.equal(expired.statusCode, 404, 'past DECISION_RECORD_TTL_DAYS (90) the decision is gone');
  t.match(expired.json(), { code: 'RISK_ERR_UNKNOWN_DECISION' });
});

t.test('every malformed body is a 400 with a stable code, and nothing is stored', async (t) => {
  const id = await decision();
  const bad: Array<[string, unknown, string]> = [
    ['not a uuid', { decision_id: 'abc', label: 'fraud', source: 'x' }, 'RISK_ERR_VALIDATION'],
    ['a uuid with a path', { decision_id: `${id}/../x`, label: 'fraud', source: 'x' }, 'RISK_ERR_VALIDATION'],
    ['an unknown label', { decision_id: id, label: 'FRAUD', source: 'x' }, 'RISK_ERR_VALIDATION'],
    ['no label', { decision_id: id, source: 'x' }, 'RISK_ERR_VALIDATION'],
    ['a label of another type', { decision_id: id, label: ['fraud'], source: 'x' }, 'RISK_ERR_VALIDATION'],
    ['no source', { decision_id: id, label: 'fraud' }, 'RISK_ERR_VALIDATION'],
    [
      'a source with spaces and markup',
      { decision_id: id, label: 'fraud', source: '<script>x</script>' },
      'RISK_ERR_VALIDATION',
    ],
    [
      'a source of 65 characters',
      { decision_id: id, label: 'fraud', source: `a${'b'.repeat(64)}` },
      'RISK_ERR_VALIDATION',
    ],
    [
      'a note of 501 characters',
      { decision_id: id, label: 'fraud', source: 'x', note: 'n'.repeat(501) },
      'RISK_ERR_VALIDATION',
    ],
    ['an unknown field', { decision_id: id, label: 'fraud', source: 'x', by: 'someone-else' }, 'RISK_ERR_VALIDATION'],
    ['an array body', [{ decision_id: id, label: 'fraud', source: 'x' }], 'RISK_ERR_VALIDATION'],
    [
      'a prototype key',
      `{"decision_id":"${id}","label":"fraud","source":"x","__proto__":{"admin":true}}`,
      'RISK_ERR_MALFORMED_BODY',
    ],
    ['not JSON', '{"decision_id":', 'RISK_ERR_MALFORMED_BODY'],
  ];
  for (const [name, payload, code] of bad) {
    const reply = await post(payload);
    t.equal(reply.statusCode, 400, name);
    t.equal((reply.json() as { code: string }).code, code, `${name}: ${code}`);
  }
  t.equal((await post('decision_id=x', 'fraud-token-0123456789', 'text/plain')).statusCode, 415, 'not JSON: 415');
  t.equal((await service.records.get(id, clock()))?.label, undefined, 'no bad body stored a label');
});

t.test('a store that fails answers 503 RISK_ERR_UNAVAILABLE, never a 500 or a silent success', async (t) => {
  const id = await decision();
  const original = service.records.label;
  (service.records as { label: typeof original }).label = async () => {
    throw new Error('connection lost');
  };
  try {
    const reply = await post({ decision_id: id, label: 'fraud', source: 'x' });
    t.equal(reply.statusCode, 503);
    t.match(reply.json(), { code: 'RISK_ERR_UNAVAILABLE' });
  } finally {
    (service.records as { label: typeof original }).label = original;
  }
});
