import t from 'tap';
import { CHROME_WINDOWS, testClock, injectDecide } from '../helpers/service.js';
import { startDiditStack } from '../helpers/didit.js';
import { trustDirectly } from '../helpers/trust.js';

// Someone with the password opens step-ups from his own devices and presses Decline (Didit's signed
// verdicts, through the simulator). The real user's trusted device must not pay for it.
const clock = testClock();
// A generous Didit deadline: these tests are about binding, not timeouts (the machine is shared).
const stack = await startDiditStack(clock, { DIDIT_TIMEOUT_MS: '3000' });
const { service, simulator } = stack;
t.teardown(() => stack.close());

const HOME = '89.160.20.112';
const ATTACKER = '2001:218::1';

async function decide(body: Record<string, unknown>) {
  const response = await injectDecide(service, { user_agent: CHROME_WINDOWS, ...body });
  t.equal(response.statusCode, 200);
  return response.json() as Record<string, any>;
}

const fired = (decision: Record<string, any>) => (decision.reasons as Array<{ rule: string }>).map((r) => r.rule);

t.test(
  'four devices declined by an attacker: the trusted device still skips, new devices get the motion challenge',
  async (t) => {
    const user = 'lockout-user';
    await trustDirectly(service, { user, device: 'her-laptop', ip: HOME }, clock());
    const attackerDevices = ['a-1', 'a-2', 'a-3', 'a-4'];
    for (const device of attackerDevices) {
      const reply = await decide({ user_id: user, device_id: device, ip: ATTACKER });
      t.ok(
        ['created', 'reused'].includes(reply.verification.status),
        `${device}: ${reply.action}, session ${reply.verification.status}`,
      );
      t.same(await simulator.complete(reply.verification.session_id, 'Declined'), [200, 200]);
      clock.advance(60_000);
    }

    const trusted = await decide({ user_id: user, device_id: 'her-laptop', ip: HOME });
    t.equal(trusted.action, 'SKIP', 'declines elsewhere never raise a trusted device');
    t.match(trusted.signals, {
      'velocity.declines_24h': 4,
      'velocity.declines_device_24h': 0,
      'velocity.declines_elsewhere_24h': 4,
    });

    const herNewPhone = await decide({ user_id: user, device_id: 'her-new-phone', ip: HOME });
    t.equal(herNewPhone.action, 'ACTIVE_3D');
    t.ok(fired(herNewPhone).includes('declines-elsewhere-new-device'));
    t.equal(herNewPhone.verification.status, 'created', 'the attacker’s attempts did not spend her session budget');

    const fifth = await decide({ user_id: user, device_id: 'a-5', ip: ATTACKER });
    t.equal(
      fifth.action,
      'ACTIVE_3D',
      'a fifth attacker device: the strongest challenge, not a day of DENY for the account',
    );
    t.notOk(fired(fifth).includes('decline-storm'));

    t.match(
      fifth.verification,
      { status: 'unavailable', reason: 'pending_on_other_device' },
      'and Didit’s ACTIVE_3D session for this user is handed out to her phone',
    );
    t.same(await simulator.complete(herNewPhone.verification.session_id, 'Approved'), [200, 200]);
    t.equal(
      (await decide({ user_id: user, device_id: 'her-new-phone', ip: HOME })).action,
      'SKIP',
      'her new phone is trusted',
    );

    // His own device pays for its own declines.
    const again = await decide({ user_id: user, device_id: 'a-1', ip: ATTACKER });
    await simulator.complete(again.verification.session_id, 'Declined');
    const own = await decide({ user_id: user, device_id: 'a-1', ip: ATTACKER });
    t.match(own.signals, { 'velocity.declines_device_24h': 2 });
    t.ok(fired(own).includes('repeated-declines'), 'two declines on this device: repeated-declines');
    t.equal(
      (await decide({ user_id: user, device_id: 'her-laptop', ip: HOME })).action,
      'SKIP',
      'and still not her laptop',
    );
  },
);

t.test('five declines on one device deny that device for the day, and only it', async (t) => {
  const user = 'storm-user';
  await trustDirectly(service, { user, device: 'her-laptop', ip: HOME }, clock());
  for (let i = 0; i < 5; i++) {
    const reply = await decide({ user_id: user, device_id: 'stormer', ip: ATTACKER });
    if (reply.verification.session_id) await simulator.complete(reply.verification.session_id, 'Declined');
  }
  const denied = await decide({ user_id: user, device_id: 'stormer', ip: ATTACKER });
  t.equal(denied.action, 'DENY');
  t.ok(fired(denied).includes('decline-storm'));
  t.equal((await decide({ user_id: user, device_id: 'her-laptop', ip: HOME })).action, 'SKIP');
});
