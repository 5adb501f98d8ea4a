import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { createBreaker } from '../../src/lib/breaker.js';
import { createDispatcher, type DispatcherTuning } from '../../src/events/dispatcher.js';
import { createEventSink } from '../../src/events/events.js';
import { parseSigningSecret } from '../../src/events/signing.js';
import { createMemoryOutbox } from '../../src/store/outbox-memory.js';
import { testClock } from '../helpers/service.js';
import { newSecret, startReceiver, waitFor, type Answer } from './receiver.js';

const HOUR = 3600_000;
const clock = testClock();
const secret = newSecret();
const receiver = await startReceiver(secret, () => Math.floor(clock() / 1000));
const elsewhere = await startReceiver(secret, () => Math.floor(clock() / 1000));
t.teardown(async () => {
  await receiver.close();
  await elsewhere.close();
});
const silent = { warn() {}, error() {} };

/** The real sink, memory outbox and dispatcher against the receiver, with a breaker we can watch. */
function harness(
  options: {
    tuning?: Partial<DispatcherTuning>;
    threshold?: number;
    maxConcurrency?: number;
    timeoutMs?: number;
    retryMs?: number;
  } = {},
) {
  const outbox = createMemoryOutbox({ maxEntries: 10_000 });
  const results: Array<{ type: string; result: string }> = [];
  const breakerChanges: boolean[] = [];
  const breaker = createBreaker({
    threshold: options.threshold ?? 5,
    cooldownMs: 30_000,
    onChange: (open) => breakerChanges.push(open),
  });
  const sink = createEventSink({
    outbox,
    clock,
    includeUserId: false,
    decisions: false,
    deadlineMs: 250,
    onQueued: () => undefined,
    log: silent,
  });
  const dispatcher = createDispatcher({
    outbox,
    url: receiver.url,
    keys: [parseSigningSecret(secret)],
    clock,
    maxConcurrency: options.maxConcurrency ?? 4,
    timeoutMs: options.timeoutMs ?? 500,
    retryMs: options.retryMs ?? 24 * HOUR,
    breaker,
    onResult: (type, result) => results.push({ type, result }),
    onStats: () => undefined,
    log: silent,
    tuning: { pollMs: 10, backoffBaseMs: 1000, backoffCapMs: 60_000, ...options.tuning },
  });
  dispatcher.start();
  const emit = (user: string, detail: Record<string, unknown> = {}) =>
    sink.emit({ type: 'device.revoked', user, detail });
  return { outbox, results, breakerChanges, dispatcher, emit };
}

t.afterEach(() => {
  receiver.answer = () => 200;
});

t.test(
  '4xx other than 408/429 is rejected after one attempt; 5xx, 408, 429, resets, timeouts and redirects are retried, never followed',
  async (t) => {
    const rejectedClass = [400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 451];
    const redirect = (status: number): Answer => ({ status, redirect: elsewhere.url });
    const retriedClass: Array<[string, Answer]> = [
      ...[408, 429, 500, 502, 503, 504].map((s): [string, Answer] => [String(s), s]),
      ['reset', 'reset'],
      ['timeout', 'hang'],
      ...[301, 302, 303, 307, 308].map((s): [string, Answer] => [`redirect-${s}`, redirect(s)]),
    ];
    const first = new Map<string, Answer>([
      ...rejectedClass.map((s): [string, Answer] => [String(s), s]),
      ...retriedClass,
    ]);
    receiver.answer = (d) => {
      const label = d.event.data.label as string;
      const tried = receiver.attempts.filter((a) => a.id === d.id).length;
      return tried === 0 ? first.get(label)! : 200;
    };
    const h = harness({ threshold: 1000 });
    t.teardown(() => h.dispatcher.stop());
    const ids = new Map<string, string>();
    for (const label of first.keys()) {
      await h.emit(`user-${label}`, { label });
    }
    const undelivered = () =>
      retriedClass
        .map(([label]) => label)
        .filter((label) => !receiver.attempts.some((a) => a.event.data.label === label && receiver.accepted.has(a.id)));
    await waitFor(
      () => receiver.accepted.size >= retriedClass.length,
      20_000,
      () =>
        `every retried event delivered; not delivered: ${undelivered().join(', ')}; attempts per label: ${JSON.stringify(
          Object.fromEntries(
            retriedClass.map(([label]) => [
              label,
              receiver.attempts
                .filter((a) => a.event.data.label === label)
                .map((a) => `${a.answered}${a.verified ? '' : ' (unverified)'}`),
            ]),
          ),
        )}`,
      // 1 s of the service's clock a poll covers the backoff (base 1 s); at 5 s, an attempt in flight
      // for 60 polls (3 s of a loaded machine) would reach the receiver with a signature older than
      // its 300 s tolerance: 401, rejected, never delivered.
      () => clock.advance(1000),
    );
    for (const d of receiver.attempts) ids.set(d.event.data.label, d.id);
    for (const status of rejectedClass) {
      const tries = receiver.attempts.filter((d) => d.event.data.label === String(status));
      t.equal(tries.length, 1, `${status}: one attempt, not retried`);
      t.notOk(receiver.accepted.has(ids.get(String(status))!), `${status}: not delivered`);
    }
    for (const [label] of retriedClass) {
      const tries = receiver.attempts.filter((d) => d.event.data.label === label);
      t.ok(tries.length >= 2, `${label}: retried (${tries.length} attempts)`);
      t.equal(receiver.accepted.get(ids.get(label)!)?.length, 1, `${label}: delivered once`);
    }
    t.equal(elsewhere.attempts.length, 0, 'no redirect was followed');
    t.equal(h.results.filter((r) => r.result === 'rejected').length, rejectedClass.length);
    t.equal(h.results.filter((r) => r.result === 'delivered').length, retriedClass.length);
    t.equal((await h.outbox.stats(clock())).depth, 0, 'the outbox is empty');
  },
);

