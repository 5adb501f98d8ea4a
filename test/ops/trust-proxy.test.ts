import type { AddressInfo } from 'node:net';
import t from 'tap';
import { startTestService } from '../helpers/service.js';

/** request.ip is observed through the per-source webhook limiter (5 per minute here), on real sockets. */
async function listen(env: Record<string, string>) {
  const service = await startTestService({ RATE_LIMIT_WEBHOOK_PER_MIN: '5', ...env });
  await service.app.listen({ port: 0, host: '127.0.0.1' });
  return { service, base: `http://127.0.0.1:${(service.app.server.address() as AddressInfo).port}` };
}

/**
 * Twelve failed deliveries at once: past the first failure each waits out the 1 s tarpit, so sent one
 * after another they would spend eleven seconds on timers. The count per bucket is the same either way.
 */
async function limitedCount(base: string, forwardedFor: (i: number) => string): Promise<number> {
  const statuses = await Promise.all(
    Array.from({ length: 12 }, async (_, i) => {
      const reply = await fetch(`${base}/v1/webhooks/didit`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-forwarded-for': forwardedFor(i) },
        body: '{}',
      });
      await reply.arrayBuffer();
      return reply.status;
    }),
  );
  return statuses.filter((status) => status === 429).length;
}

t.test('without TRUST_PROXY, a spoofed X-Forwarded-For changes nothing: one socket, one bucket', async (t) => {
  const { service, base } = await listen({});
  t.teardown(() => service.close());
  t.equal(await limitedCount(base, (i) => `10.0.0.${i}`), 7);
});

t.test('with the proxy listed, the right-most untrusted address is the client', async (t) => {
  const { service, base } = await listen({ TRUST_PROXY: '127.0.0.1/32' });
  t.teardown(() => service.close());
  t.equal(await limitedCount(base, (i) => `198.51.100.${i}`), 0, 'twelve clients behind the proxy, twelve buckets');
  t.equal(
    await limitedCount(base, (i) => `1.2.3.${i}, 203.0.113.50`),
    7,
    'the left-most (client-controlled) entries are ignored',
  );
});

t.test('IPv6 clients are bucketed per /64', async (t) => {
  const { service, base } = await listen({ TRUST_PROXY: '127.0.0.1/32' });
  t.teardown(() => service.close());
  t.equal(await limitedCount(base, (i) => `2001:db8:1:2::${i + 1}`), 7, 'one /64, one bucket');
});

t.test('"trust all" and hop counts are refused at start', async (t) => {
  for (const value of ['true', '*', '2']) await t.rejects(startTestService({ TRUST_PROXY: value }), /TRUST_PROXY/);
});
