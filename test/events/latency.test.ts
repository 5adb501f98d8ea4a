import type { AddressInfo } from 'node:net';
import t from 'tap';
import { startTestService, testClock, CHROME_WINDOWS } from '../helpers/service.js';
import { newSecret, startReceiver } from './receiver.js';

const clock = testClock();
const secret = newSecret();
const receiver = await startReceiver(secret, () => Math.floor(clock() / 1000));
t.teardown(() => receiver.close());

t.test('a hanging receiver leaves the decide p99 unchanged (every decide emits a decision event)', async (t) => {
  const service = await startTestService(
    {
      EVENTS_URL: receiver.url,
      EVENTS_SECRET: secret,
      EVENTS_DECISIONS: 'true',
      EVENTS_TIMEOUT_MS: '10000',
      RATE_LIMIT_USER_PER_MIN: '100000',
    },
    { clock },
  );
  await service.app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => service.close());
  const url = `http://127.0.0.1:${(service.app.server.address() as AddressInfo).port}/v1/decide`;
  let n = 0;
  /** Sequential decides over real HTTP; the latency of each, in ms. */
  async function phase(count: number): Promise<number[]> {
    const took: number[] = [];
    for (let i = 0; i < count; i++) {
      const body = JSON.stringify({
        user_id: `lat-${++n % 50}`,
        device_id: `d-${n % 7}`,
        ip: `89.160.20.${(n % 200) + 1}`,
        user_agent: CHROME_WINDOWS,
      });
      const started = performance.now();
      const response = await fetch(url, {
        method: 'POST',
        headers: { ...service.auth, 'content-type': 'application/json' },
        body,
      });
      await response.arrayBuffer();
      took.push(performance.now() - started);
      if (response.status !== 200) throw new Error(`decide answered ${response.status}`);
    }
    return took;
  }
  const pct = (xs: number[], p: number) =>
    [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
  const queued = async () =>
    (await service.metrics.events.get()).values
      .filter((v) => v.labels.result === 'queued')
      .reduce((s, v) => s + v.value, 0);

  await phase(50); // warm-up: JIT, connection pool
  const before = await phase(300);
  receiver.answer = () => 'hang';
  const queuedBefore = await queued();
  const attemptsBefore = receiver.attempts.length;
  const hanging = await phase(300);
  const hungRequests = receiver.attempts.length - attemptsBefore;
  t.equal((await queued()) - queuedBefore, 300, 'every decide of the hanging phase put its event in the outbox');
  t.ok(
    hungRequests >= 1 && hungRequests <= 8,
    `the receiver held ${hungRequests} requests (at most EVENTS_MAX_CONCURRENCY)`,
  );
  receiver.answer = () => 200;
  const after = await phase(300);
  const base = Math.max(pct(before, 99), pct(after, 99));
  const figures = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(2)} ms, p99 ${pct(xs, 99).toFixed(2)} ms`;
  t.comment(`receiver answering (before): ${figures(before)}`);
  t.comment(`receiver hanging:            ${figures(hanging)}`);
  t.comment(`receiver answering (after):  ${figures(after)}`);
  // Generous bound: two cores shared with other test runs. A decide waiting on the receiver would take 10 s.
  t.ok(
    pct(hanging, 99) < base * 2 + 5,
    `hanging p99 ${pct(hanging, 99).toFixed(2)} ms vs baseline p99 ${base.toFixed(2)} ms`,
  );
  t.ok(Math.max(...hanging) < 1000, 'no decide waited for the receiver');
});
