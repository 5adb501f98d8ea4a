import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import t from 'tap';
import { createSimulator, simulatorCredentials } from '../../src/didit/simulator.js';
import { createRedisClient } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { startRedis } from '../helpers/redis.js';
import { startTestService, TEST_TOKEN } from '../helpers/service.js';

/** Canary values: none of them may reach a log line, a Redis key or a Redis value. */
const CANARY = {
  user: 'canary-user-31337@example.com',
  device: 'canary-device-8c1f2a77',
  ip: '203.0.113.77',
  ipv6: '2001:db8:dead:beef::77',
  portrait: Buffer.from('canary-portrait-bytes-0xFACE-01').toString('base64'),
  ua: 'Mozilla/5.0 canary-ua-token (X11; Linux x86_64) Firefox/121.0',
};

const server = await startRedis();
const redis = createRedisClient(server.url, 500) as Redis;
await new Promise((r) => redis.once('ready', r));
const credentials = simulatorCredentials();
const simulator = createSimulator({ ...credentials, publicBaseUrl: 'http://127.0.0.1:1', retryDelaysMs: [10, 20] });
await simulator.app.listen({ port: 0, host: '127.0.0.1' });
const service = await startTestService(
  {},
  {
    store: createRedisStore({ redis, keyPrefix: 'hyg:' }),
    redis,
    didit: {
      baseUrl: `http://127.0.0.1:${(simulator.app.server.address() as AddressInfo).port}`,
      apiKey: credentials.apiKey,
      webhookSecrets: [credentials.webhookSecret],
      workflows: credentials.workflows,
    },
  },
);
await service.app.listen({ port: 0, host: '127.0.0.1' });
simulator.webhookUrl = `http://127.0.0.1:${(service.app.server.address() as AddressInfo).port}/v1/webhooks/didit`;
t.teardown(async () => {
  await service.close();
  await simulator.app.close();
  await server.stop();
});

const decide = (body: Record<string, unknown>) =>
  service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...service.auth },
    payload: JSON.stringify(body),
  });

const first = (
  await decide({
    user_id: CANARY.user,
    device_id: CANARY.device,
    ip: CANARY.ip,
    user_agent: CANARY.ua,
    portrait_image: CANARY.portrait,
  })
).json();
await simulator.complete(first.verification.session_id, 'Approved');
const second = (
  await decide({ user_id: CANARY.user, device_id: CANARY.device, ip: CANARY.ip, user_agent: CANARY.ua })
).json();
await decide({ user_id: CANARY.user, device_id: CANARY.device, ip: CANARY.ipv6, user_agent: CANARY.ua });
const sessionToken = simulator.sessions.get(first.verification.session_id)!.token;

t.test('the loop ran: step-up, Approved, then SKIP', async (t) => {
  t.equal(first.action, 'PASSIVE');
  t.equal(second.action, 'SKIP');
  t.ok(simulator.sessions.get(first.verification.session_id)!.hasPortrait, 'the portrait reached Didit');
});

t.test('no canary in any log line, and every line is JSON', async (t) => {
  const text = service.logs.join('\n');
  for (const [name, value] of Object.entries({
    ...CANARY,
    token: TEST_TOKEN,
    apiKey: credentials.apiKey,
    secret: credentials.webhookSecret,
    sessionToken,
  })) {
    t.notOk(text.includes(value), `${name} is not logged`);
  }
  for (const line of service.logs) t.doesNotThrow(() => JSON.parse(line));
  t.ok(service.logs.length >= 4, `${service.logs.length} lines scanned`);
});

t.test('no canary in any Redis key or value; identifiers carry the key id', async (t) => {
  const keys = await redis.keys('*');
  t.ok(keys.length > 5, `${keys.length} keys scanned`);
  const dump: string[] = [];
  for (const key of keys) {
    dump.push(key);
    const type = await redis.type(key);
    if (type === 'string') dump.push((await redis.get(key)) ?? '');
    else if (type === 'hash') dump.push(JSON.stringify(await redis.hgetall(key)));
    else if (type === 'zset') dump.push(JSON.stringify(await redis.zrange(key, '0', '-1')));
    else if (type === 'set') dump.push(JSON.stringify(await redis.smembers(key)));
    else if (type === 'list') dump.push(JSON.stringify(await redis.lrange(key, 0, -1)));
    // A value of a type not read above would escape the canary scan.
    else if (type !== 'none') t.fail(`${key}: type ${type} is not scanned`);
  }
  const text = dump.join('\n');
  for (const [name, value] of Object.entries({
    ...CANARY,
    ipPrefix: '203.0.113',
    v6Prefix: '2001:db8:dead',
    sessionToken,
    ua: 'canary-ua-token',
  }))
    t.notOk(text.includes(value), `${name} is not in Redis`);
  const userKeys = keys.filter((k) => k.startsWith('hyg:{u:'));
  t.ok(userKeys.length > 0, `${userKeys.length} user keys checked`);
  t.ok(
    userKeys.every((k) => /^hyg:\{u:t1\.[A-Za-z0-9_-]{22}\}/.test(k)),
    'user keys are HMAC pseudonyms under key id t1',
  );
});

t.test('users can list and revoke trusted devices, and be erased', async (t) => {
  const list = await service.app.inject({
    method: 'GET',
    url: `/v1/users/${encodeURIComponent(CANARY.user)}/devices`,
    headers: service.auth,
  });
  const devices = list.json().devices as Array<{ device: string; expires_at: string }>;
  t.equal(devices.length, 1);
  t.notOk(JSON.stringify(devices).includes(CANARY.device), 'opaque ids only');
  const revoke = await service.app.inject({
    method: 'DELETE',
    url: `/v1/users/${encodeURIComponent(CANARY.user)}/devices/${CANARY.device}`,
    headers: service.auth,
  });
  t.equal(revoke.statusCode, 204);
  t.equal(
    (await decide({ user_id: CANARY.user, device_id: CANARY.device, ip: CANARY.ip })).json().action,
    'PASSIVE',
    '"this wasn\'t me" revokes the skip',
  );
  const again = await service.app.inject({
    method: 'DELETE',
    url: `/v1/users/${encodeURIComponent(CANARY.user)}/devices/${CANARY.device}`,
    headers: service.auth,
  });
  t.equal(again.statusCode, 404);

  const started = Date.now();
  const erase = await service.app.inject({
    method: 'DELETE',
    url: `/v1/users/${encodeURIComponent(CANARY.user)}`,
    headers: service.auth,
  });
  t.equal(erase.statusCode, 204);
  t.ok(Date.now() - started < 1000);
  t.equal(
    (
      await service.app.inject({
        method: 'DELETE',
        url: `/v1/users/${encodeURIComponent(CANARY.user)}`,
        headers: service.auth,
      })
    ).statusCode,
    204,
    'idempotent',
  );
  const userTag = `hyg:{u:${service.ids.id('user', CANARY.user)}}`;
  t.same(await redis.keys(`${userTag}*`), [], 'no key family of the user is left');
  t.equal(await redis.get(`hyg:{s:${first.verification.session_id}}`), null, 'their session records are gone too');
  const audit = service.logs.map((l) => JSON.parse(l)).find((l) => l.audit === 'user_erased');
  t.ok(audit, 'the erasure is audited');
  t.notOk(JSON.stringify(audit).includes(CANARY.user));
});
