import t from 'tap';
import { createRecheckGuard, warmRecheck } from '../../src/rules-io/regex-guard.js';
import { createRuleSandbox } from '../../src/rules-io/rule-sandbox.js';
import { POLICY } from '../security/expensive-rules.js';

const GOOD = [
  { name: 'policy.yaml', text: POLICY },
  { name: 'ok.yaml', text: 'rules:\n  - { id: tor, description: d, when: "ip.tor", then: { score: 50 } }\n' },
];
/** One YAML parse of ~190 KB (under the 256 KiB file cap): work that cannot stop itself, so only the hard deadline ends it. */
const HUGE = [
  { name: 'policy.yaml', text: POLICY },
  {
    name: 'big.yaml',
    text: `rules:\n${Array.from({ length: 2000 }, (_, i) => `  - { id: r${i}, description: "${'d'.repeat(40)}", when: "ip.tor", then: { score: 1 } }`).join('\n')}\n`,
  },
];
const letters = 'abcdefghijklmnop';
const slow = (i: number) => `(?:${letters[i]}{1,50}${letters[i + 1]}{1,50}){1,50}z`;

t.test('a job over its hard deadline is terminated, and the next job runs on a fresh worker', async (t) => {
  const kills: string[] = [];
  const sandbox = createRuleSandbox({ checkDeadlineMs: 25, log: { warn: (_o, msg) => kills.push(msg) } });
  t.teardown(() => sandbox.close());
  t.ok(await sandbox.warm(), 'started');
  const started = performance.now();
  const outcome = await sandbox.check(HUGE, Date.now());
  const elapsed = performance.now() - started;
  t.equal(outcome.kind, 'too_expensive', JSON.stringify(outcome).slice(0, 200));
  // Generous: the kill lands at 25 ms; the margin covers a loaded, shared machine.
  t.ok(elapsed < 1000, `answered in ${elapsed.toFixed(0)} ms`);
  t.ok(
    kills.some((m) => /stopped and replaced/.test(m)),
    'the kill is logged',
  );
  const after = await sandbox.evaluate(GOOD, { signals: { 'ip.tor': true } as never, now: Date.now() });
  t.equal(after.kind, 'ok', 'the replacement answers');
  if (after.kind === 'ok') t.equal((after.decision as { score: number }).score, 50);
});

t.test('the queue is bounded: excess jobs are refused at once, nothing is left pending', async (t) => {
  const sandbox = createRuleSandbox({ maxQueue: 2 });
  t.teardown(() => sandbox.close());
  t.ok(await sandbox.warm());
  const files = [
    { name: 'policy.yaml', text: POLICY },
    {
      name: 'r.yaml',
      text: `rules:\n${Array.from({ length: 5 }, (_, i) => `  - { id: p${i}, description: d, when: "request.purpose.matches('${slow(i)}')", then: { score: 1 } }`).join('\n')}\n`,
    },
  ];
  const outcomes = await Promise.all(
    Array.from({ length: 8 }, () => sandbox.evaluate(files, { signals: {} as never, now: Date.now() })),
  );
  const kinds = outcomes.map((o) => o.kind);
  t.comment(kinds.join(', '));
  t.equal(kinds.filter((k) => k === 'busy').length, 5, 'one running, two waiting, five refused');
  t.ok(outcomes.filter((o) => o.kind === 'rejected').length >= 1, 'the admitted ones are refused for their regexes');
  t.equal(sandbox.pending(), 0);
});

t.test('regex checks: a per-pattern and a per-ruleset time budget, refusing what runs out (fail closed)', async (t) => {
  warmRecheck();
  const guard = createRecheckGuard({ perPatternMs: 100, perLoadMs: 300 });
  const started = performance.now();
  const verdicts = Array.from({ length: 10 }, (_, i) => guard(slow(i)));
  const elapsed = performance.now() - started;
  t.comment(`10 slow patterns checked in ${elapsed.toFixed(0)} ms`);
  t.ok(
    verdicts.every((v) => typeof v === 'object' && v.tooExpensive),
    'every slow pattern refused as too expensive',
  );
  const spent = createRecheckGuard({ perPatternMs: 100, perLoadMs: 0 });
  t.match(
    spent('^[a-z]+$'),
    { reason: /budget/, tooExpensive: true },
    'once the ruleset budget is spent, even a safe pattern is refused unchecked',
  );
  // 300 ms budget + one pattern's overshoot; generous for a loaded machine (it was 4 s for ten before).
  t.ok(elapsed < 1500, `${elapsed.toFixed(0)} ms in all`);
  const fresh = createRecheckGuard({ perPatternMs: 2000, perLoadMs: 4000 });
  t.equal(fresh('^[a-z]{2,8}$'), undefined, 'a safe pattern passes');
  t.match(fresh('(a+)+$'), /catastrophic backtracking/, 'a vulnerable one is refused as such');
  t.match(fresh('(unclosed'), /invalid regex/);
});

t.test('idle workers are stopped (their memory given back) and the next job starts one again', async (t) => {
  const sandbox = createRuleSandbox({ idleMs: 200 });
  t.teardown(() => sandbox.close());
  t.equal(sandbox.workers(), 0, 'nothing runs before the first job');
  const first = await sandbox.evaluate(GOOD, { signals: { 'ip.tor': true } as never, now: Date.now() });
  t.equal(first.kind, 'ok');
  t.equal(sandbox.workers(), 2, 'the worker and its spare, while in use');
  await new Promise((resolve) => setTimeout(resolve, 600));
  t.equal(sandbox.workers(), 0, 'both stopped once idle');
  const again = await sandbox.check(GOOD, Date.now());
  t.equal(again.kind, 'ok', 'a reload after idle waits for a start and is checked');
});
