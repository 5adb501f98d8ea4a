import type { AddressInfo } from 'node:net';
import t from 'tap';
import { signWebhook } from '../../src/didit/signature.js';
import type { StepUpSession } from '../../src/store/store.js';
import { startTestService, testClock } from '../helpers/service.js';

// Didit sends every verdict from one address and does not retry a 429: a busy minute must lose nothing.
// The default failure budget (RATE_LIMIT_WEBHOOK_PER_MIN=120) is in force, and junk from the same
// address spends it during the run.
const clock = testClock(Date.now());
const secret = 'volume-test-webhook-secret-0123456789';
const workflows = {
  PASSIVE: 'aaaaaaaa-1111-4111-8111-000000000001',
  FLASHING: 'aaaaaaaa-1111-4111-8111-000000000002',
  ACTIVE_3D: 'aaaaaaaa-1111-4111-8111-000000000003',
};
const service = await startTestService(
  {},
  { clock, didit: { baseUrl: 'http://127.0.0.1:9', apiKey: 'unused', webhookSecrets: [secret], workflows } },
);
await service.app.listen({ port: 0, host: '127.0.0.1' });
const url = `http://127.0.0.1:${(service.app.server.address() as AddressInfo).port}/v1/webhooks/didit`;
t.teardown(() => service.close());

let grants = 0;
const realTrust = service.store.trust.bind(service.store);
(service.store as { trust: typeof service.store.trust }).trust = async (grant, now) => {
  grants += 1;
  return realTrust(grant, now);
};

// Eight times the failure budget: were authentic deliveries counted against it, all but 120 would be
// refused. The forged fifth (200) has spent the budget about 600 deliveries in, so some 400 authentic
// ones arrive with it spent.
const COUNT = 1000;

t.test(
  `${COUNT} authentic deliveries from one address within one minute (test clock): 0 refused, exactly ${COUNT} grants`,
  async (t) => {
    const now = clock();
    const deliveries: Array<{ body: string; headers: Record<string, string> }> = [];
    for (let i = 0; i < COUNT; i++) {
      const id = `00000000-0000-4000-9000-${String(i).padStart(12, '0')}`;
      const user = service.ids.id('user', `volume-${i}`);
      const device = service.ids.id('device', `volume-device-${i}`);
      const session: StepUpSession = {
        sessionId: id,
        user,
        device,
        method: 'PASSIVE',
        workflowId: workflows.PASSIVE,
        url: 'sealed',
        createdAt: now,
        expiresAt: now + 600_000,
        status: 'pending',
        diditStatus: 'Not Started',
        updatedAt: now,
        lastEventTs: 0,
        grant: { user, device, ip: service.ids.id('ip', '192.0.2.1'), prefix: service.ids.id('net', '192.0.2.0') },
      };
      await service.store.recordPending(session, now);
      const ts = Math.floor(now / 1000);
      const body = JSON.stringify({
        event_id: `e-${i}`,
        webhook_type: 'status.updated',
        timestamp: ts,
        session_id: id,
        status: 'Approved',
        vendor_data: `volume-${i}`,
        workflow_id: workflows.PASSIVE,
        decision: { liveness_checks: [{ method: 'PASSIVE', status: 'Approved', score: 100.0 }] },
      });
      deliveries.push({ body, headers: signWebhook(body, secret) });
    }
    const junk = {
      body: JSON.stringify({ session_id: 'x', status: 'Approved', timestamp: 1 }),
      headers: { 'x-signature': 'a'.repeat(64), 'x-signature-v2': 'b'.repeat(64) },
    };

    const counts: Record<string, number> = {};
    const count = (key: string) => (counts[key] = (counts[key] ?? 0) + 1);
    const send = async (d: { body: string; headers: Record<string, string> }) => {
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...d.headers },
        body: d.body,
      });
      const reply = (await response.json()) as { result?: string };
      return `${response.status}${reply.result ? ` ${reply.result}` : ''}`;
    };
    const started = Date.now();
    let next = 0;
    // Past its first few failures a forged delivery waits out the 1 s tarpit: it runs beside the
    // authentic ones, not in front of the next, or sixteen senders spend a minute waiting on timers.
    const forged: Array<Promise<unknown>> = [];
    // 16 connections' worth of concurrency; every fifth request is a forged one from the same address.
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < COUNT) {
          const i = next++;
          if (i % 5 === 0) forged.push(send(junk).then((status) => count(`forged ${status}`)));
          count(`authentic ${await send(deliveries[i]!)}`);
        }
      }),
    );
    await Promise.all(forged);
    const elapsedMs = Date.now() - started;
    t.comment(`${COUNT} authentic + ${COUNT / 5} forged deliveries in ${elapsedMs} ms: ${JSON.stringify(counts)}`);
    t.equal(clock(), now, 'the test clock stood still: all of it inside one limiter minute, however slow the machine');
    t.same(
      Object.fromEntries(Object.entries(counts).filter(([k]) => k.startsWith('authentic'))),
      { 'authentic 200 verified': COUNT },
      'every authentic delivery verified, none refused',
    );
    t.equal(grants, COUNT, 'exactly one trust grant per delivery');
    t.equal(counts['forged 401'], 120, 'the failure budget: 120 forged deliveries answered 401 …');
    t.equal(counts['forged 429'], COUNT / 5 - 120, '… and the rest 429');
    const sample = await service.store.listDevices(service.ids.id('user', 'volume-987'), clock());
    t.equal(sample.length, 1, 'a granted device is in the store');
  },
);
