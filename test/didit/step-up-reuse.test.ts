import t from 'tap';
import { CHROME_WINDOWS, testClock, injectDecide } from '../helpers/service.js';
import { startDiditStack } from '../helpers/didit.js';
import { trustDirectly } from '../helpers/trust.js';

// Didit reuses an unfinished session per (workflow, vendor_data) for the workflow's whole session
// lifetime (7 days by default); the simulator does the same on this test clock.
const clock = testClock();
// A generous Didit deadline: these tests are about binding, not timeouts (the machine is shared).
const stack = await startDiditStack(clock, { DIDIT_TIMEOUT_MS: '3000' });
const { service, simulator } = stack;
t.teardown(() => stack.close());

const MINUTE = 60_000;
const HOME = '89.160.20.112';
const ELSEWHERE = '2001:218::1';

async function decide(body: Record<string, unknown>) {
  const response = await injectDecide(service, { user_agent: CHROME_WINDOWS, ...body });
  t.equal(response.statusCode, 200);
  return response.json() as Record<string, any>;
}

async function devicesOf(user: string): Promise<string[]> {
  const reply = await service.app.inject({ method: 'GET', url: `/v1/users/${user}/devices`, headers: service.auth });
  return (reply.json().devices as Array<{ device: string }>).map((d) => d.device);
}

async function sessionStatus(sessionId: string, user: string) {
  return (
    await service.app.inject({ method: 'GET', url: `/v1/sessions/${sessionId}?user_id=${user}`, headers: service.auth })
  ).json() as Record<string, any>;
}

t.test(
  'abandoned, then a new step-up 30 minutes later: Didit hands back the same session, the Approved is trusted',
  async (t) => {
    const body = { user_id: 'abandon-user', device_id: 'phone', ip: HOME };
    const first = await decide(body);
    t.match(first, { action: 'PASSIVE', verification: { status: 'created' } });
    const sessionId = first.verification.session_id;
    await simulator.start(sessionId); // opened the link, then walked away
    clock.advance(30 * MINUTE);
    const created = simulator.stats.created;
    const again = await decide(body);
    t.match(again.verification, { status: 'reused', session_id: sessionId }, 'Didit returned the unfinished session');
    t.equal(simulator.stats.created, created, 'Didit created nothing new');
    clock.advance(9 * MINUTE);
    t.same(await simulator.complete(sessionId, 'Approved'), [200]);
    t.match(
      await sessionStatus(sessionId, 'abandon-user'),
      { status: 'Approved', outcome: 'allow' },
      'not refused as approved_after_pending_lifetime',
    );
    const next = await decide(body);
    t.equal(next.action, 'SKIP', 'the device that asked is trusted');
  },
);

t.test('an Approved more than PENDING_TTL after the last hand-out is still refused', async (t) => {
  const body = { user_id: 'late-user', device_id: 'phone', ip: HOME };
  const first = await decide(body);
  clock.advance(11 * MINUTE);
  await simulator.complete(first.verification.session_id, 'Approved');
  t.match(
    await sessionStatus(first.verification.session_id, 'late-user'),
    { status: 'In Progress', outcome: 'retry' },
    'the late verdict taught nothing',
  );
  t.equal((await decide(body)).action, 'PASSIVE');
});

t.test(
  'two devices: a live hand-out stays with its device; a lapsed, unopened one goes to the device that asks',
  async (t) => {
    const user = 'two-device-user';
    const first = await decide({ user_id: user, device_id: 'laptop', ip: HOME });
    const sessionId = first.verification.session_id;
    const early = await decide({ user_id: user, device_id: 'tablet', ip: HOME });
    t.match(
      early.verification,
      { status: 'unavailable', reason: 'pending_on_other_device' },
      'within PENDING_TTL the first device keeps it',
    );
    t.notOk(JSON.stringify(early).includes(first.verification.url));
    clock.advance(30 * MINUTE);
    const later = await decide({ user_id: user, device_id: 'tablet', ip: HOME });
    t.match(
      later.verification,
      { status: 'reused', session_id: sessionId },
      'nobody opened it: re-bound to the device that asks now',
    );
    const back = await decide({ user_id: user, device_id: 'laptop', ip: HOME });
    t.match(
      back.verification,
      { status: 'unavailable', reason: 'pending_on_other_device' },
      'and the laptop cannot take it back while the tablet holds it',
    );
    await simulator.complete(sessionId, 'Approved', { ip: HOME });
    t.same(
      await devicesOf(user),
      [service.ids.id('device', 'tablet')],
      'the approval trusted the device it was last handed to',
    );
    t.equal((await decide({ user_id: user, device_id: 'tablet', ip: HOME })).action, 'SKIP');
    t.not((await decide({ user_id: user, device_id: 'laptop', ip: HOME })).action, 'SKIP');
  },
);

