import Fastify from 'fastify';
import t from 'tap';
import { decideReply, doc } from '../../src/routes/schemas.js';
import { scenarioRules } from '../events/effectiveness-scenario.js';
import { CHROME_WINDOWS, injectDecide, startTestService, testClock } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

const clock = testClock();
const service = await startTestService({}, { clock });
t.teardown(() => service.close());

async function decide(body: Record<string, unknown>, headers: Record<string, string> = service.auth) {
  const response = await service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...headers },
    payload: JSON.stringify(body),
  });
  return { status: response.statusCode, body: response.json() as Record<string, any> };
}

t.test('a returning user on a new device gets a passive selfie with reasons', async (t) => {
  const { status, body } = await decide({
    user_id: 'alice',
    device_id: 'laptop',
    ip: '89.160.20.112',
    user_agent: CHROME_WINDOWS,
  });
  t.equal(status, 200);
  t.equal(body.action, 'PASSIVE');
  t.match(body.decision_id, /^[0-9a-f-]{36}$/);
  t.ok(body.reasons.some((r: { rule: string }) => r.rule === 'new-device'));
  t.equal(body.signals['geo.country'], 'SE');
  t.equal(body.signals['ip.asn'], 29518);
  t.equal(body.signals['ua.browser'], 'Chrome');
  t.same(body.degraded, []);
  t.match(body.ruleset, /^[0-9a-f]{16}$/);
  t.same(body.verification, { status: 'not_needed' });
});

t.test('known device + known IP skips; the same device on a new IP is passive', async (t) => {
  await trustDirectly(
    service,
    { user: 'bob', device: 'phone', ip: '89.160.20.112', country: 'SE', asn: 29518 },
    clock(),
  );
  const known = await decide({ user_id: 'bob', device_id: 'phone', ip: '89.160.20.112', user_agent: CHROME_WINDOWS });
  t.equal(known.body.action, 'SKIP');
  t.same(known.body.reasons, []);
  const newIp = await decide({ user_id: 'bob', device_id: 'phone', ip: '216.160.83.56', user_agent: CHROME_WINDOWS });
  t.equal(newIp.body.action, 'PASSIVE');
  const newDevice = await decide({
    user_id: 'bob',
    device_id: 'tablet',
    ip: '89.160.20.112',
    user_agent: CHROME_WINDOWS,
  });
  t.equal(newDevice.body.action, 'PASSIVE', 'new device + known IP is passive');
});

t.test('a Tor exit with a new device gets ACTIVE_3D', async (t) => {
  await trustDirectly(service, { user: 'carol', device: 'laptop', ip: '89.160.20.112' }, clock());
  const { body } = await decide({
    user_id: 'carol',
    device_id: 'unknown-box',
    ip: '185.220.101.1',
    user_agent: CHROME_WINDOWS,
  });
  t.equal(body.action, 'ACTIVE_3D');
  t.equal(body.signals['ip.tor'], true);
  t.ok(body.reasons.some((r: { rule: string }) => r.rule === 'anonymizer-new-device'));
});

t.test('an IPv6 address inside a verified /64 is a known network', async (t) => {
  await trustDirectly(service, { user: 'dave', device: 'phone', ip: '2001:218::1', country: 'JP' }, clock());
  const same64 = await decide({
    user_id: 'dave',
    device_id: 'phone',
    ip: '2001:218:0:0:4a5b:1234:abcd:1',
    user_agent: CHROME_WINDOWS,
  });
  t.equal(same64.body.signals['ip.known'], false);
  t.equal(same64.body.signals['ip.prefix_known'], true);
  t.equal(same64.body.action, 'SKIP');
  const other64 = await decide({
    user_id: 'dave',
    device_id: 'phone',
    ip: '2001:218:0:1::1',
    user_agent: CHROME_WINDOWS,
  });
  t.equal(other64.body.action, 'PASSIVE');
});

t.test('an IPv4-mapped IPv6 address is treated as the IPv4 address', async (t) => {
  await trustDirectly(
    service,
    { user: 'erin', device: 'phone', ip: '89.160.20.112', country: 'SE', asn: 29518 },
    clock(),
  );
  const { body } = await decide({
    user_id: 'erin',
    device_id: 'phone',
    ip: '::ffff:89.160.20.112',
    user_agent: CHROME_WINDOWS,
  });
  t.equal(body.signals['ip.version'], 4);
  t.equal(body.action, 'SKIP');
});

t.test('a user with no verified history never skips', async (t) => {
  const first = await decide({ user_id: 'frank', device_id: 'phone', ip: '89.160.20.112' });
  const again = await decide({ user_id: 'frank', device_id: 'phone', ip: '89.160.20.112' });
  t.equal(first.body.action, 'PASSIVE');
  t.equal(again.body.action, 'PASSIVE', 'being seen twice is not being verified');
  t.equal(again.body.signals['device.seen_count'], 1);
});

