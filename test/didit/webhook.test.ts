import { readFileSync } from 'node:fs';
import t from 'tap';
import type { StepUpRung } from '../../src/engine/ladder.js';
import { startDiditStack } from '../helpers/didit.js';
import { type SeededSession, seedPendingSession, signedVerdict } from '../helpers/pending-session.js';
import { testClock } from '../helpers/service.js';

const clock = testClock();
// 5,000 deliveries from one loopback address in a few seconds: lift the per-source webhook limit here.
const stack = await startDiditStack(clock, { RATE_LIMIT_WEBHOOK_PER_MIN: '100000' });
const { service, simulator, secret } = stack;
t.teardown(() => stack.close());

async function post(body: string, headers: Record<string, string>) {
  const response = await service.app.inject({
    method: 'POST',
    url: '/v1/webhooks/didit',
    headers: { 'content-type': 'application/json', ...headers },
    payload: body,
  });
  return { status: response.statusCode, body: response.json() as Record<string, any> };
}

const WORKFLOWS: Record<StepUpRung, string> = {
  PASSIVE: 'aaaaaaaa-1111-4111-8111-000000000001',
  FLASHING: 'aaaaaaaa-1111-4111-8111-000000000002',
  ACTIVE_3D: 'aaaaaaaa-1111-4111-8111-000000000003',
};
let counter = 0;
/** A pending session of ours, as decide would have recorded it. */
function pendingSession(method: StepUpRung = 'PASSIVE', user = `user-${++counter}`): Promise<SeededSession> {
  return seedPendingSession({
    store: service.store,
    ids: service.ids,
    now: clock(),
    user,
    method,
    workflowId: WORKFLOWS[method],
  });
}

/** Didit's signed delivery for the session (a v3 one, naming the liveness method run: reference §3). */
function event(
  session: Pick<SeededSession, 'id' | 'user' | 'workflowId'> & { method?: StepUpRung },
  status: string,
  over: Record<string, unknown> = {},
  tsS = Math.floor(clock() / 1000),
) {
  return signedVerdict(session, status, { tsS, secret, over });
}

async function trusted(user: string): Promise<number> {
  return (await service.store.listDevices(service.ids.id('user', user), clock())).length;
}

// Record every grant the handler makes, against the real store.
let grants = 0;
const realTrust = service.store.trust.bind(service.store);
(service.store as { trust: typeof service.store.trust }).trust = async (grant, now) => {
  grants += 1;
  return realTrust(grant, now);
};

t.test('the contract vectors arrive through the route: authentic but not ours → 2xx, nothing changes', async (t) => {
  const { secret: vectorSecret, vectors } = JSON.parse(readFileSync('test/didit/vectors.json', 'utf8')) as {
    secret: string;
    vectors: Array<{
      name: string;
      raw: string;
      x_timestamp: string;
      x_signature: string;
      x_signature_v2: string;
      x_signature_simple: string;
    }>;
  };
  for (const v of vectors) {
    const own = await startDiditStack(testClock(Number(v.x_timestamp) * 1000), {}, vectorSecret);
    for (const headers of [{ 'x-signature-v2': v.x_signature_v2 }, { 'x-signature': v.x_signature }]) {
      const response = await own.service.app.inject({
        method: 'POST',
        url: '/v1/webhooks/didit',
        headers: { 'content-type': 'application/json', 'x-timestamp': v.x_timestamp, ...headers },
        payload: Buffer.from(v.raw, 'utf8'),
      });
      t.equal(response.statusCode, 200, `${v.name}: authentic`);
      t.equal(response.json().result, 'unbound', `${v.name}: not a session we created`);
    }
    const wrong = await own.service.app.inject({
      method: 'POST',
      url: '/v1/webhooks/didit',
      headers: {
        'content-type': 'application/json',
        'x-signature-v2': v.x_signature_v2.replace(/^./, (c) => (c === '0' ? '1' : '0')),
      },
      payload: v.raw,
    });
    t.equal(wrong.statusCode, 401);
    await own.close();
  }
  const rejected = await post(vectors[0]!.raw, {
    'x-signature-v2': vectors[0]!.x_signature_v2,
    'x-timestamp': vectors[0]!.x_timestamp,
  });
  t.equal(rejected.status, 401, 'under another secret the same bytes are rejected');
  t.equal(rejected.body.code, 'RISK_ERR_BAD_SIGNATURE');
});

