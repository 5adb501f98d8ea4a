import t from 'tap';
import { compileFromTexts, loadRuleDir, readRuleDir } from '../../src/rules-io/load.js';
import { runRuleTests } from '../../src/rules-io/test-runner.js';

t.test('the shipped rules compile and every case in rules/*.test.yaml passes', async (t) => {
  const loaded = await loadRuleDir('rules');
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors, null, 2));
  const report = runRuleTests(await readRuleDir('rules'), loaded.ruleset);
  for (const c of report.cases) t.ok(c.passed, `${c.file}: ${c.name}${c.problems.length ? ` (${c.problems.join('; ')})` : ''}`);
  t.same(report.problems, [], 'every rule has a firing and a non-firing case');
  t.ok(report.cases.length >= 20, `${report.cases.length} cases`);
});

const POLICY = 'policy:\n  score_bands: [{ min_score: 0, action: SKIP }]\n  cold_start_floor: PASSIVE\n  degraded_floor: PASSIVE\n';
const RULES = 'rules:\n  - { id: tor, description: d, when: "ip.tor", then: { min_action: ACTIVE_3D } }\n  - { id: lonely, description: d, when: "ip.vpn", then: { min_action: FLASHING } }\n';

function compiled(files: Array<{ name: string; text: string }>) {
  const result = compileFromTexts(files);
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.ruleset;
}

t.test('a rule without a firing and a non-firing case fails the suite', async (t) => {
  const files = [
    { name: 'policy.yaml', text: POLICY },
    { name: 'net.yaml', text: RULES },
    { name: 'net.test.yaml', text: 'cases:\n  - name: tor fires\n    signals: { ip.tor: true }\n    expect: { fires: [tor] }\n  - name: tor quiet\n    signals: { ip.tor: false }\n    expect: { not_fires: [tor] }\n' },
  ];
  const report = runRuleTests(files, compiled(files));
  t.equal(report.passed, false);
  t.same(report.problems, ['net.test.yaml: rule lonely has no case where it fires', 'net.test.yaml: rule lonely has no case where it does not fire']);
});

t.test('a rule file without a test file beside it fails the suite', async (t) => {
  const files = [{ name: 'policy.yaml', text: POLICY }, { name: 'net.yaml', text: RULES }];
  const report = runRuleTests(files, compiled(files));
  t.same(report.problems, ['net.yaml: no test file net.test.yaml beside it']);
});

t.test('a failing expectation is reported with what happened', async (t) => {
  const files = [
    { name: 'policy.yaml', text: POLICY },
    { name: 'net.yaml', text: 'rules:\n  - { id: tor, description: d, when: "ip.tor", then: { min_action: ACTIVE_3D } }\n' },
    { name: 'net.test.yaml', text: 'cases:\n  - name: wrong\n    signals: { ip.tor: true }\n    expect: { action: SKIP, fires: [tor] }\n  - name: typo\n    signals: { ip.torr: true }\n    expect: { not_fires: [tor] }\n' },
  ];
  const report = runRuleTests(files, compiled(files));
  t.equal(report.passed, false);
  t.match(report.cases[0]?.problems, ['action ACTIVE_3D, expected SKIP']);
  t.match(report.cases[1]?.problems, ['unknown signal ip.torr']);
});
