import Fastify, { type FastifyReply } from 'fastify';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { limitInFlight } from '../../src/lib/in-flight.js';

/** A fastify app on a real socket with a decide-like route whose answers the test releases by hand. */
async function harness(t: Test, max: number, bodyDeadlineMs?: number) {
  const app = Fastify();
  const gates: Array<() => void> = [];
  let shedCount = 0;
  const limit = limitInFlight(app, {
    max,
    applies: (request) => (request.routeOptions.config as { scope?: string } | undefined)?.scope === 'decide',
    retryAfterS: 1,
    ...(bodyDeadlineMs !== undefined ? { bodyDeadlineMs } : {}),
    shed: (reply: FastifyReply) => {
      shedCount += 1;
      return reply.status(503).send({ code: 'RISK_ERR_UNAVAILABLE', message: 'overloaded' });
    },
  });
  let handled = 0;
  app.post('/decide', { config: { scope: 'decide' } }, async (request) => {
    handled += 1;
    if ((request.body as { early?: boolean } | undefined)?.early) limit.release(request);
    await new Promise<void>((resolve) => gates.push(resolve));
    return { ok: true };
  });
  app.get('/other', async () => ({ ok: true }));
  await app.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => app.close());
  const port = (app.server.address() as AddressInfo).port;
  const agent = new http.Agent({ keepAlive: false });
  t.teardown(() => agent.destroy());
  const send = (method: string, path: string, body?: object) =>
    new Promise<{ status: number; retryAfter?: string; body: string }>((resolve, reject) => {
      const text = body ? JSON.stringify(body) : undefined;
      const request = http.request(
        {
          host: '127.0.0.1',
          port,
          path,
          method,
          agent,
          headers: text ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } : {},
        },
        (response) => {
          let data = '';
          response.on('data', (chunk) => (data += chunk));
          response.on('end', () =>
            resolve({
              status: response.statusCode ?? 0,
              ...(response.headers['retry-after'] ? { retryAfter: String(response.headers['retry-after']) } : {}),
              body: data,
            }),
          );
        },
      );
      request.on('error', reject);
      request.end(text);
    });
  const waitFor = async (check: () => boolean) => {
    for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
    return check();
  };
  return { app, port, gates, limit, send, waitFor, shed: () => shedCount, handled: () => handled };
}

t.test(
  'past the bound a decide is answered 503 + Retry-After before its handler runs; a finished one frees its slot',
  async (t) => {
    const h = await harness(t, 2);
    const first = [h.send('POST', '/decide', {}), h.send('POST', '/decide', {})];
    t.ok(await h.waitFor(() => h.handled() === 2), 'two decides admitted and waiting');
    t.equal(h.limit.current, 2);
    // Every further decide while two wait: refused, whatever its body, without reaching the handler.
    const refused = await Promise.all(Array.from({ length: 5 }, () => h.send('POST', '/decide', {})));
    t.same(
      refused.map((r) => r.status),
      [503, 503, 503, 503, 503],
    );
    t.same(
      refused.map((r) => r.retryAfter),
      ['1', '1', '1', '1', '1'],
    );
    t.equal(JSON.parse(refused[0]!.body).code, 'RISK_ERR_UNAVAILABLE');
    t.equal(h.handled(), 2, 'no refused decide reached the handler');
    t.equal(h.shed(), 5);
    t.equal((await h.send('GET', '/other')).status, 200, 'other routes are not counted or shed');
    for (const open of h.gates.splice(0)) open();
    t.same(
      (await Promise.all(first)).map((r) => r.status),
      [200, 200],
    );
    t.ok(await h.waitFor(() => h.limit.current === 0), 'both slots given back');
    const again = h.send('POST', '/decide', {});
    t.ok(await h.waitFor(() => h.handled() === 3));
    for (const open of h.gates.splice(0)) open();
    t.equal((await again).status, 200, 'admitted again once there is room');
  },
);

