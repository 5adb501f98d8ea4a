import type { Test } from 'tap';
import { CAPS, UserRateLimited, type Sighting, type StepUpSession, type Store, type TrustGrant } from '../../src/store/store.js';

const T0 = Date.parse('2026-11-25T12:00:00Z');
const HOUR = 3600_000;
const DAY = 24 * HOUR;

/** Every store implementation runs this same suite (memory, single Redis, Redis Cluster). */
export function storeContract(t: Test, name: string, makeStore: () => Promise<Store>, teardown: (store: Store) => Promise<void> = (s) => s.close()): void {
  let n = 0;
  const unique = (prefix: string) => `${prefix}-${name}-${process.pid}-${++n}-${Math.random().toString(36).slice(2, 8)}`;
  const sighting = (user: string, over: Partial<Sighting> = {}): Sighting => ({ user, device: 'dev-a', ip: 'ip-1', prefix: 'pfx-1', asn: 29518, country: 'SE', ...over });
  const grant = (user: string, over: Partial<TrustGrant> = {}): TrustGrant => ({
    user,
    device: 'dev-a',
    ip: 'ip-1',
    prefix: 'pfx-1',
    asn: 29518,
    country: 'SE',
    place: { lat: 58.4, lon: 15.6, accuracyKm: 76, travelNet: 'net24-1' },
    ua: { browser: 'Chrome', os: 'Windows' },
    grantedBy: 'sess-1',
    ttlMs: 90 * DAY,
    ...over,
  });

  const withStore = (title: string, fn: (t: Test, store: Store) => Promise<void>) =>
    t.test(`${name}: ${title}`, async (t) => {
      const store = await makeStore();
      try {
        await fn(t, store);
      } finally {
        await teardown(store);
      }
    });

  withStore('a new user knows nothing and the sighting is counted', async (t, store) => {
    const user = unique('u');
    const first = await store.observe(sighting(user), T0);
    t.match(first, { deviceKnown: false, deviceSeenCount: 0, ipKnown: false, prefixKnown: false, asnKnown: false, countryKnown: false, verifiedCount: 0, declines24h: 0, decides1h: 1, distinctIps1h: 1 });
    const second = await store.observe(sighting(user, { prefix: 'pfx-2', ip: 'ip-2' }), T0 + 1000);
    t.equal(second.deviceSeenCount, 1, 'seen is counted, never mistaken for verified');
    t.equal(second.deviceKnown, false);
    t.equal(second.decides1h, 2);
    t.equal(second.distinctIps1h, 2);
    t.equal(second.deviceFirstSeenAt, T0);
  });

  withStore('trust makes the device and network known until its TTL passes', async (t, store) => {
    const user = unique('u');
    await store.trust(grant(user, { ttlMs: DAY }), T0);
    const known = await store.observe(sighting(user), T0 + HOUR);
    t.match(known, { deviceKnown: true, ipKnown: true, prefixKnown: true, asnKnown: true, countryKnown: true, verifiedCount: 1, deviceUa: { browser: 'Chrome', os: 'Windows' }, lastVerifiedAt: T0 });
    t.match(known.lastPlace, { lat: 58.4, lon: 15.6, accuracyKm: 76, travelNet: 'net24-1', at: T0 });
    const otherDevice = await store.observe(sighting(user, { device: 'dev-b' }), T0 + HOUR);
    t.equal(otherDevice.deviceKnown, false, 'trust is per device');
    t.equal(otherDevice.ipKnown, true, 'the network stays known for the user');
    const otherUser = await store.observe(sighting(unique('u')), T0 + HOUR);
    t.equal(otherUser.deviceKnown, false, 'trust is per user');
    const expired = await store.observe(sighting(user), T0 + DAY + 1);
    t.match(expired, { deviceKnown: false, ipKnown: false, verifiedCount: 0 });
  });

  withStore('revoking a grant removes exactly what it trusted', async (t, store) => {
    const user = unique('u');
    await store.trust(grant(user, { grantedBy: 'sess-1' }), T0);
    await store.trust(grant(user, { grantedBy: 'sess-2', device: 'dev-b', ip: 'ip-2', prefix: 'pfx-2', asn: 7922, country: 'US' }), T0);
    await store.revokeGrant(user, 'sess-1', T0 + 1);
    const a = await store.observe(sighting(user), T0 + 2);
    t.match(a, { deviceKnown: false, ipKnown: false, prefixKnown: false, verifiedCount: 1 });
    const b = await store.observe(sighting(user, { device: 'dev-b', ip: 'ip-2', prefix: 'pfx-2', asn: 7922, country: 'US' }), T0 + 3);
    t.match(b, { deviceKnown: true, ipKnown: true, prefixKnown: true, asnKnown: true, countryKnown: true });
  });

  withStore('peek reads the same history and records nothing', async (t, store) => {
    const user = unique('u');
    await store.trust(grant(user), T0);
    await store.observe(sighting(user), T0 + 1000);
    await store.recordDecline(user, T0 + 2000);
    const peeked = await store.peek(sighting(user), T0 + 3000);
    t.match(peeked, { deviceKnown: true, ipKnown: true, deviceSeenCount: 1, decides1h: 1, distinctIps1h: 1, declines24h: 1, verifiedCount: 1 });
    const again = await store.peek(sighting(user), T0 + 4000);
    t.equal(again.deviceSeenCount, 1, 'peeking twice counted nothing');
    t.equal(again.decides1h, 1);
    t.match(await store.peek(sighting(unique('nobody')), T0), { deviceKnown: false, deviceSeenCount: 0, verifiedCount: 0 });
  });

  withStore('the per-user limit is spent inside observe: over it, UserRateLimited and nothing recorded', async (t, store) => {
    const user = unique('u');
    const limit = { perMinute: 3 };
    for (let i = 0; i < 3; i++) await store.observe(sighting(user), T0 + i * 1000, limit);
    const refused = await store.observe(sighting(user), T0 + 10_000, limit).then(
      () => undefined,
      (error: unknown) => error,
    );
    t.ok(refused instanceof UserRateLimited, 'the fourth decide in the minute is refused');
    t.ok((refused as UserRateLimited).retryAfterMs > 0 && (refused as UserRateLimited).retryAfterMs <= 60_000, 'with the time left in the window');
    t.equal((await store.peek(sighting(user), T0 + 11_000)).decides1h, 3, 'the refused decide left no trace in the history');
    t.equal((await store.observe(sighting(user), T0 + 61_000, limit)).decides1h, 4, 'a new window allows again');
    t.equal((await store.observe(sighting(unique('u')), T0 + 10_000, limit)).decides1h, 1, 'per user');
  });

  withStore('declines count for 24 hours', async (t, store) => {
    const user = unique('u');
    await store.recordDecline(user, T0);
    await store.recordDecline(user, T0 + HOUR);
    t.equal((await store.observe(sighting(user), T0 + 2 * HOUR)).declines24h, 2);
    t.equal((await store.observe(sighting(user), T0 + DAY + HOUR / 2)).declines24h, 1);
  });

  withStore('hourly velocity forgets what is older than an hour', async (t, store) => {
    const user = unique('u');
    for (let i = 0; i < 5; i++) await store.observe(sighting(user, { prefix: `pfx-${i}` }), T0 + i * 1000);
    const later = await store.observe(sighting(user), T0 + HOUR + 10_000);
    t.equal(later.decides1h, 1);
    t.equal(later.distinctIps1h, 1);
  });

  withStore('claimOnce is true exactly once within its TTL, even concurrently', async (t, store) => {
    const key = unique('claim');
    const results = await Promise.all(Array.from({ length: 20 }, () => store.claimOnce(key, HOUR, T0)));
    t.equal(results.filter(Boolean).length, 1);
    t.equal(await store.claimOnce(key, HOUR, T0 + 1000), false);
  });

  withStore('pending sessions are found for reuse and ordered by event time', async (t, store) => {
    const user = unique('u');
    const session: StepUpSession = {
      sessionId: unique('s'),
      user,
      device: 'dev-a',
      method: 'PASSIVE',
      workflowId: 'wf-passive',
      url: 'http://127.0.0.1/session/x',
      createdAt: T0,
      expiresAt: T0 + 10 * 60_000,
      status: 'pending',
      diditStatus: 'Not Started',
      updatedAt: T0,
      lastEventTs: 0,
      grant: { user, device: 'dev-a', ip: 'ip-1', prefix: 'pfx-1', country: 'SE' },
    };
    await store.recordPending(session, T0);
    t.match(await store.findPending(user, 'dev-a', 'PASSIVE', T0 + 1000), { sessionId: session.sessionId, grant: { country: 'SE' } });
    t.equal(await store.findPending(user, 'dev-a', 'ACTIVE_3D', T0 + 1000), undefined, 'no reuse across methods');
    t.equal(await store.findPending(user, 'dev-b', 'PASSIVE', T0 + 1000), undefined, 'no reuse across devices');
    t.equal(await store.findPending(user, 'dev-a', 'PASSIVE', T0 + 11 * 60_000), undefined, 'an expired pending session is not reused');
    const approved = await store.updateSession(session.sessionId, { status: 'approved', diditStatus: 'Approved', eventTs: 200 }, T0 + 2000);
    t.equal(approved?.status, 'approved');
    const stale = await store.updateSession(session.sessionId, { status: 'pending', diditStatus: 'In Progress', eventTs: 100 }, T0 + 3000);
    t.equal(stale?.status, 'approved', 'an older event does not overwrite a newer one');
    t.equal((await store.getSession(session.sessionId, T0 + 4000))?.diditStatus, 'Approved');
    t.equal(await store.findPending(user, 'dev-a', 'PASSIVE', T0 + 4000), undefined, 'a finished session is not reused');
    t.equal(await store.updateSession(unique('missing'), { status: 'approved', diditStatus: 'Approved', eventTs: 1 }, T0), undefined);
  });

  withStore('verdicts apply in signed-timestamp order, a tie to the more cautious status: every ordering', async (t, store) => {
    type Change = { status: StepUpSession['status']; diditStatus: string; eventTs: number };
    const permutations = <T,>(items: readonly T[]): T[][] =>
      items.length <= 1 ? [items.slice()] : items.flatMap((item, i) => permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]));
    const sets: Array<{ events: Change[]; final: Pick<Change, 'status' | 'eventTs'> }> = [
      {
        // A reviewer's second Declined (t) after Declined (t-2) and Approved (t-1), plus an Approved and an In Review racing it.
        events: [
          { status: 'declined', diditStatus: 'Declined', eventTs: 100 },
          { status: 'approved', diditStatus: 'Approved', eventTs: 200 },
          { status: 'in_review', diditStatus: 'In Review', eventTs: 250 },
          { status: 'declined', diditStatus: 'Declined', eventTs: 300 },
          { status: 'approved', diditStatus: 'Approved', eventTs: 300 },
        ],
        final: { status: 'declined', eventTs: 300 },
      },
      {
        events: [
          { status: 'pending', diditStatus: 'In Progress', eventTs: 100 },
          { status: 'approved', diditStatus: 'Approved', eventTs: 300 },
          { status: 'in_review', diditStatus: 'In Review', eventTs: 300 },
        ],
        final: { status: 'in_review', eventTs: 300 },
      },
      { events: [{ status: 'in_review', diditStatus: 'In Review', eventTs: 100 }, { status: 'approved', diditStatus: 'Approved', eventTs: 400 }], final: { status: 'approved', eventTs: 400 } },
      // In Progress and Approved of the same second: progress never outranks a verdict.
      { events: [{ status: 'pending', diditStatus: 'In Progress', eventTs: 500 }, { status: 'approved', diditStatus: 'Approved', eventTs: 500 }], final: { status: 'approved', eventTs: 500 } },
    ];
    let orderings = 0;
    for (const { events, final } of sets) {
      for (const order of permutations(events)) {
        const user = unique('u');
        const session: StepUpSession = {
          sessionId: unique('s'), user, device: 'dev-a', method: 'PASSIVE', workflowId: 'wf', url: 'u', createdAt: T0, expiresAt: T0 + 600_000,
          status: 'pending', diditStatus: 'Not Started', updatedAt: T0, lastEventTs: 0, grant: { user, device: 'dev-a', ip: 'ip-1', prefix: 'pfx-1' },
        };
        await store.recordPending(session, T0);
        for (const change of order) {
          const stored = await store.updateSession(session.sessionId, change, T0 + 1000);
          t.ok(stored && stored.lastEventTs >= change.eventTs, 'the stored event is never older than one just offered');
        }
        const last = await store.getSession(session.sessionId, T0 + 2000);
        t.match(last, { status: final.status, lastEventTs: final.eventTs }, order.map((c) => `${c.diditStatus}@${c.eventTs}`).join(' → '));
        orderings++;
      }
    }
    t.equal(orderings, 120 + 6 + 2 + 2, 'every ordering of each set ran');
  });

  withStore('dead letters are kept once per id, listed until they expire, and removed', async (t, store) => {
    const a = { id: unique('dl'), at: T0, reason: 'unexpected_shape', sealed: 'k1.sealed-a' };
    const b = { id: unique('dl'), at: T0 + 1000, reason: 'hold', sealed: 'k1.sealed-b' };
    await store.putDeadLetter(a, 7 * DAY, T0);
    await store.putDeadLetter(a, 7 * DAY, T0 + 10);
    await store.putDeadLetter(b, HOUR, T0 + 1000);
    const mine = (list: Array<{ id: string }>) => list.filter((l) => l.id === a.id || l.id === b.id);
    t.same(mine(await store.listDeadLetters(T0 + 2000)), [a, b], 'oldest first, stored once');
    t.same(mine(await store.listDeadLetters(T0 + 1000 + HOUR + 1)), [a], 'a letter past its lifetime is gone');
    await store.removeDeadLetter(a.id);
    t.same(mine(await store.listDeadLetters(T0 + 2000)), [b]);
    t.same(mine(await store.listDeadLetters(T0 + 7 * DAY + 1)), [], 'seven days later nothing is left');
  });

  withStore('session opens are counted per user in a window', async (t, store) => {
    const user = unique('u');
    t.equal(await store.countSessionOpen(user, 15 * 60_000, T0), 1);
    t.equal(await store.countSessionOpen(user, 15 * 60_000, T0 + 1000), 2);
    t.equal(await store.countSessionOpen(user, 15 * 60_000, T0 + 16 * 60_000), 1);
  });

  withStore('trusted devices can be listed and revoked one by one', async (t, store) => {
    const user = unique('u');
    await store.trust(grant(user), T0);
    await store.trust(grant(user, { device: 'dev-b', grantedBy: 'sess-2' }), T0 + 1000);
    const devices = await store.listDevices(user, T0 + 2000);
    t.same(devices.map((d) => d.device).sort(), ['dev-a', 'dev-b']);
    t.match(devices.find((d) => d.device === 'dev-a'), { firstVerifiedAt: T0, expiresAt: T0 + 90 * DAY });
    t.equal(await store.revokeDevice(user, 'dev-a', T0 + 3000), true);
    t.equal(await store.revokeDevice(user, 'dev-a', T0 + 3000), false, 'revoking twice is a no-op');
    t.same((await store.listDevices(user, T0 + 4000)).map((d) => d.device), ['dev-b']);
    t.equal((await store.observe(sighting(user), T0 + 5000)).deviceKnown, false);
  });

  withStore('per-user sets are capped', async (t, store) => {
    const user = unique('u');
    for (let i = 0; i < CAPS.devices + 20; i++) await store.trust(grant(user, { device: `dev-${i}`, ip: `ip-${i}`, prefix: `pfx-${i}`, grantedBy: `s-${i}` }), T0 + i);
    const devices = await store.listDevices(user, T0 + 10_000);
    t.ok(devices.length <= CAPS.devices, `${devices.length} devices kept`);
    t.ok(devices.some((d) => d.device === `dev-${CAPS.devices + 19}`), 'the newest device is kept');
  });

  withStore('erase removes every trace of a user and is idempotent', async (t, store) => {
    const user = unique('u');
    await store.trust(grant(user), T0);
    await store.recordDecline(user, T0);
    await store.observe(sighting(user), T0);
    await store.erase(user);
    await store.erase(user);
    t.same(await store.listDevices(user, T0 + 1), []);
    t.match(await store.observe(sighting(user), T0 + 2), { deviceKnown: false, deviceSeenCount: 0, declines24h: 0, verifiedCount: 0 });
  });
}
