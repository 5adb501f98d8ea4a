import type { Redis } from 'ioredis';
import t from 'tap';
import { signWebhook } from '../../src/didit/signature.js';
import { createRedisClient } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { startRedis } from '../helpers/redis.js';
import { CHROME_WINDOWS, startTestService, injectDecide } from '../helpers/service.js';
import { until } from '../helpers/poll.js';
import { trustDirectly } from '../helpers/trust.js';

const COMMAND_TIMEOUT_MS = 100;
const server = await startRedis();
const redis = createRedisClient(server.url, COMMAND_TIMEOUT_MS) as Redis;
await new Promise((r) => redis.once('ready', r));
redis.on('error', () => undefined);
const secret = 'outage-test-webhook-secret-0123456789';
const service = await startTestService(
  {},
  {
    store: createRedisStore({ redis, keyPrefix: 'outage:' }),
    didit: {
      baseUrl: 'http://127.0.0.1:9',
      apiKey: 'k',
      webhookSecrets: [secret],
      workflows: {
        PASSIVE: 'aaaaaaaa-1111-4111-8111-000000000001',
        FLASHING: 'aaaaaaaa-1111-4111-8111-000000000002',
        ACTIVE_3D: 'aaaaaaaa-1111-4111-8111-000000000003',
      },
    },
  },
);
t.teardown(async () => {
  await service.close();
  await server.stop();
});

const known = { user_id: 'outage-user', device_id: 'outage-phone', ip: '89.160.20.112', user_agent: CHROME_WINDOWS };
await trustDirectly(
  service,
  { user: known.user_id, device: known.device_id, ip: known.ip, country: 'SE', asn: 29518 },
  Date.now(),
);

const storeUp = async () =>
  Number(/^risk_store_up (\S+)$/m.exec(await service.metrics.registry.getSingleMetricAsString('risk_store_up'))?.[1]);

async function decide(body = known) {
  const started = Date.now();
  const response = await injectDecide(service, body);
  return { status: response.statusCode, body: response.json() as Record<string, any>, ms: Date.now() - started };
}

t.test('with Redis up, the known device skips (one store round trip)', async (t) => {
  const reply = await decide();
  t.equal(reply.body.action, 'SKIP');
  t.same(reply.body.degraded, []);
});

/**
 * The latency bound for a decide while Redis fails, from a baseline taken just before on the same
 * (possibly busy) machine: a decide makes at most two store calls in sequence (observe, then the
 * step-up's lookup), each capped by the command timeout, plus 400 ms for a busy 2-core machine.
 * Without the timeout a decide waits for the store deadlines (250 ms + the step-up's 1.8 s) or the
 * whole pause, so a broken client still fails the bound.
 */
async function outageBound(): Promise<{ bound: number; baseline: number }> {
  const healthy = [];
  for (let i = 0; i < 5; i++) healthy.push((await decide()).ms);
  const baseline = Math.max(...healthy);
  return { baseline, bound: baseline + 2 * COMMAND_TIMEOUT_MS + 400 };
}

t.test(
  'Redis killed: 200, never SKIP, degraded store, fast; webhook 503; back to SKIP within 2 s of restart',
  async (t) => {
    const { baseline, bound } = await outageBound();
    t.equal(await storeUp(), 1, 'risk_store_up 1 while Redis answers');
    await server.kill();
    const replies = [];
    for (let i = 0; i < 20; i++) replies.push(await decide());
    for (const r of replies) {
      t.equal(r.status, 200);
      t.not(r.body.action, 'SKIP');
      t.not(r.body.action, 'DENY', 'an outage alone never denies');
    }
    t.ok(
      replies.every((r) => r.body.degraded.includes('store')),
      'degraded names the store',
    );
    t.equal(await storeUp(), 0, 'risk_store_up dropped to 0');
    const slowest = Math.max(...replies.map((r) => r.ms));
    t.ok(
      slowest <= bound,
      `slowest decide during the outage: ${slowest} ms ≤ ${bound} ms (healthy baseline ${baseline} ms, command timeout ${COMMAND_TIMEOUT_MS} ms)`,
    );
    const ready = await service.app.inject({ method: 'GET', url: '/readyz' });
    t.equal(ready.statusCode, 503);
    t.same(ready.json().failing, ['store']);

    const ts = Math.floor(Date.now() / 1000);
    const body = JSON.stringify({
      webhook_type: 'status.updated',
      timestamp: ts,
      session_id: '11111111-2222-4333-8444-555555555555',
      status: 'Approved',
      vendor_data: 'outage-user',
      workflow_id: 'aaaaaaaa-1111-4111-8111-000000000001',
    });
    const webhook = await service.app.inject({
      method: 'POST',
      url: '/v1/webhooks/didit',
      headers: { 'content-type': 'application/json', ...signWebhook(body, secret) },
      payload: body,
    });
    t.equal(webhook.statusCode, 503, 'Didit retries on 5xx; never a 4xx for an authentic event');
    t.notOk(webhook.body.includes('Connection is closed'));

    await server.restart();
    const restartedAt = Date.now();
    // Nothing is persisted: the trust is gone, so SKIP needs the grant again, but the store must answer.
    const recovered = await until(async () => (await decide()).body.degraded.length === 0, 5000);
    t.ok(
      recovered >= 0 && Date.now() - restartedAt <= 2000,
      `first non-degraded decision ${Date.now() - restartedAt} ms after restart`,
    );
    t.equal(await storeUp(), 1, 'risk_store_up back to 1');
    await trustDirectly(
      service,
      { user: known.user_id, device: known.device_id, ip: known.ip, country: 'SE', asn: 29518 },
      Date.now(),
    );
    t.equal((await decide()).body.action, 'SKIP');
  },
);

t.test('Redis hung (CLIENT PAUSE): decisions stay within the command timeout and never SKIP', async (t) => {
  const { baseline, bound } = await outageBound();
  // Longer than every deadline on the path, so a decide that waited for Redis would show.
  const pauseMs = 4000;
  const pausedAt = Date.now();
  server.cli('client', 'pause', String(pauseMs), 'ALL');
  const replies = [];
  for (let i = 0; i < 5; i++) replies.push(await decide());
  t.ok(Date.now() - pausedAt < pauseMs, 'every decide was made while Redis was paused');
  t.equal(await storeUp(), 0, 'risk_store_up 0 while Redis is hung');
  for (const r of replies) {
    t.equal(r.status, 200);
    t.not(r.body.action, 'SKIP');
    t.ok(
      r.ms <= bound,
      `${r.ms} ms ≤ ${bound} ms (healthy baseline ${baseline} ms, command timeout ${COMMAND_TIMEOUT_MS} ms)`,
    );
  }
  await new Promise((r) => setTimeout(r, pauseMs - (Date.now() - pausedAt) + 100));
  const back = await until(async () => (await decide()).body.action === 'SKIP', 3000);
  t.ok(back >= 0, `normal again ${back} ms after the pause ended`);
});