t.test('bad, missing, short and non-hex signatures are 401, never 500', async (t) => {
  const s = await pendingSession();
  const { body, headers } = event(s, 'Approved');
  for (const bad of [
    {},
    { 'x-signature-v2': 'abc' },
    { 'x-signature-v2': 'z'.repeat(64) },
    { 'x-signature-v2': headers['x-signature-v2']!.slice(0, 62) },
    { 'x-signature': '' },
  ]) {
    const response = await post(body, bad as Record<string, string>);
    t.equal(response.status, 401, JSON.stringify(bad).slice(0, 40));
    t.equal(response.body.code, 'RISK_ERR_BAD_SIGNATURE');
  }
  const tampered = body.replace('"Approved"', '"Declined"');
  t.equal(
    (await post(tampered, { 'x-signature-v2': headers['x-signature-v2']!, 'x-signature': headers['x-signature']! }))
      .status,
    401,
  );
  t.equal(await trusted(s.user), 0);
});

t.test('malformed JSON is 400 and an oversized body 413, before any HMAC work', async (t) => {
  t.equal((await post('{"session_id":', { 'x-signature-v2': 'a'.repeat(64) })).status, 400);
  const huge = await post(JSON.stringify({ pad: 'x'.repeat(300 * 1024) }), { 'x-signature-v2': 'a'.repeat(64) });
  t.equal(huge.status, 413);
});

t.test('a verified Approved grants trust once; its duplicates are 2xx and change nothing', async (t) => {
  const s = await pendingSession();
  const before = grants;
  const eventId = '5f0e0d0c-0b0a-4909-8807-060504030201';
  const { body, headers } = event(s, 'Approved', { event_id: eventId });
  const first = await post(body, headers);
  t.match(first, { status: 200, body: { result: 'verified' } });
  const again = await post(body, headers);
  t.match(again, { status: 200, body: { result: 'duplicate' } });
  const resigned = event(s, 'Approved', { event_id: eventId }, Math.floor(clock() / 1000) + 5);
  t.match(
    await post(resigned.body, resigned.headers),
    { status: 200, body: { result: 'duplicate' } },
    'a re-signed retry is the same event (same event id)',
  );
  t.equal(grants - before, 1);
  t.equal(await trusted(s.user), 1);
});

t.test('verdicts not bound to a session we created change nothing', async (t) => {
  const before = grants;
  const cases: Array<[string, () => Promise<{ body: string; headers: Record<string, string> }>, string]> = [
    [
      'unknown session',
      async () =>
        event(
          { id: '00000000-0000-4000-8000-999999999999', user: 'nobody', workflowId: WORKFLOWS.PASSIVE },
          'Approved',
        ),
      'unbound',
    ],
    [
      'another workflow',
      async () =>
        event({ ...(await pendingSession()), workflowId: 'bbbbbbbb-1111-4111-8111-000000000009' }, 'Approved'),
      'unbound',
    ],
    ['another user', async () => event({ ...(await pendingSession()), user: 'mallory' }, 'Approved'), 'unbound'],
    [
      'approved after the pending lifetime',
      async () => {
        const s = await pendingSession();
        return event(s, 'Approved', {}, Math.floor(clock() / 1000) + 11 * 60);
      },
      'expired',
    ],
    [
      'a weaker liveness method than required',
      async () =>
        event(await pendingSession('ACTIVE_3D'), 'Approved', {
          decision: { liveness_checks: [{ method: 'passive', status: 'Approved' }] },
        }),
      'method_too_weak',
    ],
  ];
  for (const [title, make, result] of cases) {
    const { body, headers } = await make();
    if (title === 'approved after the pending lifetime') clock.advance(11 * 60_000);
    const response = await post(body, headers);
    if (title === 'approved after the pending lifetime') clock.advance(-11 * 60_000);
    t.equal(response.status, 200, `${title}: 2xx so Didit stops retrying`);
    t.equal(response.body.result, result, title);
  }
  t.equal(grants - before, 0, '0 grants');
});

