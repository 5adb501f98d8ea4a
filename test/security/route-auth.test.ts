import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import t from 'tap';
import { registerCallerAuth } from '../../src/routes/auth.js';
import { head, rawRequest, routerTable, type RawReply } from '../helpers/raw-http.js';
import { startTestService, TEST_TOKEN } from '../helpers/service.js';

/** The routes that answer without a bearer token, and why: anything else needs a token and a scope. */
const EXPECTED_PUBLIC = [
  'GET /docs/json', // the OpenAPI document
  'GET /healthz',
  'GET /readyz',
  'HEAD /docs/json',
  'HEAD /healthz',
  'HEAD /readyz',
  'POST /v1/webhooks/didit', // HMAC-signed by Didit
];

const SAMPLE: Record<string, string> = {
  session_id: '0b7c4b5e-8f7a-4c1e-9d55-6f1f2f0f9a10',
  user_id: 'alice',
  device_id: 'laptop',
};
const fill = (url: string) => url.replace(/:([A-Za-z_]+)/g, (_m, name: string) => SAMPLE[name] ?? `x-${name}`);

const hex = (c: string, lower: boolean) => {
  const code = c.charCodeAt(0).toString(16).padStart(2, '0');
  return `%${lower ? code.toLowerCase() : code.toUpperCase()}`;
};

/** Every spelling class of one path: percent-encodings, slashes, dot segments, `;`, absolute form. */
export function spellings(path: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const chars = [...path];
  chars.forEach((c, i) => {
    if (c === '/') return;
    for (const lower of [false, true]) {
      if (lower && !/[a-f]/i.test(hex(c, false))) continue; // no letter in the escape: one spelling only
      out.push([`${c}@${i} as ${hex(c, lower)}`, chars.map((d, j) => (j === i ? hex(d, lower) : d)).join('')]);
    }
    out.push([
      `${c}@${i} double-encoded`,
      chars.map((d, j) => (j === i ? `%25${hex(d, false).slice(1)}` : d)).join(''),
    ]);
  });
  const every = (lower: boolean, mixed = false) =>
    chars.map((c, i) => (c === '/' ? c : hex(c, mixed ? i % 2 === 0 : lower))).join('');
  out.push(
    ['every character, upper-case escapes', every(false)],
    ['every character, lower-case escapes', every(true)],
    ['every character, mixed-case escapes', every(false, true)],
  );
  chars.forEach((c, i) => {
    if (c !== '/' || i === 0) return;
    out.push(
      [`slash@${i} as %2F`, chars.map((d, j) => (j === i ? '%2F' : d)).join('')],
      [`slash@${i} as %2f`, chars.map((d, j) => (j === i ? '%2f' : d)).join('')],
    );
    out.push(
      [`slash@${i} doubled`, chars.map((d, j) => (j === i ? '//' : d)).join('')],
      [`/./ at ${i}`, chars.map((d, j) => (j === i ? '/./' : d)).join('')],
    );
    out.push(
      [`/x/../ at ${i}`, chars.map((d, j) => (j === i ? '/x/../' : d)).join('')],
      [`; before slash ${i}`, chars.map((d, j) => (j === i ? ';/' : d)).join('')],
    );
  });
  out.push(
    ['leading //', `/${path}`],
    ['leading /./', `/.${path}`],
    ['leading /x/../', `/x/..${path}`],
    ['leading %2F', `%2F${path.slice(1)}`],
    ['trailing ;', `${path};`],
    ['trailing ;x=1', `${path};x=1`],
    ['trailing %3B', `${path}%3B`],
    ['trailing /', `${path}/`],
    ['trailing /.', `${path}/.`],
    ['trailing %00', `${path}%00`],
    ['trailing %20', `${path}%20`],
    ['trailing %2F', `${path}%2F`],
    ['query string', `${path}?x=1`],
    ['fragment', `${path}#x`],
    ['upper case', path.toUpperCase()],
    ['backslashes', path.replaceAll('/', '\\')],
    ['absolute-form', `http://x${path}`],
    ['absolute-form, upper-case scheme and host', `HTTP://X${path}`],
    ['absolute-form https with port', `https://127.0.0.1:1${path}`],
    ['absolute-form with userinfo', `http://u:p@x${path}`],
    ['absolute-form, %76', `http://x${path.replace('v', '%76')}`],
    ['absolute-form, double slash', `http://x/${path}`],
    ['authority-like //host/path', `//x${path}`],
    ['asterisk-form', '*'],
  );
  return out;
}

