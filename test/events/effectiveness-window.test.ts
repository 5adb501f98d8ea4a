import t from 'tap';
import { startDiditStack } from '../helpers/didit.js';
import { injectDecide, testClock } from '../helpers/service.js';
import { scenarioRules, value } from './effectiveness-scenario.js';

// A journal interval far longer than a webhook's round trip: every verdict below arrives while its
// decision's record is still in the journal's batch, not yet in the store.
const clock = testClock();
const stack = await startDiditStack(clock, { RULES_DIR: scenarioRules(), DECISION_JOURNAL_FLUSH_MS: '1000' });
const { service, simulator } = stack;
t.teardown(() => stack.close());

t.test('DECISION_JOURNAL_FLUSH_MS sets the batch interval: a record waits in the batch until then', async (t) => {
  const reply = (
    await injectDecide(service, { user_id: 'window-interval', device_id: 'd', ip: '2001:218::1' })
  ).json() as { decision_id: string };
  // Ten times the default interval later, a tenth of the one set.
  await new Promise((r) => setTimeout(r, 50));
  t.equal(await service.records.get(reply.decision_id, clock()), undefined, 'not in the store 50 ms after the answer');
  await service.effectiveness.flush();
  t.ok(await service.records.get(reply.decision_id, clock()), 'there once the batch is written');
});

t.test('a verdict that arrives before its decision record is written is counted, once', async (t) => {
  const outcome = (o: string) =>
    value(service.metrics.stepUpOutcomes, { rule: 'risky-flag', method: 'PASSIVE', outcome: o });
  const before = { approved: await outcome('approved'), declined: await outcome('declined') };
  const decide = async (user: string) =>
    (
      await injectDecide(service, {
        user_id: user,
        device_id: `${user}-d`,
        ip: '2001:218::1',
        attributes: { risky: true, watch: false, noisy: false, never: false, shadowy: false },
      })
    ).json() as { decision_id: string; verification: { status: string; session_id: string } };
  const a = await decide('window-a');
  const b = await decide('window-b');
  t.equal(a.verification.status, 'created');
  t.equal(b.verification.status, 'created');
  t.same(await simulator.complete(a.verification.session_id, 'Approved'), [200, 200], 'A approved at once');
  t.same(await simulator.complete(b.verification.session_id, 'Declined'), [200, 200], 'B declined at once');
  // A repeated delivery (Didit retries) counts nothing more.
  const again = simulator.webhookFor(a.verification.session_id, 'Approved');
  const replayed = await service.app.inject({
    method: 'POST',
    url: '/v1/webhooks/didit',
    headers: again.headers,
    payload: again.body,
  });
  t.equal(replayed.statusCode, 200);
  await service.effectiveness.flush();
  t.equal(await outcome('approved'), before.approved + 1, 'approved once');
  t.equal(await outcome('declined'), before.declined + 1, 'declined once');
  t.match(await service.records.get(a.decision_id, clock()), { outcome: { outcome: 'approved' } }, 'A settled');
  t.match(await service.records.get(b.decision_id, clock()), { outcome: { outcome: 'declined' } }, 'B settled');
});
