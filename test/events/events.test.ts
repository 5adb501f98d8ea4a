import t from 'tap';
import { startTestService, testClock, CHROME_WINDOWS } from '../helpers/service.js';
import { DIDIT, RAW_IP, pendingSession, verdict } from './didit-facts.js';
import { newSecret, startReceiver, waitFor } from './receiver.js';

const clock = testClock();
const secret = newSecret();
const receiver = await startReceiver(secret, () => Math.floor(clock() / 1000));
t.teardown(() => receiver.close());

async function counts(service: {
  metrics: { events: { get(): Promise<{ values: Array<{ labels: Record<string, unknown>; value: number }> }> } };
}) {
  const out: Record<string, number> = {};
  for (const v of (await service.metrics.events.get()).values)
    out[String(v.labels.result)] = (out[String(v.labels.result)] ?? 0) + v.value;
  return out;
}

t.test('every event type arrives once per id, signed, in order per user, with no raw IP or device id', async (t) => {
  const service = await startTestService(
    { EVENTS_URL: receiver.url, EVENTS_SECRET: secret, EVENTS_INCLUDE_USER_ID: 'true', EVENTS_DECISIONS: 'true' },
    { clock, didit: DIDIT, events: { tuning: { pollMs: 20 } } },
  );
  t.teardown(() => service.close());
  const run = `r${Date.now()}`;
  const alice = `alice-${run}`;
  const bob = `bob-${run}`;
  const carol = `carol-${run}`;

  // alice: trusted, then a reviewer's late Declined takes it back; another session abandoned; a third approved twice.
  const a1 = await pendingSession(service, clock, alice);
  t.equal(await verdict(service, clock, a1, 'Approved'), 'verified');
  t.equal(await verdict(service, clock, a1, 'Declined', 1), 'verified');
  const a2 = await pendingSession(service, clock, alice);
  t.equal(await verdict(service, clock, a2, 'Abandoned'), 'verified');
  const a3 = await pendingSession(service, clock, alice);
  t.equal(await verdict(service, clock, a3, 'Approved'), 'verified');
  t.equal(await verdict(service, clock, a3, 'Approved'), 'duplicate', 'Didit retried the same delivery');
  t.equal(
    await verdict(service, clock, a3, 'Approved', 1, 'data.updated'),
    'verified',
    'a data.updated copy of the same verdict',
  );

  // bob: five declined step-ups, then the policy denies.
  for (let i = 0; i < 5; i++)
    t.equal(await verdict(service, clock, await pendingSession(service, clock, bob), 'Declined'), 'verified');
  const decide = await service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: service.auth,
    payload: { user_id: bob, device_id: `device-of-${bob}`, ip: RAW_IP, user_agent: CHROME_WINDOWS },
  });
  t.equal(decide.json().action, 'DENY');

  // carol: trusted, revoked by the user, then erased.
  const c1 = await pendingSession(service, clock, carol);
  t.equal(await verdict(service, clock, c1, 'Approved'), 'verified');
  t.equal(
    (
      await service.app.inject({
        method: 'DELETE',
        url: `/v1/users/${carol}/devices/device-of-${carol}`,
        headers: service.auth,
      })
    ).statusCode,
    204,
  );
  t.equal(
    (await service.app.inject({ method: 'DELETE', url: `/v1/users/${carol}`, headers: service.auth })).statusCode,
    204,
  );

  const expected: Record<string, string[]> = {
    [alice]: ['device.trusted', 'stepup.declined', 'device.revoked', 'stepup.abandoned', 'device.trusted'],
    [bob]: [...Array(5).fill('stepup.declined'), 'decision.denied', 'decision'],
    [carol]: ['device.trusted', 'device.revoked', 'device.revoked'],
  };
  const total = Object.values(expected).flat().length;
  const ours = () => receiver.attempts.filter((d) => [alice, bob, carol].includes(d.event.data.user_id));
  await waitFor(() => ours().filter((d) => d.answered === 200).length >= total, 10_000, `${total} deliveries`);
  await new Promise((r) => setTimeout(r, 300)); // nothing more may come

  const got = ours();
  t.equal(got.length, total, 'one attempt per event: nothing resent');
  t.ok(
    got.every((d) => d.verified),
    'every delivery verifies with the independent verifier',
  );
  t.equal(new Set(got.map((d) => d.id)).size, total, 'one delivery per event id');
  t.ok(
    got.every((d) => d.id === d.event.id),
    'webhook-id is the event id',
  );
  for (const [user, types] of Object.entries(expected)) {
    const mine = got.filter((d) => d.event.data.user_id === user);
    t.same(
      mine.map((d) => d.event.type),
      types,
      `${user.split('-')[0]}: every event, in order`,
    );
    t.ok(
      mine.every((d) => d.event.data.user === service.ids.id('user', user)),
      'the pseudonym is there too',
    );
  }
  t.same(
    new Set(got.map((d) => d.event.type)),
    new Set(['device.trusted', 'device.revoked', 'stepup.declined', 'stepup.abandoned', 'decision.denied', 'decision']),
    'all six types',
  );
  for (const d of got) {
    t.notMatch(d.body, RAW_IP, 'no raw IP');
    t.notMatch(d.body, /"device-of-/, 'no raw device id');
  }

  const trusted = got.find((d) => d.event.type === 'device.trusted')!.event;
  t.same(
    trusted.data.device,
    {
      id: service.ids.id('device', `device-of-${alice}`),
      browser: 'Chrome',
      os: 'Windows',
      country: 'SE',
      city: 'Linköping',
    },
    'browser, OS, country and city for "was this you?"',
  );
  t.equal(trusted.data.session_id, a1.id);
  t.match(trusted.timestamp, /^2026-11-25T12:00:00/, 'the event time is the service clock');
  const revokedByDecline = got.find((d) => d.event.type === 'device.revoked' && d.event.data.user_id === alice)!.event;
  t.equal(revokedByDecline.data.reason, 'declined');
  const carolRevokes = got
    .filter((d) => d.event.type === 'device.revoked' && d.event.data.user_id === carol)
    .map((d) => d.event.data);
  t.same(
    carolRevokes.map((d) => [d.reason, d.all_devices]),
    [
      ['user', false],
      ['erase', true],
    ],
  );
  const denied = got.find((d) => d.event.type === 'decision.denied')!.event;
  t.equal(denied.data.action, 'DENY');
  t.ok(denied.data.rules.includes('repeated-declines'), 'the rules that fired');
  t.equal(denied.data.ruleset, service.rules.current()!.hash, 'the ruleset hash');
  t.equal(denied.data.decision_id, decide.json().decision_id);
  t.equal(denied.data.device.country, 'SE');

  const c = await counts(service);
  t.equal(c.queued, total);
  t.equal(c.delivered, total);
  t.notOk(c.dropped, 'nothing dropped');
});

