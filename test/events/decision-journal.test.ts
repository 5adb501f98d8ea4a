import { Writable } from 'node:stream';
import t, { type Test } from 'tap';
import { createDecisionJournal, type JournalFacts } from '../../src/events/decision-journal.js';
import { createLogger, decisionLines } from '../../src/logger.js';
import type { DecisionRecords, EncodedRecord } from '../../src/store/decision-records.js';

/** A log destination that keeps every write as it came, so a test can count the writes. */
function stream() {
  const writes: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      writes.push(chunk.toString('utf8'));
      done();
    },
  });
  return { writes, destination, lines: () => writes.join('').split('\n').filter(Boolean) };
}

/** Records that keep each batch they were given (or fail / hang when told to). */
function recordsSpy(mode: { fail?: boolean; hang?: boolean; lost?: number } = {}) {
  const batches: EncodedRecord[][] = [];
  const records = {
    kind: 'memory',
    async putMany(batch: readonly EncodedRecord[]) {
      batches.push([...batch]);
      if (mode.fail)
        throw Object.assign(new Error('store down'), mode.lost === undefined ? {} : { records: mode.lost });
      if (mode.hang) await new Promise(() => undefined);
    },
  } as unknown as DecisionRecords;
  return { records, batches };
}

const facts = (i: number, over: Partial<JournalFacts> = {}): JournalFacts => ({
  decisionId: `dec-${i}`,
  reqId: `req-${i}`,
  purpose: 'login',
  enriched: {
    user: `u-${i}`,
    device: `d-${i}`,
    // What a crafted agent or attribute may carry: quotes, newlines, a forged field, nested empties.
    signals: {
      'ua.browser': 'Chrome"\n{"msg":"decision","action":"SKIP"}',
      'request.attributes': { note: 'a\u2028b' },
      'device.known': i % 2 === 0,
      'ip.asn': 3301,
      list: [],
    },
  },
  decision: {
    action: 'PASSIVE',
    score: 40,
    reasons: [{ rule: 'new-device' }, { rule: 'floor:tor' }],
    shadow: [{ rule: 'candidate', action: 'ACTIVE_3D' }],
    ruleset: 'abc123',
    degraded: ['geoip'],
  },
  verification: 'created',
  seconds: 0.000_812_4,
  stepUp: { sessionId: `s-${i}`, method: 'PASSIVE' },
  ...over,
});

const journalWith = (
  records: DecisionRecords,
  level = 'info',
  over: { maxInFlight?: number; flushMs?: number } = {},
) => {
  const out = stream();
  const failed: number[] = [];
  const journal = createDecisionJournal({
    records,
    lines: decisionLines(createLogger(level, out.destination)),
    pendingTtlMs: 600_000,
    clock: () => 1_000_000,
    failed: (n) => failed.push(n),
    log: { warn: () => undefined },
    ...over,
  });
  return { journal, out, failed };
};

t.test('a decision line is exactly what the logger itself writes for it, time aside', async (t) => {
  const hostile = 'a"b\\c\n{"msg":"x"}\u2028\u00e9';
  const variants: Array<[string, JournalFacts]> = [
    ['with a bypass', facts(1, { decision: { ...facts(1).decision, bypass: 'office-network' } })],
    ['without a step-up or bypass', facts(2, { stepUp: undefined })],
    [
      'hostile strings in every free-text member',
      facts(3, {
        decisionId: hostile,
        reqId: hostile,
        purpose: hostile,
        verification: hostile,
        enriched: { ...facts(3).enriched, user: hostile, device: hostile },
        decision: { ...facts(3).decision, ruleset: hostile, degraded: [hostile], bypass: hostile },
      }),
    ],
    [
      'a SKIP with no reasons',
      facts(4, {
        decision: { ...facts(4).decision, action: 'SKIP', score: 0, reasons: [], shadow: [], degraded: [] },
        seconds: 1.5,
      }),
    ],
  ];
  for (const [name, f] of variants) await t.test(name, (t) => lineMatchesPino(t, f));
});

async function lineMatchesPino(t: Test, f: JournalFacts) {
  const { records } = recordsSpy();
  const { journal, out } = journalWith(records);
  journal.add(f);
  await journal.settled();

  // The line the route wrote through pino before the journal: the same fields, through the logger.
  const reference = stream();
  createLogger('info', reference.destination)
    .child({ reqId: f.reqId })
    .info(
      {
        decision_id: f.decisionId,
        user: f.enriched.user,
        device: f.enriched.device,
        action: f.decision.action,
        score: f.decision.score,
        rules: f.decision.reasons.map((r) => r.rule),
        shadow: f.decision.shadow,
        ruleset: f.decision.ruleset,
        degraded: f.decision.degraded,
        verification: f.verification,
        duration_ms: Math.round(f.seconds * 1e6) / 1e3,
        signals: f.enriched.signals,
        ...(f.decision.bypass ? { bypass: f.decision.bypass } : {}),
      },
      'decision',
    );
  const ours = out.lines();
  t.equal(ours.length, 1, 'one line, however hostile the signals');
  const { time, ...line } = JSON.parse(ours[0]!);
  const { time: referenceTime, ...expected } = JSON.parse(reference.lines()[0]!);
  t.same(line, expected, 'level, bindings, reqId, every field and msg as pino writes them');
  t.same(Object.keys(line), Object.keys(expected), 'in the same order');
  t.ok(Math.abs(Date.parse(time) - Date.parse(referenceTime)) < 60_000, `an ISO time (${time})`);
}

