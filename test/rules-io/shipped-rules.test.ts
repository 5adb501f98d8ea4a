import t from 'tap';
import { loadRuleDir, readRuleDir } from '../../src/rules-io/load.js';
import { runRuleTests } from '../../src/rules-io/test-runner.js';

// How the runner judges a rules directory (fixtures, expect keys, one file's rules per test file) is
// tested in test/rules-io/test-runner.test.ts; this runs it over the shipped rules.
t.test('the shipped rules compile and every case in rules/*.test.yaml passes', async (t) => {
  const loaded = await loadRuleDir('rules');
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors, null, 2));
  const report = runRuleTests(await readRuleDir('rules'), loaded.ruleset);
  for (const c of report.cases)
    t.ok(c.passed, `${c.file}: ${c.name}${c.problems.length ? ` (${c.problems.join('; ')})` : ''}`);
  t.same(report.problems, [], 'every rule has a firing and a non-firing case, every file an unknown-signal case');
  const files = new Set(report.cases.map((c) => c.file));
  t.same([...files].sort(), [
    'abuse.test.yaml',
    'device.test.yaml',
    'network.test.yaml',
    'purpose.test.yaml',
    'scenarios.test.yaml',
    'travel.test.yaml',
  ]);
  t.ok(report.cases.length >= 60, `${report.cases.length} cases`);
});