t.test(
  'two devices asking at the same moment: Didit gives both the same session, exactly one is bound to it',
  async (t) => {
    const user = 'race-user';
    const replies = await Promise.all(
      ['laptop', 'tablet', 'phone'].map((device) => decide({ user_id: user, device_id: device, ip: HOME })),
    );
    const handed = replies.filter((r) => r.verification.status !== 'unavailable');
    t.equal(handed.length, 1, 'one hand-out');
    t.same(
      replies.filter((r) => r.verification.status === 'unavailable').map((r) => r.verification.reason),
      ['pending_on_other_device', 'pending_on_other_device'],
    );
    const winner = ['laptop', 'tablet', 'phone'][replies.indexOf(handed[0]!)]!;
    await simulator.complete(handed[0]!.verification.session_id, 'Approved');
    t.same(
      await devicesOf(user),
      [service.ids.id('device', winner)],
      'the approval trusted the device that holds the URL',
    );
  },
);

t.test(
  'two devices: a flow started on one device never goes to another, until Didit expires it (7 days)',
  async (t) => {
    const user = 'started-flow-user';
    const first = await decide({ user_id: user, device_id: 'laptop', ip: HOME });
    const sessionId = first.verification.session_id;
    await simulator.start(sessionId);
    clock.advance(30 * MINUTE);
    const other = await decide({ user_id: user, device_id: 'tablet', ip: HOME });
    t.match(
      other.verification,
      { status: 'unavailable', reason: 'pending_on_other_device' },
      'In Progress on the laptop: the tablet uses the backup factor',
    );
    clock.advance(6 * 24 * 60 * MINUTE);
    t.match(
      await decide({ user_id: user, device_id: 'tablet', ip: HOME }),
      { verification: { status: 'unavailable', reason: 'pending_on_other_device' } },
      'six days later Didit still holds it',
    );
    clock.advance(24 * 60 * MINUTE);
    const fresh = await decide({ user_id: user, device_id: 'tablet', ip: HOME });
    t.match(fresh.verification, { status: 'created' }, 'past the 7-day lifetime Didit opens a new session');
    t.not(fresh.verification.session_id, sessionId);
    t.equal(simulator.sessions.get(sessionId)?.status, 'Abandoned', 'the old one was Abandoned by Didit');
    await simulator.complete(fresh.verification.session_id, 'Approved');
    t.same(await devicesOf(user), [service.ids.id('device', 'tablet')]);
  },
);

t.test(
  'network and purpose: a stolen device id on another network cannot share the victim’s selfie (attacker first)',
  async (t) => {
    const user = 'victim-a';
    await trustDirectly(service, { user, device: 'her-phone', ip: HOME }, clock());
    const attacker = await decide({ user_id: user, device_id: 'her-phone', ip: ELSEWHERE });
    t.match(attacker, { action: 'PASSIVE', verification: { status: 'created' } });
    const victim = await decide({ user_id: user, device_id: 'her-phone', ip: HOME, purpose: 'add_payee' });
    t.equal(victim.action, 'PASSIVE');
    t.match(
      victim.verification,
      { status: 'unavailable', reason: 'pending_in_other_context' },
      'not handed the attacker’s session',
    );
    t.notOk(JSON.stringify(victim).includes(attacker.verification.url));
    // Once the attacker's hand-out lapsed unopened, the same Didit session is hers, bound to her sign-in.
    clock.advance(11 * MINUTE);
    const retry = await decide({ user_id: user, device_id: 'her-phone', ip: HOME, purpose: 'add_payee' });
    t.match(retry.verification, { status: 'reused', session_id: attacker.verification.session_id });
    await simulator.complete(retry.verification.session_id, 'Approved', { ip: HOME });
    t.not(
      (await decide({ user_id: user, device_id: 'her-phone', ip: ELSEWHERE })).action,
      'SKIP',
      'the attacker’s network learnt nothing',
    );
    t.equal((await decide({ user_id: user, device_id: 'her-phone', ip: HOME })).action, 'SKIP');
  },
);

