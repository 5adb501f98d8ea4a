import t from 'tap';
import type { Store } from '../../src/store/store.js';
import { buildTestApp } from '../helpers/app.js';

// The users routes ("this wasn't me", erasure) on the app with a memory store: no rules, GeoIP or Didit.
const now = Date.parse('2026-11-26T12:00:00Z');
const clock = () => now;
const revoked: Array<{ user: string; userId: string; device?: string; reason: string }> = [];
const events = {
  deviceRevoked: async (fact: { user: string; userId: string; device?: string; reason: string }) =>
    void revoked.push(fact),
};
const { app, store, ids, auth } = await buildTestApp({ clock, events });
t.teardown(() => app.close());

const trust = (user: string, device: string) =>
  store.trust(
    {
      user: ids.id('user', user),
      device: ids.id('device', device),
      ip: ids.id('ip', '89.160.20.112'),
      prefix: ids.id('net', '89.160.20.112'),
      grantedBy: `s-${user}-${device}`,
      ttlMs: 90 * 86_400_000,
    },
    now,
  );
const call = (method: 'GET' | 'DELETE', url: string, headers: Record<string, string> = auth.users) =>
  app.inject({ method, url, headers });

t.test('list shows opaque ids only; revoke by raw or opaque id; an unknown device is 404', async (t) => {
  await trust('carol', 'laptop');
  await trust('carol', 'phone');
  const listed = await call('GET', '/v1/users/carol/devices');
  t.equal(listed.statusCode, 200);
  const devices = (listed.json().devices as Array<{ device: string }>).map((d) => d.device).sort();
  t.same(devices, [ids.id('device', 'laptop'), ids.id('device', 'phone')].sort(), 'pseudonyms, never the raw ids');
  t.notOk(listed.body.includes('laptop'), 'no raw device id in the reply');
  t.equal((await call('DELETE', '/v1/users/carol/devices/laptop')).statusCode, 204, 'revoked by its raw id');
  t.equal(
    (await call('DELETE', `/v1/users/carol/devices/${ids.id('device', 'phone')}`)).statusCode,
    204,
    'revoked by its opaque id',
  );
  t.same((await call('GET', '/v1/users/carol/devices')).json().devices, []);
  const again = await call('DELETE', '/v1/users/carol/devices/laptop');
  t.equal(again.statusCode, 404);
  t.equal(again.json().code, 'RISK_ERR_NOT_FOUND');
  t.same(
    revoked.filter((r) => r.userId === 'carol').map((r) => r.reason),
    ['user', 'user'],
    'one event per revocation, none for the 404',
  );
});

t.test('erase removes every trace and is idempotent', async (t) => {
  await trust('dave', 'laptop');
  t.equal((await call('DELETE', '/v1/users/dave')).statusCode, 204);
  t.equal((await call('DELETE', '/v1/users/dave')).statusCode, 204, 'erasing again is fine');
  t.same((await call('GET', '/v1/users/dave/devices')).json().devices, []);
  t.equal(
    (
      await store.peek(
        {
          user: ids.id('user', 'dave'),
          device: ids.id('device', 'laptop'),
          ip: ids.id('ip', '89.160.20.112'),
          prefix: ids.id('net', '89.160.20.112'),
        },
        now,
      )
    ).deviceKnown,
    false,
  );
});

t.test('the users scope is needed; a failing store is 503 with a stable code', async (t) => {
  t.equal((await call('GET', '/v1/users/erin/devices', {})).statusCode, 401);
  t.equal((await call('GET', '/v1/users/erin/devices', auth.decide)).statusCode, 403);
  t.equal((await call('DELETE', '/v1/users/erin', auth.decide)).statusCode, 403);
  const failing = (): Promise<never> => Promise.reject(new Error('down'));
  const broken: Store = { ...store, listDevices: failing, revokeDevice: failing, erase: failing };
  const down = await buildTestApp({ store: broken, clock });
  t.teardown(() => down.app.close());
  for (const [method, url] of [
    ['GET', '/v1/users/erin/devices'],
    ['DELETE', '/v1/users/erin/devices/laptop'],
    ['DELETE', '/v1/users/erin'],
  ] as const) {
    const reply = await down.app.inject({ method, url, headers: down.auth.users });
    t.equal(reply.statusCode, 503, `${method} ${url}`);
    t.equal(reply.json().code, 'RISK_ERR_UNAVAILABLE');
  }
});
