import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import t from 'tap';
import { main } from '../../src/cli.js';
import { asciiEscape, canonicalJson, signWebhook } from '../../src/didit/signature.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { startDiditStack } from '../helpers/didit.js';
import { startRedis } from '../helpers/redis.js';
import { CHROME_WINDOWS, TEST_HASH_KEY, testClock } from '../helpers/service.js';

// The CLI runs apart from the service: they share only Redis, ID_HASH_KEY and the Didit settings.
const redisServer = await startRedis();
const prefix = `dl-${randomBytes(4).toString('hex')}:`;
const redis = new Redis(redisServer.url);
const store = createRedisStore({ redis, keyPrefix: prefix });
const clock = testClock(Date.now());
const stack = await startDiditStack(clock, { DIDIT_TIMEOUT_MS: '5000' }, undefined, store);
t.teardown(async () => {
  await stack.close();
  await redisServer.stop();
});
const { service, simulator, secret } = stack;

const env = {
  REDIS_URL: redisServer.url,
  REDIS_KEY_PREFIX: prefix,
  ID_HASH_KEY: TEST_HASH_KEY,
  DIDIT_API_KEY: stack.credentials.apiKey,
  DIDIT_BASE_URL: stack.baseUrl,
  DIDIT_WEBHOOK_SECRET: secret,
  DIDIT_WORKFLOW_PASSIVE: stack.credentials.workflows.PASSIVE,
  DIDIT_WORKFLOW_FLASHING: stack.credentials.workflows.FLASHING,
  DIDIT_WORKFLOW_ACTIVE_3D: stack.credentials.workflows.ACTIVE_3D,
};

async function cli(...args: string[]): Promise<{ code: number; text: string }> {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  const lines: string[] = [];
  try {
    const code = await main(args, (line = '') => lines.push(line));
    return { code, text: lines.join('\n') };
  } finally {
    for (const key of Object.keys(env)) if (saved[key] === undefined) delete process.env[key];
    Object.assign(process.env, saved);
  }
}

const decide = async (user: string) =>
  (
    await service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': 'application/json', ...service.auth },
      payload: JSON.stringify({ user_id: user, device_id: 'cli-phone', ip: '2001:218::1', user_agent: CHROME_WINDOWS }),
    })
  ).json() as { action: string; verification: { session_id: string } };

t.test('npm run rules -- dead-letters list | replay: a held Approved is applied once the fix is in', async (t) => {
  const first = await decide('dead-letter-user');
  t.equal(first.action, 'PASSIVE');
  const sessionId = first.verification.session_id;
  const sim = simulator.sessions.get(sessionId)! as { status: string; method: string | null };
  sim.status = 'Approved';
  const method = sim.method;
  sim.method = null;
  const body = JSON.parse(simulator.webhookFor(sessionId, 'Approved').body) as Record<string, any>;
  body.decision.liveness_checks[0].method = null;
  const raw = asciiEscape(canonicalJson(body));
  const held = await service.app.inject({
    method: 'POST',
    url: '/v1/webhooks/didit',
    headers: { 'content-type': 'application/json', ...signWebhook(raw, secret) },
    payload: raw,
  });
  t.same(held.json(), { received: true, result: 'hold' });

  const listed = await cli('dead-letters', 'list');
  t.equal(listed.code, 0);
  t.match(listed.text, new RegExp(`method_unknown\\s+${sessionId}\\s+Approved`));
  t.match(listed.text, /1 dead letter\(s\)/);
  t.notMatch(listed.text, /dead-letter-user/, 'the user id is never printed');
  const keys = await redis.keys(`${prefix}{dl}*`);
  t.equal(keys.length, 2, 'one record and its index');
  for (const key of keys)
    t.notOk(
      ((await redis.type(key)) === 'string' ? await redis.get(key) : '')?.includes('dead-letter-user'),
      'no user id in clear in Redis',
    );

  const stillBroken = await cli('dead-letters', 'replay');
  t.equal(stillBroken.code, 1);
  t.match(stillBroken.text, /hold \(method_unknown\)\s+kept/);

  sim.method = method;
  const replayed = await cli('dead-letters', 'replay');
  t.equal(replayed.code, 0);
  t.match(replayed.text, /verified\s+settled, removed/);
  t.match((await cli('dead-letters', 'list')).text, /0 dead letter\(s\)/);
  t.equal((await decide('dead-letter-user')).action, 'SKIP', 'the replayed Approved trusts the device that asked');
});

t.test('without the service settings the command refuses, and a wrong action shows the usage', async (t) => {
  const lines: string[] = [];
  t.equal(await main(['dead-letters', 'purge'], (l = '') => lines.push(l)), 2);
  t.match(lines.join('\n'), /usage: rules dead-letters list/);
});