t.test('a replay outside the window is rejected, with original or forged timestamps', async (t) => {
  const s = await pendingSession();
  const captured = event(s, 'Approved');
  clock.advance(10 * 60_000);
  t.match(await post(captured.body, captured.headers), { status: 401 });
  t.match(
    await post(captured.body, { ...captured.headers, 'x-timestamp': String(Math.floor(clock() / 1000)) }),
    { status: 401 },
    'X-Timestamp is not in the V2 MAC: a forged one is caught',
  );
  t.equal(await trusted(s.user), 0);
  clock.advance(-10 * 60_000);
});

t.test('Approved then a reviewer Declined revokes the trust it granted', async (t) => {
  const s = await pendingSession();
  const ts = Math.floor(clock() / 1000);
  const approved = event(s, 'Approved', {}, ts);
  t.match(await post(approved.body, approved.headers), { body: { result: 'verified' } });
  t.equal(await trusted(s.user), 1);
  const declined = event(s, 'Declined', {}, ts + 60);
  clock.advance(60_000);
  t.match(await post(declined.body, declined.headers), { body: { result: 'verified' } });
  t.equal(await trusted(s.user), 0, 'revoked');
  const status = await service.app.inject({ method: 'GET', url: `/v1/sessions/${s.id}`, headers: service.auth });
  t.match(status.json(), { status: 'Declined', outcome: 'deny' });
  clock.advance(-60_000);
});

t.test('an older Approved arriving after a newer Declined grants nothing', async (t) => {
  const s = await pendingSession();
  const ts = Math.floor(clock() / 1000);
  const declined = event(s, 'Declined', {}, ts);
  const approved = event(s, 'Approved', {}, ts - 30);
  await post(declined.body, declined.headers);
  t.match(await post(approved.body, approved.headers), { status: 200, body: { result: 'out_of_order' } });
  t.equal(await trusted(s.user), 0);
});

t.test('Declined counts against the user; In Review holds; Abandoned asks for a retry', async (t) => {
  const declinedSession = await pendingSession();
  const d = event(declinedSession, 'Declined');
  await post(d.body, d.headers);
  const user = service.ids.id('user', declinedSession.user);
  const history = await service.store.observe({ user, device: 'x', ip: 'y', prefix: 'z' }, clock());
  t.equal(history.declines24h, 1);
  for (const [status, outcome] of [
    ['In Review', 'hold'],
    ['Abandoned', 'retry'],
    ['In Progress', 'pending'],
  ] as const) {
    const s = await pendingSession();
    const e = event(s, status);
    await post(e.body, e.headers);
    const reply = await service.app.inject({
      method: 'GET',
      url: `/v1/sessions/${s.id}?user_id=${s.user}`,
      headers: service.auth,
    });
    t.match(reply.json(), { status, outcome }, status);
  }
  const unknown = await service.app.inject({
    method: 'GET',
    url: '/v1/sessions/00000000-0000-4000-8000-000000000000',
    headers: service.auth,
  });
  t.equal(unknown.statusCode, 404);
  const otherUser = await service.app.inject({
    method: 'GET',
    url: `/v1/sessions/${declinedSession.id}?user_id=someone-else`,
    headers: service.auth,
  });
  t.equal(otherUser.statusCode, 404, 'no cross-user probing');
});