const service = await startTestService();
await service.app.listen({ port: 0, host: '127.0.0.1' });
t.teardown(() => service.close());
const port = (service.app.server.address() as AddressInfo).port;
const token = { authorization: `Bearer ${TEST_TOKEN}` };
const send = (method: string, target: string, authorized: boolean): Promise<RawReply> => {
  const body = method === 'POST' ? '{}' : undefined;
  return rawRequest(port, head(method, target, { headers: authorized ? token : {}, ...(body ? { body } : {}) }), body);
};
const codeOf = (reply: RawReply) => (reply.body ? (JSON.parse(reply.body) as { code?: string }).code : undefined);

const routes = service.app.routeAccess;
const protectedRoutes = routes.filter((r) => !('public' in r.access));

t.test("the auth hook saw every route in the router's table, and each declared public or a scope", async (t) => {
  const router = routerTable(service.app.printRoutes({ commonPrefix: false }));
  t.ok(router.length >= 14, `${router.length} routes in the router`);
  t.same(
    routes.map((r) => `${r.method} ${r.url}`).sort(),
    router,
    'no route was registered where the auth hook could not see it',
  );
  t.same(
    routes
      .filter((r) => 'public' in r.access)
      .map((r) => `${r.method} ${r.url}`)
      .sort(),
    EXPECTED_PUBLIC,
    'the public routes are exactly the expected ones',
  );
  for (const route of protectedRoutes)
    t.ok(
      'scope' in route.access,
      `${route.method} ${route.url} declares scope ${JSON.stringify((route.access as { scope?: string }).scope)}`,
    );
  for (const expected of [
    'POST /v1/decide',
    'POST /v1/evaluate',
    'GET /v1/sessions/:session_id',
    'DELETE /v1/users/:user_id',
    'GET /v1/users/:user_id/devices',
    'DELETE /v1/users/:user_id/devices/:device_id',
    'POST /v1/feedback',
  ]) {
    t.ok(router.includes(expected), `${expected} (registered by a plugin) is enumerated`);
  }
});

t.test('a route registered without a decision on auth, or with both, stops the app from building', async (t) => {
  for (const config of [{}, { public: true, scope: 'users' }, { scope: 'admin' }, { public: 'yes' }] as never[]) {
    const app = Fastify();
    registerCallerAuth(app, [{ name: 'a', token: 'a-token-0123456789abcdef' }]);
    t.throws(
      () => app.get('/v1/new', { config }, async () => ({})),
      /declare config\.public: true or config\.scope/,
      JSON.stringify(config),
    );
    await app.close();
  }
});

t.test('public routes answer without a token (the webhook checks its own signature)', async (t) => {
  t.equal((await send('GET', '/healthz', false)).status, 200);
  t.equal((await send('HEAD', '/healthz', false)).status, 200);
  t.equal((await send('GET', '/docs/json', false)).status, 200);
  t.ok([200, 503].includes((await send('GET', '/readyz', false)).status));
  const webhook = await send('POST', '/v1/webhooks/didit', false);
  t.equal(webhook.status, 401, webhook.body);
  t.equal(codeOf(webhook), 'RISK_ERR_BAD_SIGNATURE', 'the HMAC check answered, not the bearer check');
});

