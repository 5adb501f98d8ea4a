import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { ERROR_STATUS } from '../../src/errors.js';
import { MAX_PARAM_LENGTH } from '../../src/app.js';
import { head, rawRequest, type RawReply } from '../helpers/raw-http.js';
import { startTestService, TEST_TOKEN } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

const service = await startTestService();
await service.app.listen({ port: 0, host: '127.0.0.1' });
t.teardown(() => service.close());
const port = (service.app.server.address() as AddressInfo).port;
const auth = { authorization: `Bearer ${TEST_TOKEN}` };
const AUTH_LINE = `Authorization: Bearer ${TEST_TOKEN}\r\n`;

/** Our error shape and nothing else: a RISK_ERR_* code that matches the status, no fastify fields, no echo. */
function assertCleanError(
  t: Pick<typeof import('tap').default, 'equal' | 'same' | 'fail' | 'notMatch' | 'notOk'>,
  reply: RawReply,
  status: number,
  code: string,
  probe: string,
  label: string,
): void {
  t.equal(reply.status, status, `${label}: status`);
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(reply.body) as Record<string, unknown>;
  } catch {
    t.fail(`${label}: the body is JSON (${JSON.stringify(reply.body.slice(0, 80))})`);
  }
  t.equal(body.code, code, `${label}: code`);
  t.equal(ERROR_STATUS[body.code as keyof typeof ERROR_STATUS], reply.status, `${label}: the code's documented status`);
  t.same(
    Object.keys(body).filter((k) => !['code', 'message', 'field'].includes(k)),
    [],
    `${label}: only code, message, field`,
  );
  t.notMatch(reply.raw, /FST_|"statusCode"|"error":/, `${label}: no fastify body`);
  if (probe.length >= 4) t.notOk(reply.body.includes(probe), `${label}: the input is not echoed`);
}

t.test(
  'the route table of data/ops/SECURITY.md matches the routes: authentication, scope, and each body limit probed',
  async (t) => {
    const readme = readFileSync('data/ops/SECURITY.md', 'utf8');
    const section = readme.slice(
      readme.indexOf('## Routes and authentication'),
      readme.indexOf('## Configuration that fails closed'),
    );
    const rows = [
      ...section.matchAll(/^\| `(GET|POST|PUT|PATCH|DELETE) ([^`]+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$/gm),
    ].map((m) => ({
      key: `${m[1]} ${m[2]!.replace(/\{([a-z_]+)\}/g, ':$1')}`,
      public: m[3]!.startsWith('public'),
      scope: /`(\w+)`/.exec(m[4]!)?.[1],
      limit: /\d/.test(m[5]!) ? Number(m[5]!.replace(/[^\d]/g, '')) : undefined,
    }));
    const routes = service.app.routeAccess.filter((r) => r.method !== 'HEAD');
    t.same(rows.map((r) => r.key).sort(), routes.map((r) => `${r.method} ${r.url}`).sort(), 'one row per route');
    for (const route of routes) {
      const row = rows.find((r) => r.key === `${route.method} ${route.url}`);
      if (!row) continue;
      t.equal(row.public, 'public' in route.access, `${row.key}: public or not`);
      t.equal(row.scope, 'scope' in route.access ? route.access.scope : undefined, `${row.key}: scope`);
      const bodyRead = ['POST', 'PUT', 'PATCH', 'DELETE'].includes(route.method);
      t.equal(row.limit !== undefined, bodyRead, `${row.key}: a limit exactly where a body is read`);
      if (row.limit === undefined) continue;
      const path = route.url.replace(/:([a-z_]+)/g, 'x');
      const json = (size: number) => `{"pad":"${'a'.repeat(size - 10)}"}`;
      for (const [size, tooLarge] of [
        [row.limit, false],
        [row.limit + 1, true],
      ] as const) {
        const body = json(size);
        t.equal(Buffer.byteLength(body), size);
        const reply = await rawRequest(port, head(route.method, path, { headers: auth, body }), body, 30_000);
        if (tooLarge) assertCleanError(t, reply, 413, 'RISK_ERR_BODY_TOO_LARGE', '', `${row.key}: ${size} bytes`);
        else
          t.ok(
            reply.status !== 413 && reply.status < 500,
            `${row.key}: ${size} bytes is within the limit (${reply.status})`,
          );
      }
      // The same limit holds when no length is declared up front (chunked).
      const chunked = json(row.limit + 1);
      const reply = await rawRequest(
        port,
        head(route.method, path, {
          headers: { ...auth, 'Transfer-Encoding': 'chunked' },
          contentType: 'application/json',
        }),
        `${chunked.length.toString(16)}\r\n${chunked}\r\n0\r\n\r\n`,
        30_000,
      );
      assertCleanError(t, reply, 413, 'RISK_ERR_BODY_TOO_LARGE', '', `${row.key}: chunked, ${row.limit + 1} bytes`);
    }
  },
);