t.test('an attempt times out even when a full collection runs while it waits on a silent receiver', async (t) => {
  // AbortSignal.any() over AbortSignal.timeout() lost the timeout to a full collection
  // (nodejs/node#57736): the attempt hung for good, and its user's queue behind it.
  setFlagsFromString('--expose-gc');
  const collect = runInNewContext('gc') as () => void;
  receiver.answer = (d) => (receiver.attempts.some((a) => a.id === d.id) ? 200 : 'hang');
  // Long enough that the collections surely run before it would fire on a loaded machine.
  const h = harness({ threshold: 1000, timeoutMs: 1500 });
  t.teardown(() => h.dispatcher.stop());
  const before = receiver.attempts.length;
  await h.emit(`user-gc-${Date.now()}`, { label: 'gc' });
  await waitFor(() => receiver.attempts.length > before, 5000, 'the first attempt');
  for (let i = 0; i < 3; i++) {
    collect();
    await new Promise((r) => setTimeout(r, 50));
  }
  await waitFor(
    () => receiver.attempts.slice(before).some((a) => receiver.accepted.has(a.id)),
    10_000,
    () =>
      `the event delivered after its attempt timed out; attempts: ${JSON.stringify(receiver.attempts.slice(before).map((a) => a.answered))}`,
    () => clock.advance(5000),
  );
  const tries = receiver.attempts.slice(before);
  t.same(
    tries.map((a) => a.answered),
    ['hang', 200],
    'the hung attempt timed out, and the retry was delivered',
  );
  t.ok(
    h.results.some((r) => r.result === 'retry'),
    'the timeout counted as a failed attempt',
  );
});

t.test('64 attempts in flight at once raise no listener-leak warning', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));
  receiver.answer = (d) => (receiver.attempts.some((a) => a.id === d.id) ? 200 : 'hang');
  const h = harness({ threshold: 1000, maxConcurrency: 64, timeoutMs: 1000 });
  t.teardown(() => h.dispatcher.stop());
  const before = receiver.attempts.length;
  const users = Array.from({ length: 64 }, (_, i) => `user-many-${i}-${Date.now()}`);
  for (const user of users) await h.emit(user, { label: 'many' });
  await waitFor(() => receiver.attempts.length - before >= 64, 10_000, 'all 64 first attempts in flight');
  await waitFor(
    () => receiver.attempts.slice(before).filter((a) => receiver.accepted.has(a.id)).length >= 64,
    20_000,
    'all 64 delivered after their attempts timed out',
    () => clock.advance(1000),
  );
  // Node reports a listener warning on the next tick.
  await new Promise((r) => setImmediate(r));
  t.same(
    warnings.filter((w) => /MaxListeners/.test(w)),
    [],
    'no MaxListenersExceededWarning',
  );
});

t.test('after stop, start takes its leases and delivers at once, not a lease interval later', async (t) => {
  // A lease interval of an hour: without leases taken at start, nothing is delivered within the wait.
  const h = harness({ tuning: { leaseEveryMs: 3_600_000 } });
  t.teardown(() => h.dispatcher.stop());
  // A first delivery, so the run has taken its leases before it stops.
  const first = receiver.accepted.size;
  await h.emit(`user-restart-first-${Date.now()}`, { label: 'restart' });
  await waitFor(() => receiver.accepted.size > first, 10_000, 'the first delivery');
  await h.dispatcher.stop();
  h.dispatcher.start();
  const before = receiver.accepted.size;
  await h.emit(`user-restart-${Date.now()}`, { label: 'restart' });
  await waitFor(() => receiver.accepted.size > before, 10_000, 'the event delivered after the restart');
  t.equal(receiver.accepted.size, before + 1, 'delivered after the restart, an hour before the next lease interval');
});

