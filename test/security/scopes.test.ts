import t from 'tap';
import { SCOPES, type Scope } from '../../src/routes/auth.js';
import { startTestService } from '../helpers/service.js';

/** Every scope set a token can have: each non-empty subset, and no list at all (every scope). */
const SETS: Array<readonly Scope[] | undefined> = [undefined];
for (let mask = 1; mask < 1 << SCOPES.length; mask++) SETS.push(SCOPES.filter((_s, i) => mask & (1 << i)));
const nameOf = (set: readonly Scope[] | undefined) => (set ? `only_${set.join('_')}` : 'unscoped');
const tokenOf = (set: readonly Scope[] | undefined) => `tok-${nameOf(set)}-0123456789abcdef`;
const API_TOKENS = SETS.map((set) => `${nameOf(set)}:${tokenOf(set)}${set ? `:${set.join('+')}` : ''}`).join(',');

/** One request per route that, with the right scope, is a success or an ordinary answer of the route. */
const SAMPLES: Record<string, { url: string; payload?: unknown }> = {
  'POST /v1/decide': { url: '/v1/decide', payload: { user_id: 'alice', device_id: 'laptop', ip: '89.160.20.112' } },
  'GET /v1/sessions/:session_id': { url: '/v1/sessions/0b7c4b5e-8f7a-4c1e-9d55-6f1f2f0f9a10' },
  'HEAD /v1/sessions/:session_id': { url: '/v1/sessions/0b7c4b5e-8f7a-4c1e-9d55-6f1f2f0f9a10' },
  'GET /v1/users/:user_id/devices': { url: '/v1/users/alice/devices' },
  'HEAD /v1/users/:user_id/devices': { url: '/v1/users/alice/devices' },
  'DELETE /v1/users/:user_id/devices/:device_id': { url: '/v1/users/alice/devices/laptop' },
  'DELETE /v1/users/:user_id': { url: '/v1/users/alice' },
  'POST /v1/evaluate': { url: '/v1/evaluate', payload: { signals: {} } },
  'POST /v1/feedback': {
    url: '/v1/feedback',
    payload: { decision_id: '0b7c4b5e-8f7a-4c1e-9d55-6f1f2f0f9a10', label: 'fraud', source: 'fraud_team' },
  },
};
/** What each scope is for (data/ops/SECURITY.md "Who may call what"): the routes must declare exactly this. */
const EXPECTED_SCOPE: Record<string, Scope> = {
  'POST /v1/decide': 'decide',
  'GET /v1/sessions/:session_id': 'decide',
  'HEAD /v1/sessions/:session_id': 'decide',
  'GET /v1/users/:user_id/devices': 'users',
  'HEAD /v1/users/:user_id/devices': 'users',
  'DELETE /v1/users/:user_id/devices/:device_id': 'users',
  'DELETE /v1/users/:user_id': 'users',
  'POST /v1/evaluate': 'rules',
  'POST /v1/feedback': 'feedback',
};

const service = await startTestService({ API_TOKENS });
t.teardown(() => service.close());
const routes = service.app.routeAccess.filter((r) => 'scope' in r.access);

t.test('each route declares the scope it is documented under', async (t) => {
  t.same(
    Object.fromEntries(routes.map((r) => [`${r.method} ${r.url}`, (r.access as { scope: Scope }).scope])),
    EXPECTED_SCOPE,
  );
});

t.test(
  'every token scope set × every route: the route answers, or 403 RISK_ERR_FORBIDDEN before it runs',
  async (t) => {
    let allowed = 0;
    let forbidden = 0;
    for (const route of routes) {
      const key = `${route.method} ${route.url}`;
      const sample = SAMPLES[key];
      if (!sample) {
        t.fail(
          `${key}: a new route needs a sample request here (and a row in the scope table of data/ops/SECURITY.md)`,
        );
        continue;
      }
      const scope = (route.access as { scope: Scope }).scope;
      for (const set of SETS) {
        const before = service.logs.length;
        const reply = await service.app.inject({
          method: route.method as 'GET',
          url: sample.url,
          headers: { authorization: `Bearer ${tokenOf(set)}` },
          ...(sample.payload ? { payload: sample.payload as object } : {}),
        });
        const label = `${nameOf(set)} → ${key}`;
        if ((set ?? SCOPES).includes(scope)) {
          allowed += 1;
          t.ok(
            (reply.statusCode >= 200 && reply.statusCode < 300) || [400, 404].includes(reply.statusCode),
            `${label}: ${reply.statusCode}`,
          );
          // Whatever the route logged (decision, audit) names this caller.
          const lines = service.logs.slice(before).map((l) => JSON.parse(l) as { audit?: string; caller?: string });
          for (const line of lines.filter((l) => l.audit))
            t.equal(line.caller, nameOf(set), `${label}: the audit line carries the caller name`);
          if (scope === 'users' && route.method !== 'HEAD')
            t.ok(
              lines.some((l) => l.audit),
              `${label}: audited`,
            );
        } else {
          forbidden += 1;
          t.equal(reply.statusCode, 403, label);
          if (route.method !== 'HEAD')
            t.same(
              reply.json(),
              { code: 'RISK_ERR_FORBIDDEN', message: `this token lacks the "${scope}" scope` },
              `${label}: body`,
            );
          t.same(
            service.logs.slice(before).filter((l) => l.includes('"audit"') || l.includes('"decision"')),
            [],
            `${label}: the handler never ran`,
          );
        }
      }
    }
    t.comment(`${routes.length} routes × ${SETS.length} scope sets: ${allowed} allowed, ${forbidden} forbidden`);
    t.equal(allowed + forbidden, routes.length * SETS.length);
    t.ok(forbidden > 0 && allowed > 0);
  },
);

t.test('a decide-only token cannot erase; a users-only token cannot decide', async (t) => {
  const decideOnly = { authorization: `Bearer ${tokenOf(['decide'])}` };
  const users = { authorization: `Bearer ${tokenOf(['users'])}` };
  const decide = (headers: Record<string, string>) =>
    service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers,
      payload: { user_id: 'bob', device_id: 'phone', ip: '89.160.20.112' },
    });
  t.equal((await decide(decideOnly)).statusCode, 200);
  t.equal((await decide(users)).statusCode, 403, 'a users-only token cannot decide');
  const before = service.logs.length;
  t.equal((await service.app.inject({ method: 'DELETE', url: '/v1/users/bob', headers: decideOnly })).statusCode, 403);
  t.notOk(
    service.logs.slice(before).some((l) => l.includes('"user_erased"')),
    'no erase ran',
  );
  t.equal((await service.app.inject({ method: 'DELETE', url: '/v1/users/bob', headers: users })).statusCode, 204);
  t.ok(
    service.logs.some((l) => l.includes('"user_erased"') && l.includes('"caller":"only_users"')),
    'the erase is audited with its caller',
  );
});
