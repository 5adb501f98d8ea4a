import t from 'tap';
import { createDiditClient } from '../../src/didit/client.js';
import { listDeadLetters, replayDeadLetters } from '../../src/didit/dead-letters.js';
import { asciiEscape, canonicalJson, signWebhook } from '../../src/didit/signature.js';
import { createWebhookHandler } from '../../src/didit/webhook-handler.js';
import { webhookSettings } from '../../src/compose.js';
import { startDiditStack } from '../helpers/didit.js';
import { CHROME_WINDOWS, testClock, injectDecide } from '../helpers/service.js';

const clock = testClock();
// Generous Didit deadline: the machine is shared, and this file tests verdicts, not timeouts.
const stack = await startDiditStack(clock, { DIDIT_TIMEOUT_MS: '5000' });
const { service, simulator, secret } = stack;
t.teardown(() => stack.close());

let n = 0;
const decide = async (user: string) => {
  const response = await injectDecide(service, {
    user_id: user,
    device_id: `${user}-phone`,
    ip: '2001:218::1',
    user_agent: CHROME_WINDOWS,
  });
  return response.json() as { action: string; verification: { status: string; session_id: string } };
};

/** A real step-up: decide opens a Didit session at the simulator, and the simulator's user finishes it. */
async function stepUp(): Promise<{ user: string; sessionId: string }> {
  const user = `verdict-user-${++n}`;
  const first = await decide(user);
  if (first.action !== 'PASSIVE' || first.verification.status !== 'created')
    throw new Error(`no step-up: ${JSON.stringify(first)}`);
  return { user, sessionId: first.verification.session_id };
}

const nowS = () => Math.floor(clock() / 1000);

/** A delivery as Didit writes it (ensure_ascii text, signed three ways), optionally reshaped first. */
function delivery(
  sessionId: string,
  status: string,
  tsS = nowS(),
  reshape: (body: Record<string, any>) => Record<string, any> = (b) => b,
) {
  const body = reshape(JSON.parse(simulator.webhookFor(sessionId, status, tsS).body) as Record<string, any>);
  const raw = asciiEscape(canonicalJson(body));
  return { raw, headers: signWebhook(raw, secret) };
}

async function post(d: { raw: string; headers: Record<string, string> }) {
  const response = await service.app.inject({
    method: 'POST',
    url: '/v1/webhooks/didit',
    headers: { 'content-type': 'application/json', ...d.headers },
    payload: d.raw,
  });
  return {
    status: response.statusCode,
    result: (response.json() as { result?: string; code?: string }).result ?? response.json().code,
  };
}

const permutations = <T>(items: readonly T[]): T[][] =>
  items.length <= 1
    ? [items.slice()]
    : items.flatMap((item, i) =>
        permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]),
      );

t.test(
  'Declined (t−2), Approved (t−1), Declined (t) in every delivery order: no trust, the session ends Declined',
  async (t) => {
    for (const order of permutations([
      ['Declined', -2],
      ['Approved', -1],
      ['Declined', 0],
    ] as const)) {
      const s = await stepUp();
      const t0 = nowS();
      for (const [status, dt] of order) t.equal((await post(delivery(s.sessionId, status, t0 + dt))).status, 200);
      simulator.sessions.get(s.sessionId)!.status = 'Declined'; // finished at Didit: never handed out again
      const label = order.map(([status, dt]) => `${status}@t${dt || ''}`).join(' → ');
      const stored = await service.store.getSession(s.sessionId, clock());
      t.match(stored, { status: 'declined', lastEventTs: t0 }, `${label}: the newest verdict stands`);
      t.not((await decide(s.user)).action, 'SKIP', label);
    }
  },
);