t.test('a sensitive purpose never skips', async (t) => {
  await trustDirectly(
    service,
    { user: 'gina', device: 'phone', ip: '89.160.20.112', country: 'SE', asn: 29518 },
    clock(),
  );
  const { body } = await decide({
    user_id: 'gina',
    device_id: 'phone',
    ip: '89.160.20.112',
    purpose: 'change_password',
  });
  t.equal(body.action, 'PASSIVE');
});

t.test('custom attributes reach the rules', async (t) => {
  const { status, body } = await decide({
    user_id: 'hal',
    device_id: 'd',
    ip: '89.160.20.112',
    attributes: { tenant: 'acme', amount: 12.5, vip: true },
  });
  t.equal(status, 200);
  t.same(body.signals['request.attributes'], { tenant: 'acme', amount: 12.5, vip: true });
});

const bad: Array<[string, Record<string, unknown>, string | undefined]> = [
  ['missing user_id', { device_id: 'd', ip: '1.2.3.4' }, 'user_id'],
  ['user_id of the wrong type', { user_id: 42, device_id: 'd', ip: '1.2.3.4' }, 'user_id'],
  ['empty device_id', { user_id: 'u', device_id: '', ip: '1.2.3.4' }, 'device_id'],
  ['a 1 MB user_id', { user_id: 'x'.repeat(1_000_000), device_id: 'd', ip: '1.2.3.4' }, undefined],
  ['an unknown field', { user_id: 'u', device_id: 'd', ip: '1.2.3.4', admin: true }, 'admin'],
  ['an octal-looking IPv4', { user_id: 'u', device_id: 'd', ip: '01.02.03.04' }, 'ip'],
  ['an out-of-range IPv4', { user_id: 'u', device_id: 'd', ip: '300.1.1.1' }, 'ip'],
  ['an IPv6 zone id', { user_id: 'u', device_id: 'd', ip: 'fe80::1%eth0' }, 'ip'],
  ['a hostname', { user_id: 'u', device_id: 'd', ip: 'example.com' }, 'ip'],
  [
    'a data: URL portrait',
    { user_id: 'u', device_id: 'd', ip: '1.2.3.4', portrait_image: 'data:image/png;base64,AAAA' },
    'portrait_image',
  ],
  ['a nested attribute', { user_id: 'u', device_id: 'd', ip: '1.2.3.4', attributes: { a: { b: 1 } } }, 'attributes.a'],
  ['a purpose with spaces', { user_id: 'u', device_id: 'd', ip: '1.2.3.4', purpose: 'log in' }, 'purpose'],
];

for (const [title, body, field] of bad) {
  t.test(`400 with a stable code for ${title}`, async (t) => {
    const response = await decide(body);
    // Only the oversized body may be refused for its size; every other case names its field.
    if (field) {
      t.equal(response.status, 400);
      t.equal(response.body.code, 'RISK_ERR_VALIDATION');
      t.equal(response.body.field, field);
    } else {
      t.ok(response.status === 400 || response.status === 413, `status ${response.status}`);
      t.match(response.body.code, /^RISK_ERR_(VALIDATION|BODY_TOO_LARGE)$/);
    }
    t.notOk(JSON.stringify(response.body).includes('xxxxxxxxxx'), 'the reply does not echo the input');
  });
}

t.test('__proto__ and constructor keys are rejected before the handler', async (t) => {
  for (const payload of [
    '{"__proto__":{"polluted":true},"user_id":"u","device_id":"d","ip":"1.2.3.4"}',
    '{"user_id":"u","device_id":"d","ip":"1.2.3.4","constructor":{"prototype":{"polluted":true}}}',
  ]) {
    const response = await service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': 'application/json', ...service.auth },
      payload,
    });
    t.equal(response.statusCode, 400);
    t.match(response.json().code, /^RISK_ERR_/);
  }
  t.equal(({} as Record<string, unknown>).polluted, undefined);
});

t.test('malformed JSON, wrong content type and oversize bodies get 4xx codes, never 500', async (t) => {
  const send = (payload: string, type = 'application/json') =>
    service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': type, ...service.auth },
      payload,
    });
  const malformed = await send('{"user_id":');
  t.equal(malformed.statusCode, 400);
  t.equal(malformed.json().code, 'RISK_ERR_MALFORMED_BODY');
  const notJson = await send('user_id=u', 'application/x-www-form-urlencoded');
  t.equal(notJson.statusCode, 415);
  t.equal(notJson.json().code, 'RISK_ERR_UNSUPPORTED_MEDIA_TYPE');
  const huge = await send(
    JSON.stringify({ user_id: 'u', device_id: 'd', ip: '1.2.3.4', portrait_image: 'A'.repeat(3 * 1024 * 1024) }),
  );
  t.equal(huge.statusCode, 413);
  t.equal(huge.json().code, 'RISK_ERR_BODY_TOO_LARGE');
  const array = await send('[1,2,3]');
  t.equal(array.statusCode, 400);
});