for (const route of protectedRoutes) {
  t.test(`${route.method} ${route.url}: 401 without a token in every spelling that reaches it`, async (t) => {
    const path = fill(route.url);
    const plain = await send(route.method, path, false);
    t.equal(plain.status, 401, 'plain path');
    t.equal(plain.headers['www-authenticate'], 'Bearer');
    if (route.method !== 'HEAD') t.equal(codeOf(plain), 'RISK_ERR_UNAUTHORIZED');
    const reached = await send(route.method, path, true);
    t.notOk([401, 403].includes(reached.status), `with the token the route answers (${reached.status})`);
    for (const authorization of [
      `Bearer ${TEST_TOKEN}x`,
      `Bearer ${TEST_TOKEN.slice(0, -1)}`,
      `Basic ${TEST_TOKEN}`,
      TEST_TOKEN,
      'Bearer',
      'Bearer ',
      `Bearer ${TEST_TOKEN} extra`,
    ]) {
      const body = route.method === 'POST' ? '{}' : undefined;
      const wrong = await rawRequest(
        port,
        head(route.method, path, { headers: { authorization }, ...(body ? { body } : {}) }),
        body,
      );
      t.equal(wrong.status, 401, `Authorization: ${authorization.replace(TEST_TOKEN, '<token>')} is refused`);
    }

    const counts = { routed: 0, unmatched: 0, refused: 0 };
    for (const [label, target] of spellings(path)) {
      const anonymous = await send(route.method, target, false);
      const authorized = await send(route.method, target, true);
      if (!target.startsWith('/')) {
        // Absolute- and asterisk-form targets are refused before routing, token or not.
        t.equal(anonymous.status, 400, `${label}: ${target}`);
        if (route.method !== 'HEAD') t.equal(codeOf(anonymous), 'RISK_ERR_BAD_REQUEST', `${label}: code`);
        t.equal(authorized.status, 400, `${label}: refused with a token too`);
        counts.refused += 1;
      } else if (anonymous.status === 401) {
        // The router took this spelling to the route (a param may decode to another value, so the
        // route's answer may differ): with the token it is the route answering, not the 404 fallback.
        t.notOk([401, 403].includes(authorized.status), `${label}: ${target} reaches the route only with the token`);
        if (route.method !== 'HEAD' && authorized.status === 404)
          t.not(JSON.parse(authorized.body).message, 'not found', `${label}: the route answered`);
        counts.routed += 1;
      } else if (anonymous.status === 404) {
        if (route.method !== 'HEAD') t.equal(codeOf(anonymous), 'RISK_ERR_NOT_FOUND', `${label}: ${target}`);
        t.equal(authorized.status, 404, `${label}: no route with a token either`);
        if (route.method !== 'HEAD')
          t.same(
            JSON.parse(authorized.body),
            { code: 'RISK_ERR_NOT_FOUND', message: 'not found' },
            `${label}: the unmatched-path answer, not the route's`,
          );
        counts.unmatched += 1;
      } else {
        t.equal(anonymous.status, 400, `${label}: ${target} answers 401, 404 or a 400 for a bad URL`);
        if (route.method !== 'HEAD') t.equal(codeOf(anonymous), 'RISK_ERR_BAD_REQUEST', `${label}: code`);
        counts.refused += 1;
      }
    }
    t.comment(`${route.method} ${route.url}: ${JSON.stringify(counts)}`);
    // The probes: the router decodes these, so they must have met the token check.
    t.equal((await send(route.method, path.replace('v', '%76'), false)).status, 401, '%76 for v');
    t.equal((await send(route.method, path.replace('1', '%31'), false)).status, 401, '%31 for 1');
    t.ok(counts.routed >= 10 && counts.unmatched >= 10 && counts.refused >= 5, 'each outcome class was exercised');
  });
}

t.test('an unmatched path is a 404 whatever its spelling, method, token or body', async (t) => {
  const targets = [
    '/v1/nope',
    '/v2/decide',
    '/%76%32/decide',
    '/v1/decide/extra',
    '/v1/users',
    '/v1/sessions',
    '/',
    '/v1',
    '/docs',
    '/healthz/x',
    '/%2e%2e/etc/passwd',
  ];
  for (const target of targets) {
    for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
      for (const authorized of [false, true]) {
        const reply = await rawRequest(
          port,
          head(method, target, { headers: authorized ? token : {}, body: 'not json', contentType: 'text/plain' }),
          'not json',
        );
        t.equal(reply.status, 404, `${method} ${target}${authorized ? ' with a token' : ''}`);
        t.same(JSON.parse(reply.body), { code: 'RISK_ERR_NOT_FOUND', message: 'not found' });
      }
    }
  }
});
