import t from 'tap';
import { seedPendingSession } from '../helpers/pending-session.js';
import { buildTestApp } from '../helpers/app.js';
import type { Store } from '../../src/store/store.js';

// GET /v1/sessions/{id}: what the login service does next, from the session record alone.
let now = Date.parse('2026-11-26T12:00:00Z');
const clock = () => now;
const testApp = await buildTestApp({ clock });
const { app, store, ids, auth } = testApp;
t.teardown(() => app.close());

const get = (path: string, headers: Record<string, string> = auth.decide) =>
  app.inject({ method: 'GET', url: path, headers });

t.test(
  'a pending step-up reads pending, then retry once its window lapsed; another user or an unknown id is 404',
  async (t) => {
    const seeded = await seedPendingSession({ store, ids, now, user: 'alice', workflowId: 'wf-1' });
    const fresh = await get(`/v1/sessions/${seeded.id}?user_id=alice`);
    t.equal(fresh.statusCode, 200);
    t.match(fresh.json(), { session_id: seeded.id, user_id: 'alice', outcome: 'pending', method: 'PASSIVE' });
    t.equal(
      (await get(`/v1/sessions/${seeded.id}?user_id=mallory`)).statusCode,
      404,
      'a user_id that does not match is a 404',
    );
    t.equal((await get('/v1/sessions/00000000-0000-4000-8000-999999999999')).statusCode, 404);
    now += 11 * 60_000;
    t.match((await get(`/v1/sessions/${seeded.id}`)).json(), { outcome: 'retry' }, 'timed out: retry');
  },
);

t.test('each verdict maps to what the login service does', async (t) => {
  for (const [status, diditStatus, outcome] of [
    ['approved', 'Approved', 'allow'],
    ['declined', 'Declined', 'deny'],
    ['in_review', 'In Review', 'hold'],
    ['retry', 'Abandoned', 'retry'],
  ] as const) {
    const seeded = await seedPendingSession({ store, ids, now, user: `u-${status}`, workflowId: 'wf-1' });
    await store.updateSession(seeded.id, { status, diditStatus, eventTs: Math.floor(now / 1000) + 1 }, now);
    t.match(
      (await get(`/v1/sessions/${seeded.id}`)).json(),
      { status: diditStatus, outcome },
      `${diditStatus} → ${outcome}`,
    );
  }
});

t.test('the decide scope is needed; a failing store is 503, never a guess', async (t) => {
  const seeded = await seedPendingSession({ store, ids, now, user: 'bob', workflowId: 'wf-1' });
  t.equal((await get(`/v1/sessions/${seeded.id}`, {})).statusCode, 401);
  t.equal((await get(`/v1/sessions/${seeded.id}`, auth.users)).statusCode, 403);
  const broken: Store = { ...store, getSession: async () => Promise.reject(new Error('down')) };
  const down = await buildTestApp({ store: broken, clock });
  t.teardown(() => down.app.close());
  const reply = await down.app.inject({ method: 'GET', url: `/v1/sessions/${seeded.id}`, headers: down.auth.decide });
  t.equal(reply.statusCode, 503);
  t.equal(reply.json().code, 'RISK_ERR_UNAVAILABLE');
});

t.test('parts a route group does not use are not wired: reaching one is a loud test error', async (t) => {
  const reply = await app.inject({
    method: 'POST',
    url: '/v1/decide',
    headers: { 'content-type': 'application/json', ...auth.all },
    payload: JSON.stringify({ user_id: 'a', device_id: 'd', ip: '89.160.20.112' }),
  });
  t.equal(reply.statusCode, 500, 'the decide route reached the unwired rules and failed, as a test bug should');
});