t.test('an Approved and a Declined with the same signed second: Declined wins in both orders', async (t) => {
  for (const order of [
    ['Approved', 'Declined'],
    ['Declined', 'Approved'],
  ]) {
    const s = await stepUp();
    const t0 = nowS();
    for (const status of order) await post(delivery(s.sessionId, status, t0));
    simulator.sessions.get(s.sessionId)!.status = 'Declined';
    t.not((await decide(s.user)).action, 'SKIP', order.join(' → '));
  }
  const control = await stepUp();
  await post(delivery(control.sessionId, 'Declined', nowS() - 1));
  t.equal((await post(delivery(control.sessionId, 'Approved', nowS()))).result, 'verified');
  simulator.sessions.get(control.sessionId)!.status = 'Approved';
  t.equal((await decide(control.user)).action, 'SKIP', 'control: a newer Approved after a Declined does trust');
});

t.test(
  "Didit's documented shapes (v1, v2, v3) with nulls where fields are optional are applied, never ignored",
  async (t) => {
    const shapes: Record<string, (b: Record<string, any>) => Record<string, any>> = {
      // v1 (docs.didit.me identity-verification/webhooks): no webhook_type, no workflow_id, a `face` block without a method.
      v1: (b) => ({
        session_id: b.session_id,
        status: b.status,
        created_at: b.created_at,
        timestamp: b.timestamp,
        vendor_data: b.vendor_data,
        decision: {
          session_id: b.session_id,
          status: b.status,
          features: 'FACE',
          face: {
            status: 'Approved',
            liveness_status: 'Approved',
            liveness_confidence: 87.99,
            face_match_similarity: null,
          },
        },
      }),
      // v2: the singular `liveness` block, which names no method.
      v2: (b) => ({
        ...b,
        decision: {
          session_id: b.session_id,
          status: b.status,
          liveness: { status: 'Approved', score: 95.0, age_estimation: null },
        },
      }),
      // v3 with nulls: method, workflow_id, event_id, a score.
      v3_nulls: (b) => ({
        ...b,
        workflow_id: null,
        event_id: null,
        decision: {
          ...b.decision,
          workflow_id: null,
          liveness_checks: [{ ...b.decision.liveness_checks[0], method: null, score: null }],
        },
      }),
      v3_no_decision: (b) => ({ ...b, decision: null }),
    };
    for (const [name, reshape] of Object.entries(shapes)) {
      const s = await stepUp();
      simulator.sessions.get(s.sessionId)!.status = 'Approved';
      const calls = simulator.stats.decisionCalls;
      const reply = await post(delivery(s.sessionId, 'Approved', nowS(), reshape));
      t.same(reply, { status: 200, result: 'verified' }, name);
      t.equal(simulator.stats.decisionCalls - calls, 1, `${name}: the method came from GET /decision/`);
      t.equal((await decide(s.user)).action, 'SKIP', `${name}: trusted`);
    }
  },
);

t.test(
  'an Approved whose method stays unknown is held, counted, dead-lettered, and applied by a replay after the fix',
  async (t) => {
    const s = await stepUp();
    const sim = simulator.sessions.get(s.sessionId)! as { status: string; method: string | null };
    sim.status = 'Approved';
    const realMethod = sim.method;
    sim.method = null; // Didit's decision names no method either
    const reply = await post(
      delivery(s.sessionId, 'Approved', nowS(), (b) => ({
        ...b,
        decision: { ...b.decision, liveness_checks: [{ ...b.decision.liveness_checks[0], method: null }] },
      })),
    );
    t.same(reply, { status: 200, result: 'hold' });
    t.not((await decide(s.user)).action, 'SKIP', 'held: no trust');
    const metrics = await service.metrics.registry.getSingleMetricAsString('risk_webhook_events_total');
    t.match(metrics, /risk_webhook_events_total\{result="hold"\} 1/);
    const letters = await listDeadLetters(service.store, service.ids, clock());
    const mine = letters.filter((l) => l.sessionId === s.sessionId);
    t.equal(mine.length, 1);
    t.equal(mine[0]!.letter.reason, 'method_unknown');
    t.notOk(mine[0]!.letter.sealed.includes(s.user), 'the user id is sealed, not in clear');

    sim.method = realMethod; // the fix: the workflow reports its method
    clock.advance(3 * 60_000); // later than Didit's freshness window: a replay is not a new delivery
    const client = createDiditClient({
      baseUrl: stack.baseUrl,
      apiKey: stack.credentials.apiKey,
      workflows: stack.credentials.workflows,
    });
    const handle = createWebhookHandler({
      store: service.store,
      ids: service.ids,
      secrets: [secret],
      ...webhookSettings(service.config),
      client,
      clock,
    });
    const results = await replayDeadLetters({ store: service.store, ids: service.ids, handle, now: clock() });
    t.match(
      results.find((r) => r.id === mine[0]!.letter.id),
      { removed: true, outcome: { result: 'verified' } },
    );
    t.equal((await decide(s.user)).action, 'SKIP', 'trusted after the replay');
    t.equal(
      (await listDeadLetters(service.store, service.ids, clock())).filter((l) => l.sessionId === s.sessionId).length,
      0,
    );
  },
);