t.test('a decision record is the record, and its JSON parses back to it', async (t) => {
  const { records, batches } = recordsSpy();
  const { journal } = journalWith(records);
  journal.add(facts(2));
  journal.add(facts(3, { stepUp: undefined }));
  await journal.settled();
  t.equal(batches.length, 1, 'one batch');
  const [withStepUp, without] = batches[0]!;
  t.same(withStepUp!.record, {
    id: 'dec-2',
    at: 1_000_000,
    user: 'u-2',
    device: 'd-2',
    action: 'PASSIVE',
    score: 40,
    rules: ['new-device', 'floor:tor'],
    shadow: [{ rule: 'candidate', action: 'ACTIVE_3D' }],
    ruleset: 'abc123',
    degraded: ['geoip'],
    purpose: 'login',
    signals: facts(2).enriched.signals,
    stepUp: { session: 's-2', method: 'PASSIVE', expiresAt: 1_600_000 },
  });
  t.same(JSON.parse(withStepUp!.json), withStepUp!.record, 'its JSON is the record');
  t.notOk('stepUp' in without!.record, 'no step-up, no stepUp field');
  t.same(JSON.parse(without!.json), without!.record);
  // Byte for byte, fields in the record's order (the JSON is assembled from parts, not stringified whole).
  t.equal(withStepUp!.json, JSON.stringify(withStepUp!.record), 'exactly JSON.stringify of the record');
  t.equal(without!.json, JSON.stringify(without!.record), 'without a step-up too');
  t.same(Object.keys(withStepUp!.record), [
    'id',
    'at',
    'user',
    'device',
    'action',
    'score',
    'rules',
    'shadow',
    'ruleset',
    'degraded',
    'purpose',
    'stepUp',
    'signals',
  ]);
});

t.test('decides are batched: one write of lines and one batch of records per flush', async (t) => {
  const { records, batches } = recordsSpy();
  const { journal, out } = journalWith(records, 'info', { flushMs: 50 });
  for (let i = 0; i < 300; i++) journal.add(facts(i));
  t.equal(batches.length, 1, 'a full batch (256) goes at once, before the timer');
  t.equal(out.writes.length, 1, 'its lines in one write');
  await new Promise((resolve) => setTimeout(resolve, 120));
  t.same(
    batches.map((b) => b.length),
    [256, 44],
    'the rest when the timer fires',
  );
  t.equal(out.writes.length, 2, 'in a second write');
  t.same(
    out.lines().map((l) => JSON.parse(l).decision_id),
    Array.from({ length: 300 }, (_, i) => `dec-${i}`),
    'every decide has its line, in order',
  );
});

t.test('below info level no line is written; the records are', async (t) => {
  const { records, batches } = recordsSpy();
  const { journal, out } = journalWith(records, 'warn');
  journal.add(facts(1));
  await journal.settled();
  t.equal(out.writes.length, 0);
  t.equal(batches[0]?.length, 1);
});

t.test('a failing or hung store is counted, bounded, and never loses a line', async (t) => {
  const failing = journalWith(recordsSpy({ fail: true }).records);
  for (let i = 0; i < 3; i++) failing.journal.add(facts(i));
  await failing.journal.settled();
  t.same(failing.failed, [3], 'the batch of 3 is counted as lost records');
  t.equal(failing.out.lines().length, 3, 'its lines were written anyway');

  const partly = journalWith(recordsSpy({ fail: true, lost: 1 }).records);
  for (let i = 0; i < 3; i++) partly.journal.add(facts(i));
  await partly.journal.settled();
  t.same(partly.failed, [1], 'a store that kept part of the batch (one shard down) has only the rest counted');

  const hung = journalWith(recordsSpy({ hang: true }).records, 'info', { maxInFlight: 1 });
  hung.journal.add(facts(1));
  hung.journal.writeNow();
  hung.journal.add(facts(2));
  hung.journal.add(facts(3));
  const started = Date.now();
  const alive = setInterval(() => undefined, 1000); // the service's server holds the loop; here, this
  await hung.journal.settled(100);
  clearInterval(alive);
  t.ok(Date.now() - started < 5000, 'settled gives up on a hung store');
  t.same(hung.failed, [2], 'past the writes in flight, a batch is dropped and counted, not queued');
  t.equal(hung.out.lines().length, 3, 'every line written');
});

t.test('a line and a record stay valid JSON when a required string is missing at run time', async (t) => {
  const { records, batches } = recordsSpy();
  const { journal, out } = journalWith(records);
  const missing = [
    { purpose: undefined, verification: undefined, decisionId: undefined },
    { reqId: undefined },
    { signalsJson: '' },
    { signalsJson: undefined, enriched: { ...facts(9).enriched, signals: undefined } },
  ];
  for (const over of missing) journal.add(facts(9, over as never));
  await journal.settled();
  const lines = out.lines();
  t.equal(lines.length, missing.length);
  lines.forEach((line, i) => {
    t.doesNotThrow(() => JSON.parse(line), `line ${i} parses`);
    t.doesNotThrow(() => JSON.parse(batches[0]![i]!.json), `record ${i} parses`);
  });
  t.equal(JSON.parse(batches[0]![0]!.json).purpose, null);
});