t.test('bad percent-encodings: 400 RISK_ERR_BAD_REQUEST, with or without a route, never the URL echoed', async (t) => {
  const bad = ['%ZZ', '%', '%G0', '%0', '%C0%AF', '%E0%A4%A', '%ED%A0%80', '%FF', '%80', 'a%2', '%%76'];
  const templates = [
    '/v1/sessions/{}',
    '/v1/users/{}/devices',
    '/v1/users/alice/devices/{}',
    '/v1/users/{}',
    '/nope/{}',
    '/{}',
  ];
  for (const template of templates) {
    for (const escaped of bad) {
      const target = template.replace('{}', `probe${escaped}`);
      for (const headers of [{}, auth]) {
        const method = template.startsWith('/v1/users/{}') || template.includes('/devices/') ? 'DELETE' : 'GET';
        const reply = await rawRequest(port, head(method, target, { headers }));
        assertCleanError(t, reply, 400, 'RISK_ERR_BAD_REQUEST', target, `${method} ${target}`);
      }
    }
  }
});

t.test(
  `path parameters: up to ${MAX_PARAM_LENGTH} characters (decoded) reach the route, more is 414, a longer head 431`,
  async (t) => {
    for (const param of [
      'u'.repeat(MAX_PARAM_LENGTH),
      '%75'.repeat(MAX_PARAM_LENGTH),
      encodeURIComponent('€'.repeat(MAX_PARAM_LENGTH)),
    ]) {
      const at = await rawRequest(port, head('GET', `/v1/users/${param}/devices`, { headers: auth }));
      t.equal(
        at.status,
        400,
        `at the limit (${param.length} characters on the wire): the route answers (a user id over 128 characters is a validation error)`,
      );
      t.equal(JSON.parse(at.body).code, 'RISK_ERR_VALIDATION');
    }
    for (const length of [MAX_PARAM_LENGTH + 1, 2305, 5000]) {
      for (const target of [
        `/v1/sessions/${'a'.repeat(length)}`,
        `/v1/users/${'b'.repeat(length)}/devices`,
        `/v1/users/alice/devices/${'%2F'.repeat(length)}`,
      ]) {
        const reply = await rawRequest(
          port,
          head(target.includes('/devices/') ? 'DELETE' : 'GET', target, { headers: auth }),
        );
        assertCleanError(t, reply, 414, 'RISK_ERR_URI_TOO_LONG', target.slice(0, 200), `${length}-character parameter`);
      }
    }
    for (const target of [`/v1/sessions/${'a'.repeat(20_000)}`, `/nope?${'q'.repeat(20_000)}`]) {
      const reply = await rawRequest(port, head('GET', target));
      assertCleanError(t, reply, 431, 'RISK_ERR_HEADERS_TOO_LARGE', target.slice(0, 200), 'a request head over 16 KiB');
    }
    const bigHeader = await rawRequest(port, head('GET', '/healthz', { headers: { 'X-Pad': 'p'.repeat(20_000) } }));
    assertCleanError(t, bigHeader, 431, 'RISK_ERR_HEADERS_TOO_LARGE', 'p'.repeat(200), 'a header over 16 KiB');
  },
);

