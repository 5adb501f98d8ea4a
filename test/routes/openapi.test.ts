import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import t, { type Test } from 'tap';
import { signWebhook } from '../../src/didit/signature.js';
import { startDiditStack } from '../helpers/didit.js';
import { CHROME_WINDOWS, testClock } from '../helpers/service.js';

const clock = testClock();
const stack = await startDiditStack(clock);
const { service, simulator } = stack;
t.teardown(() => stack.close());

const document = (await service.app.inject({ method: 'GET', url: '/docs/json' })).json() as {
  openapi: string;
  paths: Record<
    string,
    Record<string, { responses: Record<string, { content?: Record<string, { schema: object }> }> }>
  >;
};
const ajv = new (Ajv2020 as unknown as typeof Ajv2020.default)({ strict: false, allErrors: true });
(addFormats as unknown as typeof addFormats.default)(ajv);

/** Checks a real reply against the documented schema for that route, method and status. */
function conforms(t: Test, method: string, path: string, response: { statusCode: number; body: string }) {
  const operation = document.paths[path]?.[method.toLowerCase()];
  t.ok(operation, `${method} ${path} is documented`);
  const documented = operation?.responses[String(response.statusCode)];
  t.ok(documented, `${method} ${path} ${response.statusCode} is a documented status`);
  const schema = documented?.content?.['application/json']?.schema;
  if (!schema) return;
  const validate = ajv.compile(schema);
  const ok = validate(JSON.parse(response.body));
  t.ok(ok, `${method} ${path} ${response.statusCode} matches its schema ${ok ? '' : JSON.stringify(validate.errors)}`);
}

t.test('the document is OpenAPI 3.1 and covers every public route', async (t) => {
  t.equal(document.openapi, '3.1.0');
  for (const path of [
    '/v1/decide',
    '/v1/webhooks/didit',
    '/v1/sessions/{session_id}',
    '/v1/users/{user_id}',
    '/v1/users/{user_id}/devices',
    '/v1/users/{user_id}/devices/{device_id}',
    '/healthz',
    '/readyz',
  ]) {
    t.ok(document.paths[path], path);
  }
});

t.test("every route's real replies validate against the document", async (t) => {
  const inject = (
    method: 'GET' | 'POST' | 'DELETE',
    url: string,
    payload?: unknown,
    headers: Record<string, string> = service.auth,
  ) =>
    service.app.inject({
      method,
      url,
      headers: { ...(payload !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      ...(payload !== undefined ? { payload: typeof payload === 'string' ? payload : JSON.stringify(payload) } : {}),
    });
  const decided = await inject('POST', '/v1/decide', {
    user_id: 'doc-user',
    device_id: 'd',
    ip: '89.160.20.112',
    user_agent: CHROME_WINDOWS,
  });
  conforms(t, 'POST', '/v1/decide', decided);
  conforms(t, 'POST', '/v1/decide', await inject('POST', '/v1/decide', { user_id: 'doc-user' }));
  conforms(
    t,
    'POST',
    '/v1/decide',
    await inject('POST', '/v1/decide', { user_id: 'u', device_id: 'd', ip: '1.2.3.4' }, {}),
  );
  conforms(
    t,
    'POST',
    '/v1/decide',
    await inject('POST', '/v1/decide', 'user=x', { ...service.auth, 'content-type': 'text/plain' }),
  );
  simulator.faults = { status: 503 };
  conforms(
    t,
    'POST',
    '/v1/decide',
    await inject('POST', '/v1/decide', { user_id: 'doc-user-2', device_id: 'd', ip: '185.220.101.1' }),
  );
  simulator.faults = {};
  const sessionId = decided.json().verification.session_id as string;
  conforms(t, 'GET', '/v1/sessions/{session_id}', await inject('GET', `/v1/sessions/${sessionId}?user_id=doc-user`));
  conforms(
    t,
    'GET',
    '/v1/sessions/{session_id}',
    await inject('GET', '/v1/sessions/00000000-0000-4000-8000-000000000000'),
  );
  conforms(t, 'GET', '/v1/sessions/{session_id}', await inject('GET', '/v1/sessions/not-a-uuid'));
  await simulator.complete(sessionId, 'Approved');
  conforms(t, 'GET', '/v1/users/{user_id}/devices', await inject('GET', '/v1/users/doc-user/devices'));
  conforms(
    t,
    'DELETE',
    '/v1/users/{user_id}/devices/{device_id}',
    await inject('DELETE', '/v1/users/doc-user/devices/nope'),
  );
  conforms(t, 'DELETE', '/v1/users/{user_id}', await inject('DELETE', '/v1/users/doc-user'));
  const body = JSON.stringify({
    webhook_type: 'status.updated',
    timestamp: Math.floor(clock() / 1000),
    session_id: sessionId,
    status: 'Approved',
    vendor_data: 'x',
  });
  conforms(
    t,
    'POST',
    '/v1/webhooks/didit',
    await service.app.inject({
      method: 'POST',
      url: '/v1/webhooks/didit',
      headers: { 'content-type': 'application/json', ...signWebhook(body, stack.secret) },
      payload: body,
    }),
  );
  conforms(
    t,
    'POST',
    '/v1/webhooks/didit',
    await service.app.inject({
      method: 'POST',
      url: '/v1/webhooks/didit',
      headers: { 'content-type': 'application/json' },
      payload: body,
    }),
  );
  conforms(t, 'GET', '/healthz', await inject('GET', '/healthz'));
  conforms(t, 'GET', '/readyz', await inject('GET', '/readyz'));
});