t.test(
  'without EVENTS_INCLUDE_USER_ID the raw user id is nowhere; without EVENTS_DECISIONS only DENY decisions are sent',
  async (t) => {
    const service = await startTestService(
      { EVENTS_URL: receiver.url, EVENTS_SECRET: secret },
      { clock, didit: DIDIT, events: { tuning: { pollMs: 20 } } },
    );
    t.teardown(() => service.close());
    const user = `dave-${Date.now()}`;
    const pseudonym = service.ids.id('user', user);
    const s = await pendingSession(service, clock, user);
    await verdict(service, clock, s, 'Approved');
    for (let i = 0; i < 3; i++)
      await service.app.inject({
        method: 'POST',
        url: '/v1/decide',
        headers: service.auth,
        payload: { user_id: user, device_id: `device-of-${user}`, ip: RAW_IP },
      });
    await service.app.inject({ method: 'DELETE', url: `/v1/users/${user}`, headers: service.auth });
    const mine = () => receiver.attempts.filter((d) => d.event.data.user === pseudonym);
    await waitFor(() => mine().length >= 2, 10_000, 'two deliveries');
    await new Promise((r) => setTimeout(r, 300));
    t.same(
      mine().map((d) => d.event.type),
      ['device.trusted', 'device.revoked'],
      'no decision events for non-DENY decides',
    );
    for (const d of mine()) {
      t.notMatch(d.body, user, 'no raw user id');
      t.notOk('user_id' in d.event.data);
    }
  },
);