t.test('the receiver down for 2 minutes, then back: nothing lost, nothing twice, order per user kept', async (t) => {
  const h = harness();
  t.teardown(() => h.dispatcher.stop());
  receiver.attempts.length = 0;
  receiver.accepted.clear();
  await receiver.down();
  const users = ['u1', 'u2', 'u3', 'u4', 'u5'].map((u) => `${u}-${Date.now()}`);
  for (let i = 0; i < 6; i++) for (const user of users) await h.emit(user, { seq: i });
  const downAt = clock();
  // Two minutes of the service's clock with the receiver refusing connections.
  while (clock() - downAt < 120_000) {
    clock.advance(5000);
    await new Promise((r) => setTimeout(r, 30));
  }
  const failed = h.results.filter((r) => r.result === 'retry').length;
  t.ok(failed >= 5, `attempts failed while it was down (${failed})`);
  t.ok(h.breakerChanges.includes(true), 'the breaker opened');
  t.equal((await h.outbox.stats(clock())).depth, 30, 'all 30 still in the outbox');
  await receiver.up();
  const upAt = clock();
  await waitFor(
    () => receiver.accepted.size >= 30,
    20_000,
    '30 deliveries',
    () => clock.advance(5000),
  );
  t.comment(
    `all 30 delivered ${(clock() - upAt) / 1000} s (service clock) after the receiver came back; ${failed} failed attempts while down`,
  );
  t.equal(receiver.accepted.size, 30, 'every event delivered');
  t.ok(
    [...receiver.accepted.values()].every((d) => d.length === 1),
    'each id accepted once',
  );
  for (const user of users) {
    const mine = receiver.attempts
      .filter((d) => d.answered === 200 && d.event.data.user === user)
      .map((d) => d.event.data.seq);
    t.same(mine, [0, 1, 2, 3, 4, 5], `${user.split('-')[0]} in order`);
  }
  t.equal(h.breakerChanges.at(-1), false, 'the breaker closed again');
});

t.test('retries go on for the whole 24 h window, then the event is given up and leaves the outbox', async (t) => {
  const h = harness({ tuning: { backoffCapMs: HOUR }, threshold: 1000 });
  t.teardown(() => h.dispatcher.stop());
  receiver.answer = () => 503;
  const before = receiver.attempts.length;
  const start = clock();
  await h.emit(`doomed-${Date.now()}`);
  await waitFor(
    () => h.results.some((r) => r.result === 'expired'),
    20_000,
    'the event to expire',
    () => clock.advance(20 * 60_000),
  );
  const tries = receiver.attempts.slice(before);
  const span = tries.at(-1)!.timestamp * 1000 - start;
  t.ok(span >= 24 * HOUR, `the last attempt came ${(span / HOUR).toFixed(1)} h after the event`);
  t.ok(
    tries.every((d) => Date.parse(d.event.timestamp) === start),
    'every attempt carries the event time in the body, its own time in webhook-timestamp',
  );
  t.equal(new Set(tries.map((d) => d.id)).size, 1, 'the same id on every attempt');
  t.ok(tries.length >= 10 && tries.length < 200, `${tries.length} attempts, backed off (not a hot loop)`);
  t.equal((await h.outbox.stats(clock())).depth, 0, 'given up: removed from the outbox');
});

t.test('bounded concurrency: a hanging receiver holds at most EVENTS_MAX_CONCURRENCY requests', async (t) => {
  const h = harness({ maxConcurrency: 3, timeoutMs: 2000, threshold: 1000 });
  t.teardown(() => h.dispatcher.stop());
  receiver.answer = () => 'hang';
  const before = receiver.attempts.length;
  for (let i = 0; i < 12; i++) await h.emit(`hang-${i}-${Date.now()}`);
  await waitFor(() => receiver.attempts.length - before >= 3, 5000, 'three requests');
  await new Promise((r) => setTimeout(r, 500));
  t.equal(receiver.attempts.length - before, 3, 'three in flight, the other nine wait');
});

t.test('stopping with a hanging receiver does not wait for it; the events stay in the outbox', async (t) => {
  const h = harness({ timeoutMs: 10_000, threshold: 1000 });
  receiver.answer = () => 'hang';
  const before = receiver.attempts.length;
  for (let i = 0; i < 3; i++) await h.emit(`stop-${i}-${Date.now()}`);
  await waitFor(() => receiver.attempts.length - before >= 3, 5000, 'three hanging requests');
  const started = Date.now();
  await h.dispatcher.stop();
  const took = Date.now() - started;
  t.ok(took < 2000, `stopped in ${took} ms (the attempt timeout is 10 s)`);
  t.equal((await h.outbox.stats(clock())).depth, 3, 'nothing acknowledged: all three still in the outbox');
  t.notOk(
    h.results.some((r) => r.result === 'retry'),
    'a cut-short attempt is not counted as a receiver failure',
  );
});