t.test('callers without a valid bearer token get 401 and touch nothing', async (t) => {
  const before = (await service.app.inject({ method: 'GET', url: '/readyz' })).json();
  const attempts: Array<Record<string, string>> = [
    {},
    { authorization: 'Bearer wrong-token-wrong-token' },
    { authorization: 'Basic dGVzdA==' },
    { authorization: 'Bearer ' },
  ];
  for (const headers of attempts) {
    const response = await decide({ user_id: 'ivan', device_id: 'd', ip: '89.160.20.112' }, headers);
    t.equal(response.status, 401);
    t.equal(response.body.code, 'RISK_ERR_UNAUTHORIZED');
  }
  const seen = await decide({ user_id: 'ivan', device_id: 'd', ip: '89.160.20.112' });
  t.equal(seen.body.signals['device.seen_count'], 0, 'rejected calls recorded no sighting');
  t.equal(before.status, 'ready');
});

t.test('the decision log line carries pseudonyms and signals, never raw ids', async (t) => {
  const { body } = await decide({
    user_id: 'canary-user-7781',
    device_id: 'canary-device-5519',
    ip: '203.0.113.77',
    user_agent: CHROME_WINDOWS,
  });
  // This decide's own line, by the decision_id of its reply: not any decision line of an earlier test.
  const lines = service.logs
    .map((l) => JSON.parse(l) as Record<string, any>)
    .filter((l) => l.msg === 'decision' && l.decision_id === body.decision_id);
  t.equal(lines.length, 1, `one decision line for ${body.decision_id}`);
  const line = lines[0] ?? {};
  t.equal(line.user, service.ids.id('user', 'canary-user-7781'), 'user is the pseudonym of this user');
  t.equal(line.device, service.ids.id('device', 'canary-device-5519'), 'device is the pseudonym of this device');
  t.not(line.user, service.ids.id('user', 'someone-else'), 'and not any pseudonym');
  t.match(line, {
    action: body.action,
    ruleset: body.ruleset,
    degraded: body.degraded,
    verification: body.verification.status,
  });
  t.same(
    line.rules,
    body.reasons.map((r: { rule: string }) => r.rule),
    'the rules that fired',
  );
  t.same(line.signals, body.signals, 'the point-in-time signals, as the reply had them');
  t.match(
    line.signals,
    { 'ua.browser': 'Chrome', 'ua.os': 'Windows', 'ip.version': 4, 'device.known': false, 'device.seen_count': 0 },
    'signals of this request',
  );
  t.ok(Object.keys(line.signals).length >= 20, `${Object.keys(line.signals).length} signals logged`);
  const all = service.logs.join('\n');
  for (const canary of ['canary-user-7781', 'canary-device-5519', '203.0.113.77', 'test-caller-token'])
    t.notOk(all.includes(canary), `${canary} is not in the logs`);
});

t.test('a user agent with a newline and JSON cannot forge a log line', async (t) => {
  const before = service.logs.length;
  await decide({
    user_id: 'judy',
    device_id: 'd',
    ip: '89.160.20.112',
    user_agent: 'Mozilla/5.0\r\n{"level":60,"msg":"forged"}',
  });
  const added = service.logs.slice(before);
  t.equal(added.length, 1);
  t.notOk(added.some((l) => JSON.parse(l).msg === 'forged'));
});

t.test(
  'the reply is, byte for byte, what the documented schema serialises (as the route answered before)',
  async (t) => {
    const shadowService = await startTestService({ RULES_DIR: scenarioRules() }, { clock });
    t.teardown(() => shadowService.close());
    const response = await injectDecide(shadowService, {
      user_id: 'schema-user',
      device_id: 'schema-device',
      ip: '89.160.20.112',
      user_agent: CHROME_WINDOWS,
      attributes: { watch: true, shadowy: true, note: 'a"\n\u2028b' },
    });
    t.equal(response.statusCode, 200);
    const body = response.json();
    t.ok(body.shadow.length > 0 && body.reasons.length > 0, 'a reply with reasons and shadow results');
    // The route sent the reply object through fastify's serializer for this schema before it was assembled by hand.
    const reference = Fastify();
    reference.post('/', { schema: { response: { 200: doc(decideReply) } } }, async (request) => request.body);
    const expected = await reference.inject({
      method: 'POST',
      url: '/',
      headers: { 'content-type': 'application/json' },
      payload: response.body,
    });
    await reference.close();
    t.equal(response.body, expected.body, 'the same bytes, fields in the same order');
    t.equal(response.headers['content-type'], expected.headers['content-type'], 'the same content type');
  },
);
