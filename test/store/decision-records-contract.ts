import type { Test } from 'tap';
import { encodeRecord, type DecisionRecord, type DecisionRecords } from '../../src/store/decision-records.js';

const T0 = Date.parse('2026-11-25T12:00:00Z');
const TTL = 90 * 86_400_000;

/** Both decision-record stores (memory, Redis) run this suite; the records are built with `ttlMs` 90 days. */
export function decisionRecordsContract(t: Test, name: string, make: () => Promise<DecisionRecords>): void {
  let n = 0;
  const unique = (p: string) => `${p}-${name}-${process.pid}-${++n}-${Math.random().toString(36).slice(2, 8)}`;
  const record = (over: Partial<DecisionRecord> = {}): DecisionRecord => ({
    id: unique('d'),
    at: T0,
    user: 'u',
    device: 'dev',
    action: 'PASSIVE',
    score: 25,
    rules: ['new-device'],
    shadow: [],
    ruleset: 'h',
    degraded: [],
    purpose: 'login',
    // Empty arrays and objects, nested: what a re-encoding script would mangle.
    signals: { 'device.known': false, 'request.attributes': {}, list: [] },
    stepUp: { session: unique('s'), method: 'PASSIVE', expiresAt: T0 + 600_000 },
    ...over,
  });

  t.test(`${name}: a record reads back exactly, and not past its retention`, async (t) => {
    const records = await make();
    const r = record();
    await records.put(r, T0);
    t.same((await records.get(r.id, T0))?.record, r);
    t.equal(await records.decisionOf(r.stepUp!.session), r.id);
    t.equal(await records.get(r.id, T0 + TTL), undefined);
    t.equal(
      await records.label(r.id, { label: 'fraud', source: 's', by: 'b', at: T0 + TTL }, T0 + TTL),
      undefined,
      'an expired decision takes no label',
    );
    t.equal(await records.get('nope', T0), undefined);
  });

  t.test(`${name}: an outcome is claimed once; in_review before a final one; nothing after it`, async (t) => {
    const records = await make();
    const r = record();
    const s = r.stepUp!.session;
    await records.put(r, T0);
    t.equal(await records.settle(r.id, 'other-session', 'approved', T0), undefined, 'another session claims nothing');
    t.ok(await records.settle(r.id, s, 'in_review', T0));
    t.equal(await records.settle(r.id, s, 'in_review', T0), undefined, 'in_review once');
    t.equal(
      await records.settle(r.id, s, 'abandoned', T0 + 700_000, true),
      undefined,
      'a lapse does not take a step-up in review',
    );
    t.same(await records.settle(r.id, s, 'declined', T0), r);
    t.equal(await records.settle(r.id, s, 'approved', T0), undefined, 'a final outcome is final');
    t.match(await records.get(r.id, T0), { outcome: { outcome: 'declined' } });
    t.notOk(
      (await records.lapsed(T0 + TTL - 1, 1000)).some((d) => d.id === r.id),
      'a settled step-up is no longer open',
    );
  });

  t.test(
    `${name}: lapsed lists open step-ups due by their window; a record without a step-up is never open`,
    async (t) => {
      const records = await make();
      const early = record({ stepUp: { session: unique('s'), method: 'FLASHING', expiresAt: T0 + 1000 } });
      const late = record({ stepUp: { session: unique('s'), method: 'PASSIVE', expiresAt: T0 + 5000 } });
      const none = record({ action: 'SKIP' });
      delete (none as { stepUp?: unknown }).stepUp;
      for (const r of [early, late, none]) await records.put(r, T0);
      const due = (await records.lapsed(T0 + 1000, 100)).map((d) => d.id);
      t.ok(
        due.includes(early.id) && !due.includes(late.id) && !due.includes(none.id),
        'only the one whose window ended',
      );
      t.ok(await records.settle(early.id, early.stepUp!.session, 'abandoned', T0 + 1000, true));
      t.notOk((await records.lapsed(T0 + 1000, 100)).some((d) => d.id === early.id));
    },
  );

  t.test(`${name}: a session handed to a later decision supersedes the earlier one`, async (t) => {
    const records = await make();
    const first = record();
    const second = record({ at: T0 + 1000, stepUp: { ...first.stepUp!, expiresAt: T0 + 601_000 } });
    await records.put(first, T0);
    await records.put(second, T0 + 1000);
    t.equal(await records.decisionOf(first.stepUp!.session), second.id);
    t.match(await records.get(first.id, T0 + 1000), { outcome: { outcome: 'superseded' } });
    t.notOk(
      (await records.lapsed(T0 + 700_000, 100)).some((d) => d.id === first.id),
      'the superseded one never lapses',
    );
  });

  t.test(`${name}: a batch spread over every shard reads back, in order, superseding within itself`, async (t) => {
    const records = await make();
    // 40 records land on all 8 shards; the last two hand out one session, so the later supersedes.
    const batch: DecisionRecord[] = Array.from({ length: 40 }, (_, i) => {
      const { stepUp, ...plain } = record({ at: T0 + i });
      return i % 3 === 0 ? { ...plain, stepUp: stepUp! } : plain;
    });
    const shared = record({ at: T0 + 40 });
    const later = record({ at: T0 + 41, stepUp: { ...shared.stepUp!, expiresAt: T0 + 601_041 } });
    batch.push(shared, later);
    await records.putMany(batch.map(encodeRecord), T0 + 41);
    const back = await Promise.all(batch.map((r) => records.get(r.id, T0 + 41)));
    t.same(
      back.map((b) => b?.record),
      batch,
      'every record reads back exactly',
    );
    t.equal(await records.decisionOf(shared.stepUp!.session), later.id, 'the later hand-out holds the session');
    t.match(await records.get(shared.id, T0 + 41), { outcome: { outcome: 'superseded' } });
    const open = (await records.lapsed(T0 + 700_000, 1000)).map((d) => d.id);
    const expected = batch.filter((r) => r.stepUp && r.id !== shared.id).map((r) => r.id);
    t.same(open.filter((id) => expected.includes(id)).sort(), [...expected].sort(), 'every opened step-up is indexed');
    t.notOk(open.includes(shared.id), 'the superseded one is not');
  });

  t.test(`${name}: a label replaces the previous one and returns it`, async (t) => {
    const records = await make();
    const r = record();
    await records.put(r, T0);
    const first = await records.label(r.id, { label: 'fraud', source: 'user_report', by: 'a', at: T0 }, T0);
    t.same(first, { record: r });
    const second = await records.label(
      r.id,
      { label: 'legitimate', source: 'support', note: 'cleared', by: 'b', at: T0 + 1 },
      T0 + 1,
    );
    t.match(second, { previous: { label: 'fraud', by: 'a' }, record: r });
    t.match(await records.get(r.id, T0 + 1), { label: { label: 'legitimate', note: 'cleared', by: 'b' } });
  });

  t.test(`${name}: list reads the records since a time, oldest first`, async (t) => {
    const records = await make();
    const base = T0 + 10 * 86_400_000 + n * 1000;
    const rs = [record({ at: base + 2 }), record({ at: base }), record({ at: base + 1 })];
    for (const r of rs) await records.put(r, base + 2);
    const listed = (await records.list(base, base + 2)).map((d) => d.record.at);
    t.same(listed, [base, base + 1, base + 2]);
    t.same(
      (await records.list(base + 1, base + 2)).map((d) => d.record.at),
      [base + 1, base + 2],
    );
  });
}