t.test(
  'media types: anything but JSON is 415 on the JSON routes; JSON with parameters or other case is JSON',
  async (t) => {
    const types = [
      'text/plain',
      'text/plain; charset=utf-8',
      'text/html',
      'application/xml',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      'application/octet-stream',
      'application/jsonp',
      'application/json-patch+json',
      'application/vnd.api+json',
      'json',
      '',
      ';;;',
      null,
    ];
    const body = '{"user_id":"alice","device_id":"laptop","ip":"89.160.20.112"}';
    for (const route of ['/v1/decide', '/v1/evaluate']) {
      for (const type of types) {
        const reply = await rawRequest(port, head('POST', route, { headers: auth, body, contentType: type }), body);
        assertCleanError(t, reply, 415, 'RISK_ERR_UNSUPPORTED_MEDIA_TYPE', '', `${route} as ${JSON.stringify(type)}`);
      }
    }
    for (const type of [
      'application/json',
      'application/json; charset=utf-8',
      'Application/JSON',
      'application/json;charset=UTF-8',
    ]) {
      const reply = await rawRequest(
        port,
        head('POST', '/v1/decide', { headers: auth, body, contentType: type }),
        body,
      );
      t.equal(reply.status, 200, `decide as ${type}`);
    }
    const plain = await rawRequest(port, head('POST', '/v1/decide', { body, contentType: 'text/plain' }), body);
    t.equal(plain.status, 401, 'without a token the token check comes first (no body is read)');
  },
);

t.test('bodies that are not JSON objects: 400 RISK_ERR_MALFORMED_BODY or VALIDATION, never a 500', async (t) => {
  const malformed = [
    '',
    '{',
    '{"a":}',
    'nul',
    '[',
    '{"a":1}x',
    '{"a":"\\x"}',
    '\u0000',
    '{"__proto__":{"x":1}}',
    '{"constructor":{"prototype":{"x":1}}}',
    '{"a":{"__proto__":{}}}',
  ];
  for (const route of ['/v1/decide', '/v1/evaluate']) {
    for (const body of malformed) {
      const reply = await rawRequest(
        port,
        head('POST', route, { headers: auth, body, contentType: 'application/json' }),
        body,
      );
      assertCleanError(t, reply, 400, 'RISK_ERR_MALFORMED_BODY', body, `${route} ${JSON.stringify(body)}`);
    }
    for (const body of ['null', '1', '"s"', '[]', 'true', '{}']) {
      const reply = await rawRequest(port, head('POST', route, { headers: auth, body }), body);
      assertCleanError(t, reply, 400, 'RISK_ERR_VALIDATION', '', `${route} ${body}`);
    }
  }
});

t.test('Content-Length that disagrees with the body', async (t) => {
  // Only the in-process transport can end a request whose body disagrees with its header: over a
  // socket node's parser takes the declared length (the rest is a malformed next request, below).
  for (const length of ['1', '500']) {
    const reply = await service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { ...auth, 'content-type': 'application/json', 'content-length': length },
      payload: '{"user_id":"alice"}',
    });
    t.equal(reply.statusCode, 400, `content-length ${length}`);
    t.equal(reply.json().code, 'RISK_ERR_MALFORMED_BODY');
    t.notMatch(reply.body, /FST_/);
  }
});