t.test('a client that hangs up frees its slot; release() frees it early, once', async (t) => {
  const h = await harness(t, 1);
  const request = http.request({
    host: '127.0.0.1',
    port: h.port,
    path: '/decide',
    method: 'POST',
    headers: { 'content-type': 'application/json', 'content-length': 2 },
  });
  request.on('error', () => undefined);
  request.end('{}');
  t.ok(await h.waitFor(() => h.handled() === 1));
  t.equal((await h.send('POST', '/decide', {})).status, 503, 'the one slot is taken');
  request.destroy();
  t.ok(await h.waitFor(() => h.limit.current === 0), 'the aborted request gave its slot back');
  for (const open of h.gates.splice(0)) open();

  // A decide that releases early (as decide does before the Didit call) leaves room for another.
  const early = h.send('POST', '/decide', { early: true });
  t.ok(await h.waitFor(() => h.handled() === 2));
  t.equal(h.limit.current, 0, 'released before its answer');
  const next = h.send('POST', '/decide', {});
  t.ok(await h.waitFor(() => h.handled() === 3), 'the next decide was admitted while the first still waits');
  t.equal(h.limit.current, 1);
  for (const open of h.gates.splice(0)) open();
  t.same([(await early).status, (await next).status], [200, 200]);
  t.ok(await h.waitFor(() => h.limit.current === 0), 'the early release was not counted twice');
  t.equal(h.limit.current, 0);
});

t.test('the bound must be at least 1', async (t) => {
  t.throws(() => limitInFlight(Fastify(), { max: 0, applies: () => true, retryAfterS: 1, shed: (r) => r }));
});

t.test(
  'a caller that sends headers and stalls its body holds no slot past the body deadline (outside review)',
  async (t) => {
    const h = await harness(t, 2, 300);
    // Two authenticated-looking decides whose bodies never come: they are admitted in onRequest.
    const stallers = [0, 1].map(() => {
      const socket = net.connect(h.port, '127.0.0.1');
      socket.write(
        'POST /decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{',
      );
      return socket;
    });
    t.teardown(() => {
      for (const s of stallers) s.destroy();
    });
    t.ok(await h.waitFor(() => h.limit.current === 2), 'both stalled requests hold a slot at first');
    const during = await h.send('POST', '/decide', {});
    t.equal(during.status, 503, 'within the body deadline the bound holds');
    t.ok(await h.waitFor(() => h.limit.current === 0), 'past the deadline the stalled requests gave their slots back');
    const healthy = h.send('POST', '/decide', {});
    t.ok(await h.waitFor(() => h.handled() === 1), 'a healthy decide is admitted again');
    for (const open of h.gates) open();
    t.equal((await healthy).status, 200);
  },
);

t.test('a request that delivered its body keeps its slot however long its handler runs', async (t) => {
  const h = await harness(t, 1, 100);
  const slow = h.send('POST', '/decide', {});
  t.ok(await h.waitFor(() => h.handled() === 1));
  await new Promise((r) => setTimeout(r, 300));
  t.equal(h.limit.current, 1, 'the body deadline no longer applies once the handler runs');
  t.equal((await h.send('POST', '/decide', {})).status, 503);
  for (const open of h.gates) open();
  t.equal((await slow).status, 200);
});

t.test('pipelined decides give their slots back when the connection drops, whatever was answered', async (t) => {
  const one = 'POST /decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}';
  for (const pipelined of [2, 3, 8])
    for (const answeredBeforeDrop of [0, 1, pipelined - 1]) {
      const { port, gates, limit, waitFor } = await harness(t, 16, 60_000);
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.write(one.repeat(pipelined));
      const name = `${pipelined} pipelined, ${answeredBeforeDrop} answered before the drop`;
      // fastify reads the whole pipeline: every decide is admitted and its handler waits on a gate.
      t.ok(await waitFor(() => gates.length === pipelined), `${name}: all admitted`);
      for (const open of gates.splice(0, answeredBeforeDrop)) open();
      await new Promise((r) => setTimeout(r, 50));
      socket.destroy();
      await new Promise((r) => setTimeout(r, 50));
      for (const open of gates.splice(0)) open();
      // A minute-long body deadline: only the connection's close can have given the slots back.
      t.ok(await waitFor(() => limit.current === 0), `${name}: every slot given back (${limit.current} held)`);
    }
});
