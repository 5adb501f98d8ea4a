import t from 'tap';
import pino from 'pino';
import { loadConfig } from '../../src/config.js';
import { openStore } from '../../src/open-store.js';
import { startRedis } from '../helpers/redis.js';
import { startTestService, testClock, TEST_HASH_KEY, CHROME_WINDOWS, type TestService } from '../helpers/service.js';
import { newSecret, startReceiver, waitFor } from './receiver.js';

const clock = testClock();
const secret = newSecret();
const receiver = await startReceiver(secret, () => Math.floor(clock() / 1000));
t.teardown(() => receiver.close());

const results = async (service: TestService) => {
  const out: Record<string, number> = {};
  for (const v of (await service.metrics.events.get()).values)
    out[String(v.labels.result)] = (out[String(v.labels.result)] ?? 0) + v.value;
  return out;
};
const gauge = async (g: { get(): Promise<{ values: Array<{ value: number }> }> }) =>
  (await g.get()).values[0]?.value ?? 0;

t.test(
  'a full memory outbox drops new events (counted), the requests still answer; depth and age are exported',
  async (t) => {
    const service = await startTestService(
      { EVENTS_URL: receiver.url, EVENTS_SECRET: secret, EVENTS_OUTBOX_MAX: '100' },
      { clock, events: { tuning: { pollMs: 20, statsEveryMs: 50 } } },
    );
    t.teardown(() => service.close());
    await receiver.down();
    t.teardown(() => receiver.up());
    const statuses = new Set<number>();
    for (let i = 0; i < 120; i++)
      statuses.add(
        (await service.app.inject({ method: 'DELETE', url: `/v1/users/full-${i}`, headers: service.auth })).statusCode,
      );
    t.same([...statuses], [204], 'every erase answered 204');
    const r = await results(service);
    t.equal(r.queued, 100);
    t.equal(r.dropped, 20, 'the 20 beyond EVENTS_OUTBOX_MAX are counted as dropped');
    clock.advance(90_000);
    await waitFor(() => false, 300, 'stats').catch(() => undefined);
    t.equal(await gauge(service.metrics.eventsOutboxDepth), 100, 'risk_events_outbox_depth');
    t.ok(
      (await gauge(service.metrics.eventsOutboxOldestAge)) >= 90,
      'risk_events_outbox_oldest_age_seconds grows while the receiver is down',
    );
    t.ok(
      service.logs.some((l) => l.includes('event dropped')),
      'the drop is logged',
    );
  },
);

t.test(
  'Redis down: the decide answers (degraded, not slower than its store deadline), the event is counted as dropped; back up, events flow again',
  async (t) => {
    const redis = await startRedis();
    t.teardown(() => redis.stop());
    const env = { REDIS_URL: redis.url, EVENTS_URL: receiver.url, EVENTS_SECRET: secret, EVENTS_DECISIONS: 'true' };
    const opened = await openStore(loadConfig({ ...env, ID_HASH_KEY: TEST_HASH_KEY }), {
      logger: pino({ level: 'silent' }),
    });
    const service = await startTestService(env, {
      clock,
      store: opened.store,
      redis: opened.redis!,
      events: { leaseMs: 3000, tuning: { pollMs: 20, leaseEveryMs: 150 } },
    });
    t.teardown(() => service.close());
    const decide = async (user: string) => {
      const started = performance.now();
      const response = await service.app.inject({
        method: 'POST',
        url: '/v1/decide',
        headers: service.auth,
        payload: { user_id: user, device_id: 'd', ip: '89.160.20.112', user_agent: CHROME_WINDOWS },
      });
      return {
        ms: performance.now() - started,
        body: response.json() as { action: string; degraded: string[] },
        status: response.statusCode,
      };
    };
    await decide('warm-up');
    await redis.kill();
    const down = await decide('while-down');
    t.equal(down.status, 200);
    t.not(down.body.action, 'SKIP');
    t.ok(down.body.degraded.includes('store'), 'degraded: store');
    t.ok(down.ms < 1000, `answered in ${down.ms.toFixed(1)} ms`);
    await waitFor(() => false, 100, '').catch(() => undefined);
    t.ok(((await results(service)).dropped ?? 0) >= 1, 'the decision event is counted as dropped');
    await redis.restart();
    const userAfter = `after-${Date.now()}`;
    await waitFor(() => opened.redis!.status === 'ready', 10_000, 'the client to reconnect');
    const up = await decide(userAfter);
    t.equal(up.status, 200);
    await waitFor(
      () => receiver.attempts.some((d) => d.event.type === 'decision' && d.verified),
      15_000,
      'a decision event after Redis came back',
    );
    t.pass('delivered after the outage');
  },
);