t.test('malformed HTTP and unroutable request forms: 400 RISK_ERR_BAD_REQUEST in our shape', async (t) => {
  const post = `Host: x\r\n${AUTH_LINE}Content-Type: application/json\r\n`;
  const probes: Array<[string, string]> = [
    ['an unknown method token', 'FOO /v1/decide HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['CONNECT', 'CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: x\r\n\r\n'],
    [
      'Content-Length and Transfer-Encoding',
      `POST /v1/decide HTTP/1.1\r\n${post}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`,
    ],
    ['a bad chunk size', `POST /v1/decide HTTP/1.1\r\n${post}Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`],
    ['two Content-Lengths', `POST /v1/decide HTTP/1.1\r\n${post}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}`],
    ['a non-numeric Content-Length', `POST /v1/decide HTTP/1.1\r\n${post}Content-Length: abc\r\n\r\n{}`],
    ['a header name with a space', 'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n'],
    ['a NUL in a header value', 'GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\u0000b\r\n\r\n'],
    ['a bare LF request line', 'GET /healthz HTTP/1.1\nHost: x\n\n'],
    ['no Host in HTTP/1.1', 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'],
    ['no Host, protected route', `GET /v1/users/alice/devices HTTP/1.1\r\n${AUTH_LINE}Connection: close\r\n\r\n`],
    [
      'absolute-form',
      `GET http://x/v1/users/alice/devices HTTP/1.1\r\nHost: x\r\n${AUTH_LINE}Connection: close\r\n\r\n`,
    ],
    ['asterisk-form', 'OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'],
  ];
  for (const [label, request] of probes) {
    const reply = await rawRequest(port, request);
    assertCleanError(t, reply, 400, 'RISK_ERR_BAD_REQUEST', '', label);
  }
});

t.test('a method a route does not have is 404 RISK_ERR_NOT_FOUND, HEAD and OPTIONS included', async (t) => {
  const paths = new Map<string, Set<string>>();
  for (const r of service.app.routeAccess) paths.set(r.url, (paths.get(r.url) ?? new Set()).add(r.method));
  let probed = 0;
  for (const [url, methods] of paths) {
    for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE']) {
      if (methods.has(method)) continue;
      const reply = await rawRequest(
        port,
        head(method, url.replace(/:([a-z_]+)/g, 'x'), { headers: auth, body: '{}' }),
        '{}',
      );
      probed += 1;
      t.equal(reply.status, 404, `${method} ${url}`);
      if (method !== 'HEAD')
        t.same(JSON.parse(reply.body), { code: 'RISK_ERR_NOT_FOUND', message: 'not found' }, `${method} ${url}: body`);
    }
  }
  t.ok(probed >= 40, `${probed} method/route pairs`);
});

t.test('a device id of 256 characters (what decide accepts) is revoked by its raw id', async (t) => {
  const ids = [
    ['ASCII', 'd'.repeat(256)],
    ['reserved characters', "/?#%;+&= .:@!$'()*,[]".repeat(13).slice(0, 256)],
    ['three-byte UTF-8', '€'.repeat(256)],
    ['surrogate pairs', '😀'.repeat(128)],
  ] as const;
  const now = Date.now();
  for (const [label, device] of ids) {
    t.equal(device.length, 256, `${label}: 256 UTF-16 units`);
    const decide = await service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: auth,
      payload: { user_id: 'carol', device_id: device, ip: '89.160.20.112' },
    });
    t.equal(decide.statusCode, 200, `${label}: decide accepts it`);
    await trustDirectly(service, { user: 'carol', device, ip: '89.160.20.112' }, now);
    const target = `/v1/users/carol/devices/${encodeURIComponent(device)}`;
    t.comment(`${label}: ${target.length - 24} characters encoded`);
    const revoked = await rawRequest(port, head('DELETE', target, { headers: auth }));
    t.equal(revoked.status, 204, `${label}: revoked`);
    const again = await rawRequest(port, head('DELETE', target, { headers: auth }));
    t.equal(again.status, 404, `${label}: gone`);
  }
  const list = await service.app.inject({ method: 'GET', url: '/v1/users/carol/devices', headers: auth });
  t.same(list.json().devices, [], 'no trusted device left');
  const tooLong = await rawRequest(
    port,
    head('DELETE', `/v1/users/carol/devices/${'d'.repeat(257)}`, { headers: auth }),
  );
  assertCleanError(t, tooLong, 414, 'RISK_ERR_URI_TOO_LONG', 'd'.repeat(257), '257 characters');
});