t.test('other event types are acknowledged and ignored', async (t) => {
  const s = await pendingSession();
  const e = event(s, 'Approved', { webhook_type: 'user.status.updated' });
  t.match(await post(e.body, e.headers), { status: 200, body: { result: 'ignored' } });
  t.equal(await trusted(s.user), 0);
});

t.test('Simple-only deliveries are confirmed against GET /decision/ before anything is trusted', async (t) => {
  const decide = await service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...service.auth },
    payload: JSON.stringify({ user_id: 'simple-user', device_id: 'd', ip: '89.160.20.112' }),
  });
  const sessionId = decide.json().verification.session_id as string;
  simulator.sessions.get(sessionId)!.status = 'Approved';
  const { body, headers } = simulator.webhookFor(sessionId, 'Approved');
  const before = simulator.stats.decisionCalls;
  const response = await post(body, {
    'x-signature-simple': headers['x-signature-simple']!,
    'x-timestamp': headers['x-timestamp']!,
  });
  t.match(response, { status: 200, body: { result: 'verified' } });
  t.equal(simulator.stats.decisionCalls - before, 1);
  t.equal(await trusted('simple-user'), 1);

  const forged = await service.app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...service.auth },
    payload: JSON.stringify({ user_id: 'forged-user', device_id: 'd', ip: '89.160.20.112' }),
  });
  const forgedId = forged.json().verification.session_id as string;
  const lie = simulator.webhookFor(forgedId, 'Approved');
  const lying = await post(lie.body, {
    'x-signature-simple': lie.headers['x-signature-simple']!,
    'x-timestamp': lie.headers['x-timestamp']!,
  });
  t.match(lying.body, { result: 'verified' });
  t.equal(await trusted('forged-user'), 0, 'Didit says Not Started: an envelope claiming Approved grants nothing');
});

t.test('while the store is down the webhook answers 503 and the retry applies it exactly once', async (t) => {
  const s = await pendingSession();
  const { body, headers } = event(s, 'Approved');
  const store = service.store as unknown as Record<string, unknown>;
  const saved = { getSession: store.getSession, claimOnce: store.claimOnce };
  const fail = async () => {
    throw new Error('Connection is closed.');
  };
  store.getSession = fail;
  const down = await post(body, headers);
  t.equal(down.status, 503);
  t.notOk(JSON.stringify(down.body).includes('Connection is closed'));
  store.getSession = saved.getSession;
  store.claimOnce = fail;
  t.equal((await post(body, headers)).status, 503);
  store.claimOnce = saved.claimOnce;
  const before = grants;
  t.match(await post(body, headers), { status: 200, body: { result: 'verified' } });
  t.match(await post(body, headers), { status: 200, body: { result: 'duplicate' } });
  t.equal(grants - before, 1);
});

t.test('1,000 events delivered 5 times each, 50 at a time, grant trust exactly 1,000 times', async (t) => {
  const sessions = await Promise.all(Array.from({ length: 1000 }, () => pendingSession()));
  const deliveries = sessions.flatMap((s) => Array.from({ length: 5 }, () => event(s, 'Approved')));
  for (let i = deliveries.length - 1; i > 0; i--) {
    const j = (i * 7919) % (i + 1);
    [deliveries[i], deliveries[j]] = [deliveries[j]!, deliveries[i]!];
  }
  const before = grants;
  const results: Record<string, number> = {};
  for (let i = 0; i < deliveries.length; i += 50) {
    const batch = await Promise.all(deliveries.slice(i, i + 50).map((d) => post(d.body, d.headers)));
    for (const r of batch) results[`${r.status} ${r.body.result}`] = (results[`${r.status} ${r.body.result}`] ?? 0) + 1;
  }
  t.same(results, { '200 verified': 1000, '200 duplicate': 4000 });
  t.equal(grants - before, 1000);
});