t.test(
  'an authentic delivery we cannot parse is a dead letter (metric, sealed record), and stays one on replay',
  async (t) => {
    const s = await stepUp();
    const reply = await post(
      delivery(s.sessionId, 'Approved', nowS(), (b) => ({
        ...b,
        timestamp: b.timestamp,
        status: { unexpected: true },
      })),
    );
    t.same(reply, { status: 200, result: 'dead_letter' });
    const metrics = await service.metrics.registry.getSingleMetricAsString('risk_webhook_events_total');
    t.match(metrics, /risk_webhook_events_total\{result="dead_letter"\} 1/);
    const mine = (await listDeadLetters(service.store, service.ids, clock())).filter(
      (l) => l.sessionId === s.sessionId,
    );
    t.match(mine, [{ letter: { reason: 'unexpected_shape' } }]);
    const handle = createWebhookHandler({
      store: service.store,
      ids: service.ids,
      secrets: [secret],
      ...webhookSettings(service.config),
      clock,
    });
    const results = await replayDeadLetters({ store: service.store, ids: service.ids, handle, now: clock() });
    t.match(
      results.find((r) => r.id === mine[0]!.letter.id),
      { removed: false, outcome: { result: 'dead_letter' } },
    );
    t.equal(
      (await listDeadLetters(service.store, service.ids, clock() + 7 * 24 * 3600_000 + 1)).length,
      0,
      'gone after seven days',
    );
  },
);

t.test('In Review, then a reviewer approves 6 hours later: the device that asked is trusted', async (t) => {
  const s = await stepUp();
  t.same(await post(delivery(s.sessionId, 'In Review')), { status: 200, result: 'verified' });
  simulator.sessions.get(s.sessionId)!.status = 'In Review';
  t.not((await decide(s.user)).action, 'SKIP', 'not while in review');
  clock.advance(6 * 3600_000);
  simulator.sessions.get(s.sessionId)!.status = 'Approved';
  t.same(await post(delivery(s.sessionId, 'Approved')), { status: 200, result: 'verified' });
  t.equal((await decide(s.user)).action, 'SKIP');

  const late = await stepUp();
  clock.advance(6 * 3600_000);
  t.same(
    await post(delivery(late.sessionId, 'Approved')),
    { status: 200, result: 'expired' },
    'control: no review, an Approved 6 hours later does not trust',
  );
  const reviewLate = await stepUp();
  clock.advance(11 * 60_000);
  await post(delivery(reviewLate.sessionId, 'In Review'));
  t.same(
    await post(delivery(reviewLate.sessionId, 'Approved')),
    { status: 200, result: 'expired' },
    'control: the user finished after the pending window',
  );
  const beyond = await stepUp();
  await post(delivery(beyond.sessionId, 'In Review'));
  clock.advance(7 * 24 * 3600_000 + 60_000);
  // Past the review TTL the session record itself has lapsed (each key family keeps its own lifetime), so
  // the verdict meets no binding at all: refused either way, and the device stays unknown.
  const past = await post(delivery(beyond.sessionId, 'Approved'));
  t.equal(past.status, 200);
  t.ok(['expired', 'unbound'].includes(past.result as string), `control: past DIDIT_REVIEW_TTL_HOURS (${past.result})`);
  t.not((await decide(beyond.user)).action, 'SKIP', 'and the device that asked is not trusted');
});