t.test(
  'network and purpose: a stolen device id on another network cannot share the victim’s selfie (victim first)',
  async (t) => {
    const user = 'victim-b';
    await trustDirectly(service, { user, device: 'her-phone', ip: HOME }, clock());
    const victim = await decide({ user_id: user, device_id: 'her-phone', ip: HOME, purpose: 'add_payee' });
    t.match(victim, { action: 'PASSIVE', verification: { status: 'created' } });
    await simulator.start(victim.verification.session_id);
    const attacker = await decide({ user_id: user, device_id: 'her-phone', ip: ELSEWHERE });
    t.match(
      attacker.verification,
      { status: 'unavailable', reason: 'pending_in_other_context' },
      'her live hand-out stays hers',
    );
    clock.advance(11 * MINUTE);
    const lapsed = await decide({ user_id: user, device_id: 'her-phone', ip: ELSEWHERE });
    t.match(
      lapsed.verification,
      { status: 'unavailable', reason: 'pending_in_other_context' },
      'her started flow is never re-bound, even after PENDING_TTL',
    );
    const resumed = await decide({ user_id: user, device_id: 'her-phone', ip: HOME, purpose: 'add_payee' });
    t.match(
      resumed.verification,
      { status: 'reused', session_id: victim.verification.session_id },
      'she gets it back in her own context',
    );
    await simulator.complete(victim.verification.session_id, 'Approved');
    t.match(await sessionStatus(victim.verification.session_id, user), { status: 'Approved', outcome: 'allow' });
    t.not(
      (await decide({ user_id: user, device_id: 'her-phone', ip: ELSEWHERE })).action,
      'SKIP',
      'her approval did not trust the attacker’s network',
    );
  },
);

t.test(
  'a plain login does not take over a sensitive hand-out on the same device and network, nor the reverse',
  async (t) => {
    const user = 'purpose-user';
    await trustDirectly(service, { user, device: 'phone', ip: HOME }, clock());
    const sensitive = await decide({ user_id: user, device_id: 'phone', ip: HOME, purpose: 'change_password' });
    t.match(sensitive.verification, { status: 'created' });
    const sameClass = await decide({ user_id: user, device_id: 'phone', ip: HOME, purpose: 'add_payee' });
    t.match(
      sameClass.verification,
      { status: 'reused', session_id: sensitive.verification.session_id },
      'two sensitive purposes share a hand-out',
    );
    const login = await decide({ user_id: user, device_id: 'phone', ip: ELSEWHERE, purpose: 'login' });
    t.match(login.verification, { status: 'unavailable', reason: 'pending_in_other_context' });
  },
);

t.test('Didit’s update-status cannot cancel a session nobody finished (why we re-bind instead)', async (t) => {
  const first = await decide({ user_id: 'cancel-user', device_id: 'phone', ip: HOME });
  const sessionId = first.verification.session_id;
  const patch = (status: string) =>
    fetch(`${stack.baseUrl}/v3/session/${sessionId}/update-status/`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json', 'x-api-key': stack.apiKey },
      body: JSON.stringify({ new_status: status }),
    });
  for (const status of ['Declined', 'Approved', 'Resubmitted'])
    t.equal((await patch(status)).status, 400, `Not Started → ${status} is refused`);
  await simulator.start(sessionId);
  t.equal((await patch('Declined')).status, 400, 'so is In Progress');
  t.equal(simulator.sessions.get(sessionId)?.status, 'In Progress');
  await simulator.complete(sessionId, 'Abandoned');
  t.equal((await patch('Declined')).status, 200, 'a finished session can be moved');
  t.equal(simulator.sessions.get(sessionId)?.status, 'Declined');
});

/** The webhook results counted so far, by result (the service's own metric). */
async function webhookResults(): Promise<Record<string, number>> {
  const families = await service.metrics.registry.getMetricsAsJSON();
  const family = families.find((f) => f.name === 'risk_webhook_events_total');
  return Object.fromEntries((family?.values ?? []).map((v) => [String(v.labels.result), v.value]));
}

// The re-binding hole: Didit gives a lapsed, unopened session back for days, and the first link to it
// still works. When it was re-bound to another sign-in, whoever finishes the old link must not teach
// trust to the sign-in that holds it now. Didit's IP analysis says where the selfie was taken: a
// re-bound session is trusted only when that is the new binding's network.
const VICTIM_NET = '89.160.20.112';
const ATTACKER_NET = '2001:218::1';
const rebindings = [
  {
    name: 'another device on another network',
    victim: { device_id: 'her-laptop', ip: VICTIM_NET },
    attacker: { device_id: 'his-phone', ip: ATTACKER_NET },
  },
  {
    name: 'her device id (stolen) on another network',
    victim: { device_id: 'her-laptop', ip: VICTIM_NET },
    attacker: { device_id: 'her-laptop', ip: ATTACKER_NET },
  },
  {
    name: 'another device, another network, a sensitive purpose',
    victim: { device_id: 'her-laptop', ip: VICTIM_NET },
    attacker: { device_id: 'his-phone', ip: ATTACKER_NET, purpose: 'change_password' },
  },
  {
    name: 'another IPv4 network of the same /24',
    victim: { device_id: 'her-laptop', ip: VICTIM_NET },
    attacker: { device_id: 'his-phone', ip: '89.160.20.113' },
  },
];

