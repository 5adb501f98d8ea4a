import type { Test } from 'tap';
import {
  CAPS,
  DEFAULT_RETENTION,
  UserRateLimited,
  type PendingContext,
  type Sighting,
  type StepUpSession,
  type Store,
  type TrustGrant,
} from '../../src/store/store.js';

const T0 = Date.parse('2026-11-25T12:00:00Z');
const HOUR = 3600_000;
const DAY = 24 * HOUR;

/** Every store implementation runs this same suite (memory, single Redis, Redis Cluster). */
export function storeContract(
  t: Test,
  name: string,
  makeStore: () => Promise<Store>,
  teardown: (store: Store) => Promise<void> = (s) => s.close(),
): void {
  let n = 0;
  const unique = (prefix: string) =>
    `${prefix}-${name}-${process.pid}-${++n}-${Math.random().toString(36).slice(2, 8)}`;
  const sighting = (user: string, over: Partial<Sighting> = {}): Sighting => ({
    user,
    device: 'dev-a',
    ip: 'ip-1',
    prefix: 'pfx-1',
    asn: 29518,
    country: 'SE',
    ...over,
  });
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
    t.match(first, {
      deviceKnown: false,
      deviceSeenCount: 0,
      ipKnown: false,
      prefixKnown: false,
      asnKnown: false,
      countryKnown: false,
      verifiedCount: 0,
      declines24h: 0,
      decides1h: 1,
      distinctIps1h: 1,
    });
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
    t.match(known, {
      deviceKnown: true,
      ipKnown: true,
      prefixKnown: true,
      asnKnown: true,
      countryKnown: true,
      verifiedCount: 1,
      deviceUa: { browser: 'Chrome', os: 'Windows' },
      lastVerifiedAt: T0,
    });
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
    await store.trust(
      grant(user, { grantedBy: 'sess-2', device: 'dev-b', ip: 'ip-2', prefix: 'pfx-2', asn: 7922, country: 'US' }),
      T0,
    );
    await store.revokeGrant(user, 'sess-1', T0 + 1);
    const a = await store.observe(sighting(user), T0 + 2);
    t.match(a, { deviceKnown: false, ipKnown: false, prefixKnown: false, verifiedCount: 1 });
    const b = await store.observe(
      sighting(user, { device: 'dev-b', ip: 'ip-2', prefix: 'pfx-2', asn: 7922, country: 'US' }),
      T0 + 3,
    );
    t.match(b, { deviceKnown: true, ipKnown: true, prefixKnown: true, asnKnown: true, countryKnown: true });
  });

  withStore('peek reads the same history and records nothing', async (t, store) => {
    const user = unique('u');
    await store.trust(grant(user), T0);
    await store.observe(sighting(user), T0 + 1000);
    await store.recordDecline(user, T0 + 2000);
    const peeked = await store.peek(sighting(user), T0 + 3000);
    t.match(peeked, {
      deviceKnown: true,
      ipKnown: true,
      deviceSeenCount: 1,
      decides1h: 1,
      distinctIps1h: 1,
      declines24h: 1,
      verifiedCount: 1,
    });
    const again = await store.peek(sighting(user), T0 + 4000);
    t.equal(again.deviceSeenCount, 1, 'peeking twice counted nothing');
    t.equal(again.decides1h, 1);
    t.match(await store.peek(sighting(unique('nobody')), T0), {
      deviceKnown: false,
      deviceSeenCount: 0,
      verifiedCount: 0,
    });
  });

  withStore(
    'the per-user limit is spent inside observe: over it, UserRateLimited and nothing recorded',
    async (t, store) => {
      const user = unique('u');
      const limit = { perMinute: 3 };
      for (let i = 0; i < 3; i++) await store.observe(sighting(user), T0 + i * 1000, limit);
      const refused = await store.observe(sighting(user), T0 + 10_000, limit).then(
        () => undefined,
        (error: unknown) => error,
      );
      t.ok(refused instanceof UserRateLimited, 'the fourth decide in the minute is refused');
      t.ok(
        (refused as UserRateLimited).retryAfterMs > 0 && (refused as UserRateLimited).retryAfterMs <= 60_000,
        'with the time left in the window',
      );
      t.equal(
        (await store.peek(sighting(user), T0 + 11_000)).decides1h,
        3,
        'the refused decide left no trace in the history',
      );
      t.equal((await store.observe(sighting(user), T0 + 61_000, limit)).decides1h, 4, 'a new window allows again');
      t.equal((await store.observe(sighting(unique('u')), T0 + 10_000, limit)).decides1h, 1, 'per user');
    },
  );

  withStore('declines count for 24 hours', async (t, store) => {
    const user = unique('u');
    await store.recordDecline(user, T0);
    await store.recordDecline(user, T0 + HOUR);
    t.equal((await store.observe(sighting(user), T0 + 2 * HOUR)).declines24h, 2);
    t.equal((await store.observe(sighting(user), T0 + DAY + HOUR / 2)).declines24h, 1);
  });

  withStore('declines are told apart by device: this device and the rest of the user', async (t, store) => {
    const user = unique('u');
    for (const device of ['x-1', 'x-2', 'x-3', 'x-4']) await store.recordDecline(user, T0, device);
    await store.recordDecline(user, T0 + 1000, 'dev-a');
    const trusted = await store.observe(sighting(user), T0 + HOUR);
    t.match(trusted, { declines24h: 5, deviceDeclines24h: 1 }, 'dev-a sees its own decline and four elsewhere');
    t.match(await store.peek(sighting(user, { device: 'x-1' }), T0 + HOUR), { declines24h: 5, deviceDeclines24h: 1 });
    t.match(await store.peek(sighting(user, { device: 'fresh' }), T0 + HOUR), { declines24h: 5, deviceDeclines24h: 0 });
    t.match(
      await store.observe(sighting(user), T0 + DAY + 500),
      { declines24h: 1, deviceDeclines24h: 1 },
      'the window is 24 hours for both',
    );
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

  withStore('releaseClaim with an owner gives back only the claim that owner holds', async (t, store) => {
    const key = unique('claim');
    t.equal(await store.claimOnce(key, HOUR, T0, 'delivery-a'), true);
    await store.releaseClaim(key, 'delivery-b');
    t.equal(
      await store.claimOnce(key, HOUR, T0, 'delivery-c'),
      false,
      "another delivery's release leaves the claim held",
    );
    await store.releaseClaim(key, 'delivery-a');
    t.equal(await store.claimOnce(key, HOUR, T0, 'delivery-c'), true, "the owner's release frees it for the retry");
  });

  withStore('pending sessions are found for reuse and ordered by event time', async (t, store) => {
    const user = unique('u');
    const ctx = (over: Partial<PendingContext> = {}): PendingContext => ({
      user,
      device: 'dev-a',
      prefix: 'pfx-1',
      method: 'PASSIVE',
      purposeClass: 'normal',
      ...over,
    });
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
      purposeClass: 'normal',
    };
    await store.recordPending(session, T0);
    t.match(await store.findPending(ctx(), T0 + 1000), { sessionId: session.sessionId, grant: { country: 'SE' } });
    t.equal(await store.findPending(ctx({ method: 'ACTIVE_3D' }), T0 + 1000), undefined, 'no reuse across methods');
    t.equal(await store.findPending(ctx({ device: 'dev-b' }), T0 + 1000), undefined, 'no reuse across devices');
    t.equal(await store.findPending(ctx({ prefix: 'pfx-2' }), T0 + 1000), undefined, 'no reuse across networks');
    t.equal(
      await store.findPending(ctx({ purposeClass: 'sensitive' }), T0 + 1000),
      undefined,
      'no reuse across purpose classes',
    );
    t.equal(await store.findPending(ctx(), T0 + 11 * 60_000), undefined, 'an expired pending session is not reused');
    const approved = await store.updateSession(
      session.sessionId,
      { status: 'approved', diditStatus: 'Approved', eventTs: 200 },
      T0 + 2000,
    );
    t.equal(approved?.status, 'approved');
    const stale = await store.updateSession(
      session.sessionId,
      { status: 'pending', diditStatus: 'In Progress', eventTs: 100 },
      T0 + 3000,
    );
    t.equal(stale?.status, 'approved', 'an older event does not overwrite a newer one');
    t.equal((await store.getSession(session.sessionId, T0 + 4000))?.diditStatus, 'Approved');
    t.equal(await store.findPending(ctx(), T0 + 4000), undefined, 'a finished session is not reused');
    t.equal(
      await store.updateSession(unique('missing'), { status: 'approved', diditStatus: 'Approved', eventTs: 1 }, T0),
      undefined,
    );
  });

  withStore(
    'verdicts apply in signed-timestamp order, a tie to the more cautious status: every ordering',
    async (t, store) => {
      type Change = { status: StepUpSession['status']; diditStatus: string; eventTs: number };
      const permutations = <T>(items: readonly T[]): T[][] =>
        items.length <= 1
          ? [items.slice()]
          : items.flatMap((item, i) =>
              permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]),
            );
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
        {
          events: [
            { status: 'in_review', diditStatus: 'In Review', eventTs: 100 },
            { status: 'approved', diditStatus: 'Approved', eventTs: 400 },
          ],
          final: { status: 'approved', eventTs: 400 },
        },
        // In Progress and Approved of the same second: progress never outranks a verdict.
        {
          events: [
            { status: 'pending', diditStatus: 'In Progress', eventTs: 500 },
            { status: 'approved', diditStatus: 'Approved', eventTs: 500 },
          ],
          final: { status: 'approved', eventTs: 500 },
        },
      ];
      let orderings = 0;
      for (const { events, final } of sets) {
        for (const order of permutations(events)) {
          const user = unique('u');
          const session: StepUpSession = {
            sessionId: unique('s'),
            user,
            device: 'dev-a',
            method: 'PASSIVE',
            workflowId: 'wf',
            url: 'u',
            createdAt: T0,
            expiresAt: T0 + 600_000,
            status: 'pending',
            diditStatus: 'Not Started',
            updatedAt: T0,
            lastEventTs: 0,
            grant: { user, device: 'dev-a', ip: 'ip-1', prefix: 'pfx-1' },
          };
          await store.recordPending(session, T0);
          for (const change of order) {
            const stored = await store.updateSession(session.sessionId, change, T0 + 1000);
            t.ok(
              stored && stored.lastEventTs >= change.eventTs,
              'the stored event is never older than one just offered',
            );
          }
          const last = await store.getSession(session.sessionId, T0 + 2000);
          t.match(
            last,
            { status: final.status, lastEventTs: final.eventTs },
            order.map((c) => `${c.diditStatus}@${c.eventTs}`).join(' → '),
          );
          orderings++;
        }
      }
      t.equal(orderings, 120 + 6 + 2 + 2, 'every ordering of each set ran');
    },
  );

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

  withStore('a session re-bound to another context is found only for the new one', async (t, store) => {
    const user = unique('u');
    const base: StepUpSession = {
      sessionId: unique('s'),
      user,
      device: 'dev-a',
      method: 'PASSIVE',
      workflowId: 'wf',
      url: 'sealed',
      createdAt: T0,
      expiresAt: T0 + 10 * 60_000,
      status: 'pending',
      diditStatus: 'Not Started',
      updatedAt: T0,
      lastEventTs: 0,
      grant: { user, device: 'dev-a', ip: 'ip-1', prefix: 'pfx-1' },
      purposeClass: 'normal',
    };
    t.equal(await store.recordPending(base, T0), true);
    const rival = { ...base, device: 'dev-b', grant: { ...base.grant, device: 'dev-b' } };
    t.equal(
      await store.recordPending({ ...rival, createdAt: T0 + 1000, updatedAt: T0 + 1000 }, T0 + 1000),
      false,
      'a live binding of another context is not taken over',
    );
    t.equal(
      await store.recordPending({ ...base, grant: { ...base.grant, prefix: 'pfx-2' } }, T0 + 1000),
      false,
      'nor by another network of the same device',
    );
    t.equal(
      await store.recordPending({ ...base, purposeClass: 'sensitive' }, T0 + 1000),
      false,
      'nor by another purpose class',
    );
    t.equal((await store.getSession(base.sessionId, T0 + 2000))?.device, 'dev-a');
    t.equal(
      await store.recordPending({ ...base, createdAt: T0 + 2000, expiresAt: T0 + 2000 + 10 * 60_000 }, T0 + 2000),
      true,
      'the same context hands it out again',
    );
    const later = T0 + 30 * 60_000;
    t.equal(
      await store.recordPending(
        { ...rival, createdAt: later, expiresAt: later + 10 * 60_000, updatedAt: later, rebound: true },
        later,
      ),
      true,
      'a lapsed binding can be re-bound',
    );
    const ctx = { user, prefix: 'pfx-1', method: 'PASSIVE' as const, purposeClass: 'normal' };
    t.equal((await store.findPending({ ...ctx, device: 'dev-b' }, later + 1000))?.device, 'dev-b');
    t.equal(
      (await store.findPending({ ...ctx, device: 'dev-b' }, later + 1000))?.rebound,
      true,
      'the re-bound mark is kept with the record',
    );
    await store.updateSession(
      base.sessionId,
      { status: 'pending', diditStatus: 'In Progress', eventTs: 5 },
      later + 2000,
    );
    t.equal(
      (await store.getSession(base.sessionId, later + 2000))?.rebound,
      true,
      'and survives a status update (the webhook reads it there)',
    );
    t.equal(
      await store.findPending({ ...ctx, device: 'dev-a' }, later + 1000),
      undefined,
      'the old context no longer finds it, even if its index entry is still there',
    );
  });

  withStore('session opens are counted per device and per user in a window', async (t, store) => {
    const user = unique('u');
    t.same(await store.countSessionOpen(user, 'dev-a', 15 * 60_000, T0), { device: 1, user: 1 });
    t.same(await store.countSessionOpen(user, 'dev-a', 15 * 60_000, T0 + 1000), { device: 2, user: 2 });
    t.same(await store.countSessionOpen(user, 'dev-b', 15 * 60_000, T0 + 2000), { device: 1, user: 3 });
    t.same(await store.countSessionOpen(user, 'dev-a', 15 * 60_000, T0 + 16 * 60_000), { device: 1, user: 1 });
  });

  withStore('each key family keeps its own lifetime (caller clock)', async (t, store) => {
    const user = unique('u');
    // Default retention: trust 90 days, sightings 30 days, pending 10 minutes, session records 24 hours.
    t.equal(DEFAULT_RETENTION.trustMs, 90 * DAY);
    t.equal(DEFAULT_RETENTION.historyMs, 30 * DAY);
    await store.observe(sighting(user), T0);
    await store.trust(grant(user, { ttlMs: DEFAULT_RETENTION.trustMs }), T0);
    const day31 = await store.peek(sighting(user), T0 + 31 * DAY);
    t.match(
      day31,
      { deviceKnown: true, ipKnown: true, prefixKnown: true, verifiedCount: 1, lastVerifiedAt: T0 },
      'trust outlives 30 days without a sign-in',
    );
    t.ok(day31.lastPlace, 'so does the last verified place');
    t.equal(day31.deviceSeenCount, 0, 'the sighting lapsed after HISTORY_TTL');
    t.equal(day31.deviceFirstSeenAt, undefined);
    t.same(
      (await store.listDevices(user, T0 + 31 * DAY)).map((d) => d.device),
      ['dev-a'],
      'the device list agrees with the decisions',
    );
    const resighted = await store.observe(sighting(user), T0 + 31 * DAY);
    t.match(resighted, { deviceKnown: true, deviceSeenCount: 0 });
    t.equal(
      (await store.peek(sighting(user), T0 + 31 * DAY + 1000)).deviceFirstSeenAt,
      T0 + 31 * DAY,
      'a lapsed sighting starts over',
    );
    const day91 = await store.peek(sighting(user), T0 + 91 * DAY);
    t.match(
      day91,
      {
        deviceKnown: false,
        ipKnown: false,
        prefixKnown: false,
        verifiedCount: 0,
        lastVerifiedAt: undefined,
        lastPlace: undefined,
      },
      'trust lapses after TRUST_TTL',
    );
    t.same(await store.listDevices(user, T0 + 91 * DAY), []);
    const seenRecently = unique('u');
    await store.observe(sighting(seenRecently), T0);
    await store.observe(sighting(seenRecently), T0 + 29 * DAY);
    t.equal(
      (await store.peek(sighting(seenRecently), T0 + 31 * DAY)).deviceSeenCount,
      2,
      'HISTORY_TTL counts from the last sighting',
    );

    const session: StepUpSession = {
      sessionId: unique('s'),
      user,
      device: 'dev-a',
      method: 'PASSIVE',
      workflowId: 'wf',
      url: 'sealed',
      createdAt: T0,
      expiresAt: T0 + DEFAULT_RETENTION.pendingMs,
      status: 'pending',
      diditStatus: 'Not Started',
      updatedAt: T0,
      lastEventTs: 0,
      grant: { user, device: 'dev-a', ip: 'ip-1', prefix: 'pfx-1' },
      purposeClass: 'normal',
    };
    const ctx: PendingContext = { user, device: 'dev-a', prefix: 'pfx-1', method: 'PASSIVE', purposeClass: 'normal' };
    await store.recordPending(session, T0);
    t.ok(await store.findPending(ctx, T0 + DEFAULT_RETENTION.pendingMs - 1), 'pending within its TTL');
    t.equal(await store.findPending(ctx, T0 + DEFAULT_RETENTION.pendingMs), undefined, 'not after it');
    t.ok(
      await store.getSession(session.sessionId, T0 + DEFAULT_RETENTION.claimMs - 1),
      'the session record outlives the pending window',
    );
    t.equal(
      await store.getSession(session.sessionId, T0 + DEFAULT_RETENTION.claimMs),
      undefined,
      'until its own lifetime ends',
    );
  });

  withStore('trusted devices can be listed and revoked one by one', async (t, store) => {
    const user = unique('u');
    await store.trust(grant(user), T0);
    await store.trust(grant(user, { device: 'dev-b', grantedBy: 'sess-2' }), T0 + 1000);
    const devices = await store.listDevices(user, T0 + 2000);
    t.same(devices.map((d) => d.device).sort(), ['dev-a', 'dev-b']);
    t.match(
      devices.find((d) => d.device === 'dev-a'),
      { firstVerifiedAt: T0, expiresAt: T0 + 90 * DAY },
    );
    t.equal(await store.revokeDevice(user, 'dev-a', T0 + 3000), true);
    t.equal(await store.revokeDevice(user, 'dev-a', T0 + 3000), false, 'revoking twice is a no-op');
    t.same(
      (await store.listDevices(user, T0 + 4000)).map((d) => d.device),
      ['dev-b'],
    );
    t.equal((await store.observe(sighting(user), T0 + 5000)).deviceKnown, false);
  });

  withStore('per-user sets are capped', async (t, store) => {
    const user = unique('u');
    for (let i = 0; i < CAPS.devices + 20; i++)
      await store.trust(
        grant(user, { device: `dev-${i}`, ip: `ip-${i}`, prefix: `pfx-${i}`, grantedBy: `s-${i}` }),
        T0 + i,
      );
    const devices = await store.listDevices(user, T0 + 10_000);
    t.ok(devices.length <= CAPS.devices, `${devices.length} devices kept`);
    t.ok(
      devices.some((d) => d.device === `dev-${CAPS.devices + 19}`),
      'the newest device is kept',
    );
  });

  withStore('erase removes every trace of a user and is idempotent', async (t, store) => {
    const user = unique('u');
    await store.trust(grant(user), T0);
    await store.recordDecline(user, T0);
    await store.observe(sighting(user), T0);
    await store.erase(user);
    await store.erase(user);
    t.same(await store.listDevices(user, T0 + 1), []);
    t.match(await store.observe(sighting(user), T0 + 2), {
      deviceKnown: false,
      deviceSeenCount: 0,
      declines24h: 0,
      verifiedCount: 0,
    });
  });

  // ID_HASH_KEY rotation. Pseudonyms here carry a key id in front, as real ones do ('p.' previous, 'c.' current).
  const rotation = () => {
    const id = unique('r');
    const pair = (name: string) => [`p.${name}-${id}`, `c.${name}-${id}`] as const;
    const [pUser, cUser] = pair('user');
    const dev1 = pair('dev1');
    const dev2 = pair('dev2');
    const ip = pair('ip');
    const net = pair('net');
    const travel = pair('net24');
    const at = (which: 0 | 1, device = dev1) => ({
      user: [pUser, cUser][which]!,
      device: device[which],
      ip: ip[which],
      prefix: net[which],
      asn: 29518,
      country: 'SE',
    });
    const grantAt = (which: 0 | 1, over: Partial<TrustGrant> = {}): TrustGrant => ({
      ...at(which),
      place: { lat: 58.4, lon: 15.6, accuracyKm: 76, travelNet: travel[which] },
      ua: { browser: 'Chrome', os: 'Windows' },
      grantedBy: `sess-${id}`,
      ttlMs: 90 * DAY,
      ...over,
    });
    const migration = (...renamed: Array<readonly [string, string]>) => ({
      from: pUser,
      to: cUser,
      renames: renamed.length ? renamed : [dev1, ip, net, travel],
    });
    return { pUser, cUser, dev1, dev2, ip, net, travel, at, grantAt, migration };
  };

  withStore(
    'rotation: migrate moves trust, sightings, declines, step-up opens and the place to the current pseudonyms',
    async (t, store) => {
      const r = rotation();
      await store.trust(r.grantAt(0), T0);
      await store.observe(r.at(0), T0 + 1000);
      await store.observe(r.at(0), T0 + 2000);
      await store.recordDecline(r.pUser, T0 + 3000, r.dev1[0]);
      await store.countSessionOpen(r.pUser, r.dev1[0], 15 * 60_000, T0 + 3000);
      t.equal(
        (await store.peek(r.at(1), T0 + 4000)).deviceKnown,
        false,
        'before the migration nothing is under the current pseudonyms',
      );
      await store.migrate(r.migration(), T0 + 4000);
      const h = await store.observe(r.at(1), T0 + 5000);
      t.match(h, {
        deviceKnown: true,
        ipKnown: true,
        prefixKnown: true,
        asnKnown: true,
        countryKnown: true,
        verifiedCount: 1,
        deviceSeenCount: 2,
        deviceFirstSeenAt: T0,
        declines24h: 1,
        deviceDeclines24h: 1,
        decides1h: 3,
        distinctIps1h: 1,
        lastVerifiedAt: T0,
        deviceUa: { browser: 'Chrome', os: 'Windows' },
      });
      t.equal(h.lastPlace?.travelNet, r.travel[1], 'the place names the current network pseudonym');
      t.same(
        (await store.listDevices(r.cUser, T0 + 5000)).map((d) => d.device),
        [r.dev1[1]],
      );
      t.same(
        await store.countSessionOpen(r.cUser, r.dev1[1], 15 * 60_000, T0 + 6000),
        { device: 2, user: 2 },
        'the step-up lockout counts the opens from before',
      );
      t.match(
        await store.peek(r.at(0), T0 + 6000),
        { deviceKnown: false, verifiedCount: 0, deviceSeenCount: 0, declines24h: 0, decides1h: 0 },
        'nothing is left under the previous pseudonym',
      );
      t.same(await store.listDevices(r.pUser, T0 + 6000), []);
      // The grant keeps its session: revoking that session still undoes it.
      await store.revokeGrant(r.cUser, r.grantAt(1).grantedBy, T0 + 7000);
      t.match(
        await store.peek(r.at(1), T0 + 7000),
        { deviceKnown: false, ipKnown: false, prefixKnown: false },
        'the migrated grant is still revocable by its session',
      );
    },
  );

  withStore(
    'rotation: a device the request does not know keeps its previous pseudonym until its own touch',
    async (t, store) => {
      const r = rotation();
      await store.trust(r.grantAt(0), T0);
      await store.trust(r.grantAt(0, { device: r.dev2[0], grantedBy: 'other' }), T0 + 1);
      await store.migrate(r.migration(), T0 + 1000);
      t.same(
        (await store.listDevices(r.cUser, T0 + 1000)).map((d) => d.device).sort(),
        [r.dev1[1], r.dev2[0]].sort(),
        'the other device is listed under its previous pseudonym',
      );
      t.match(
        await store.peek(r.at(1, r.dev2), T0 + 1000),
        { deviceKnown: false, verifiedCount: 2 },
        'not yet found under its current one',
      );
      await store.migrate(r.migration(r.dev2, r.ip, r.net), T0 + 2000);
      t.match(
        await store.observe(r.at(1, r.dev2), T0 + 2000),
        { deviceKnown: true, verifiedCount: 2 },
        'renamed on its own touch',
      );
      t.same((await store.listDevices(r.cUser, T0 + 2000)).map((d) => d.device).sort(), [r.dev1[1], r.dev2[1]].sort());
    },
  );

  withStore(
    'rotation: a merge never replaces a newer entry, repeats add nothing, and later writes under the previous pseudonym follow',
    async (t, store) => {
      const r = rotation();
      await store.trust(r.grantAt(0, { grantedBy: 'old-session' }), T0);
      await store.observe(r.at(0), T0 + 1000);
      // Meanwhile a replica with the current key granted the same device anew.
      await store.trust(r.grantAt(1, { grantedBy: 'new-session' }), T0 + HOUR);
      await store.observe(r.at(1), T0 + HOUR + 1);
      await store.migrate(r.migration(), T0 + HOUR + 2);
      await store.migrate(r.migration(), T0 + HOUR + 3);
      t.match(
        await store.listDevices(r.cUser, T0 + HOUR + 4),
        [{ device: r.dev1[1], firstVerifiedAt: T0 + HOUR }],
        'the newer grant won',
      );
      const h = await store.peek(r.at(1), T0 + HOUR + 4);
      t.equal(h.decides1h, 2, 'each decide of the hour counted once, under either pseudonym, though migrated twice');
      t.equal(h.deviceSeenCount, 1, 'sightings merge by the larger count: a repeated migration adds none');
      await store.revokeGrant(r.cUser, 'old-session', T0 + HOUR + 5);
      t.equal(
        (await store.peek(r.at(1), T0 + HOUR + 5)).deviceKnown,
        true,
        'revoking the older session does not undo the newer grant',
      );
      // A webhook for a session opened before the rotation grants under the previous pseudonym: the next touch moves it.
      await store.trust(r.grantAt(0, { device: r.dev2[0], grantedBy: 'late' }), T0 + HOUR + 6);
      await store.migrate(r.migration(r.dev2, r.ip, r.net), T0 + HOUR + 7);
      t.match(await store.peek(r.at(1, r.dev2), T0 + HOUR + 7), { deviceKnown: true, verifiedCount: 2 });
      await store.migrate({ from: `p.nobody-${r.cUser}`, to: `c.nobody-${r.cUser}`, renames: [] }, T0 + HOUR + 8);
      t.same(
        await store.listDevices(`c.nobody-${r.cUser}`, T0 + HOUR + 8),
        [],
        'a user without state stays without state',
      );
    },
  );

  withStore('rotation: concurrent migrations and grants under both pseudonyms lose no grant', async (t, store) => {
    const users = Array.from({ length: 40 }, () => rotation());
    await Promise.all(users.map((r) => store.trust(r.grantAt(0, { grantedBy: 'before' }), T0)));
    // Two replicas migrate at once; a grant under the previous pseudonym lands while they do (on a
    // Cluster between a copy and its removal), and one under the current pseudonym too.
    await Promise.all(
      users.flatMap((r) => [
        store.migrate(r.migration(), T0 + 10),
        store.migrate(r.migration(), T0 + 11),
        store.trust(r.grantAt(0, { device: r.dev2[0], grantedBy: 'late-previous' }), T0 + 12),
        store.trust(r.grantAt(1, { grantedBy: 'current' }), T0 + 13),
        store.observe(r.at(0), T0 + 14),
      ]),
    );
    let lost = 0;
    for (const r of users) {
      await store.migrate(r.migration(r.dev2, r.ip, r.net), T0 + 20);
      await store.migrate(r.migration(), T0 + 21);
      const one = await store.peek(r.at(1), T0 + 22);
      const two = await store.peek(r.at(1, r.dev2), T0 + 22);
      if (!one.deviceKnown || !two.deviceKnown || one.verifiedCount !== 2) lost += 1;
    }
    t.equal(lost, 0, `every user of ${users.length} keeps both trusted devices`);
  });
}