for (const [i, { name, victim, attacker }] of rebindings.entries()) {
  t.test(`re-bound to ${name}: the victim's stale link, finished from her network, trusts nothing`, async (t) => {
    const user = `rebind-victim-${i}`;
    const hers = await decide({ user_id: user, ...victim });
    t.equal(hers.verification.status, 'created');
    clock.advance(11 * MINUTE); // she never opened it; the hand-out lapsed
    const his = await decide({ user_id: user, ...attacker });
    t.match(
      his.verification,
      { status: 'reused', session_id: hers.verification.session_id },
      'Didit handed the same session to the attacker’s sign-in',
    );
    const before = await webhookResults();
    // She finds the old link (an open tab, an e-mail) and takes the selfie from her own network.
    t.same(await simulator.complete(hers.verification.session_id, 'Approved', { ip: victim.ip }), [200, 200]);
    const after = await webhookResults();
    t.equal(
      (after.network_mismatch ?? 0) - (before.network_mismatch ?? 0),
      1,
      'refused: the selfie was not taken on the re-bound sign-in’s network',
    );
    t.equal((after.verified ?? 0) - (before.verified ?? 0), 1, 'only the In Progress event was applied');
    t.same(await devicesOf(user), [], 'no device was trusted');
    t.not((await decide({ user_id: user, ...attacker })).action, 'SKIP', 'the attacker’s sign-in is still challenged');
    t.not(
      (await sessionStatus(hers.verification.session_id, user)).outcome,
      'allow',
      'the login service is not told to let the attacker in',
    );
  });
}

t.test('re-bound and finished on the new binding’s network (the user moved to another device): trusted', async (t) => {
  const user = 'rebind-legit';
  const first = await decide({ user_id: user, device_id: 'laptop', ip: VICTIM_NET });
  clock.advance(11 * MINUTE);
  const phone = await decide({ user_id: user, device_id: 'phone', ip: ATTACKER_NET });
  t.match(phone.verification, { status: 'reused', session_id: first.verification.session_id });
  // Privacy addresses rotate inside the /64: Didit may see another address of the same network.
  await simulator.complete(first.verification.session_id, 'Approved', { ip: '2001:218::beef' });
  t.same(await devicesOf(user), [service.ids.id('device', 'phone')], 'the device it was re-bound to is trusted');
  t.equal((await decide({ user_id: user, device_id: 'phone', ip: ATTACKER_NET })).action, 'SKIP');
});

t.test(
  'the flag outlives later hand-outs: re-bound, lapsed, handed again to the same context, still checked',
  async (t) => {
    const user = 'rebind-twice';
    const hers = await decide({ user_id: user, device_id: 'her-laptop', ip: VICTIM_NET });
    clock.advance(11 * MINUTE);
    await decide({ user_id: user, device_id: 'his-phone', ip: ATTACKER_NET });
    clock.advance(11 * MINUTE);
    const again = await decide({ user_id: user, device_id: 'his-phone', ip: ATTACKER_NET });
    t.match(again.verification, { status: 'reused', session_id: hers.verification.session_id });
    await simulator.complete(hers.verification.session_id, 'Approved', { ip: VICTIM_NET });
    t.same(await devicesOf(user), []);
  },
);

t.test('a re-bound session whose verdict names no network is held for an operator, never trusted', async (t) => {
  const user = 'rebind-no-ip';
  const hers = await decide({ user_id: user, device_id: 'her-laptop', ip: VICTIM_NET });
  const sessionId = hers.verification.session_id;
  clock.advance(11 * MINUTE);
  await decide({ user_id: user, device_id: 'his-phone', ip: ATTACKER_NET });
  // A workflow without IP analysis: neither the webhook nor Didit's decision reports an address.
  const session = simulator.sessions.get(sessionId)!;
  session.status = 'Approved';
  delete session.ip;
  const { body, headers } = simulator.webhookFor(sessionId, 'Approved');
  const reply = await service.app.inject({ method: 'POST', url: '/v1/webhooks/didit', headers, payload: body });
  t.equal(reply.statusCode, 200);
  const letters = await service.store.listDeadLetters(clock());
  t.ok(
    letters.some((l) => l.reason === 'rebound_network_unknown'),
    'kept as a hold, with its reason',
  );
  t.same(await devicesOf(user), [], 'nothing trusted');
});

t.test(
  'a session never re-bound is trusted wherever the selfie was taken (the selfie is the proof; no IP check)',
  async (t) => {
    const user = 'never-rebound';
    const first = await decide({ user_id: user, device_id: 'laptop', ip: VICTIM_NET });
    await simulator.complete(first.verification.session_id, 'Approved', { ip: '198.51.100.77' }); // finished on her phone, on mobile data
    t.same(await devicesOf(user), [service.ids.id('device', 'laptop')]);
  },
);
