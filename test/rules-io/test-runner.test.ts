import t from 'tap';
import { SIGNALS } from '../../src/engine/signals.js';
import { compileFromTexts, type TextFile } from '../../src/rules-io/load.js';
import { runRuleTests, type RuleTestReport } from '../../src/rules-io/test-runner.js';

// A small rules directory whose tests all pass; each test below changes one thing and must see the
// runner fail with the reason named, so a check that cannot fail shows up as a failing test here.

const POLICY = `policy:
  score_bands: [{ min_score: 0, action: SKIP }, { min_score: 20, action: PASSIVE }]
  cold_start_floor: PASSIVE
  degraded_floor: PASSIVE
`;
const NET = `rules:
  - { id: tor, description: d, when: "ip.tor", then: { min_action: ACTIVE_3D } }
  - { id: vpn-score, description: d, when: "ip.vpn", then: { score: 20 } }
  - { id: gold, description: d, when: 'has(request.attributes.tier) && request.attributes.tier == "gold" && request.attributes.tenant == "acme"', then: { score: 5 } }
`;
const OTHER = `rules:
  - { id: hosting, description: d, when: "ip.hosting", then: { min_action: DENY } }
`;

/** Every signal needed for SKIP and every store signal, known and harmless: the quiet user. Built from SIGNALS, so a new one is covered. */
const quiet = SIGNALS.filter((s) => ('requiredForSkip' in s && s.requiredForSkip) || s.source === 'store').map((s) => {
  const value =
    s.type === 'bool'
      ? s.name.endsWith('known')
        ? 'true'
        : 'false'
      : s.type === 'int'
        ? '1'
        : s.type === 'double'
          ? '1.5'
          : '"GB"';
  return `      ${s.name}: ${value}`;
});
const FIXTURES = `fixtures:
  quiet:
    signals:
${quiet.join('\n')}
      request.attributes: { tenant: acme }
  listed:
    base: quiet
    signals: { ip.tor: true }
`;
const NET_TESTS = `base: quiet
cases:
  - name: quiet
    signals: {}
    expect: { action: SKIP, score: 0, degraded: [], unknown: [], not_fires: [tor, vpn-score, gold] }
  - name: tor
    signals: { ip.tor: true }
    expect: { action: ACTIVE_3D, fires: [tor] }
  - name: vpn
    signals: { ip.vpn: true }
    expect: { action: PASSIVE, score: 20, fires: [vpn-score] }
  - name: gold, merged into the fixture's attributes
    signals: { request.attributes: { tier: gold } }
    expect: { action: SKIP, score: 5, fires: [gold] }
  - name: tor unknown
    signals: { ip.tor: null }
    expect: { action: PASSIVE, degraded: [signals], unknown: [ip.tor] }
`;
const OTHER_TESTS = `base: quiet
cases:
  - name: quiet
    signals: {}
    expect: { action: SKIP, not_fires: [hosting] }
  - name: hosting
    signals: { ip.hosting: true }
    expect: { action: DENY, fires: [hosting] }
  - name: hosting unknown
    signals: { ip.hosting: null }
    expect: { action: PASSIVE, unknown: [ip.hosting] }
`;
const SCENARIOS = `base: quiet
cases:
  - name: rules of both files
    signals: { ip.hosting: true, ip.vpn: true }
    expect: { action: DENY, score: 20, fires: [hosting, vpn-score] }
`;

const GOOD: Record<string, string> = {
  'policy.yaml': POLICY,
  'net.yaml': NET,
  'net.test.yaml': NET_TESTS,
  'other.yaml': OTHER,
  'other.test.yaml': OTHER_TESTS,
  'scenarios.test.yaml': SCENARIOS,
  'fixtures.yaml': FIXTURES,
};

/** The GOOD directory with some files replaced (a string) or removed (null). */
function run(changes: Record<string, string | null> = {}): RuleTestReport {
  const texts = { ...GOOD, ...changes };
  const files: TextFile[] = Object.entries(texts)
    .filter((entry): entry is [string, string] => entry[1] !== null)
    .map(([name, text]) => ({ name, text }));
  const compiled = compileFromTexts(files);
  if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));
  return runRuleTests(files, compiled.ruleset, Date.parse('2026-11-26T12:00:00Z'));
}

/** The net tests with one more case appended. */
const withNetCase = (yaml: string) => ({ 'net.test.yaml': `${NET_TESTS}${yaml}` });
const failures = (report: RuleTestReport) =>
  report.cases.filter((c) => !c.passed).map((c) => ({ name: c.name, problems: c.problems }));

t.test('the reference directory passes, every case of it run', async (t) => {
  const report = run();
  t.same(failures(report), []);
  t.same(report.problems, []);
  t.equal(report.cases.length, 9);
  t.equal(report.passed, true);
});

t.test('each expect key fails the case when it is wrong, and names what happened', async (t) => {
  const wrong: Array<[string, string, string[]]> = [
    ['action', '{ action: FLASHING }', ['action PASSIVE, expected FLASHING']],
    ['score', '{ score: 19 }', ['score 20, expected 19']],
    ['score of zero', '{ score: 0 }', ['score 20, expected 0']],
    ['degraded, missing', '{ degraded: [] }', ['degraded [signals], expected []']],
    ['degraded, another input', '{ degraded: [store] }', ['degraded [signals], expected [store]']],
    ['degraded, one too many', '{ degraded: [signals, geoip] }', ['degraded [signals], expected [geoip, signals]']],
    ['unknown, empty', '{ unknown: [] }', ['unknown [ip.tor], expected []']],
    ['unknown, another signal', '{ unknown: [ip.vpn] }', ['unknown [ip.tor], expected [ip.vpn]']],
    ['unknown, one too many', '{ unknown: [ip.tor, ip.vpn] }', ['unknown [ip.tor], expected [ip.tor, ip.vpn]']],
    ['unknown, misspelt', '{ unknown: [ip.torr] }', ['unknown names no signal ip.torr']],
    ['fires', '{ fires: [tor] }', ['tor did not fire (unknown)']],
    ['fires, quiet rule', '{ fires: [gold] }', ['gold did not fire (not_fired)']],
    ['not_fires', '{ not_fires: [vpn-score] }', ['vpn-score fired']],
  ];
  for (const [label, expect, problems] of wrong) {
    // A vpn address whose Tor flag is unknown: score 20, degraded [signals], unknown [ip.tor].
    const report = run(
      withNetCase(`  - name: ${label}\n    signals: { ip.vpn: true, ip.tor: null }\n    expect: ${expect}\n`),
    );
    t.same(failures(report), [{ name: label, problems }], label);
    t.equal(report.passed, false, `${label}: the run fails`);
  }
  const right = run(
    withNetCase(
      '  - name: right\n    signals: { ip.vpn: true, ip.tor: null }\n    expect: { action: PASSIVE, score: 20, degraded: [signals], unknown: [ip.tor], fires: [vpn-score] }\n',
    ),
  );
  t.same(failures(right), [], 'the same case with the true values passes');
});

t.test('degraded in the expectation is the failed inputs plus signals when only a signal is unknown', async (t) => {
  const outage = withNetCase(
    '  - name: store out\n    degraded: [store]\n    signals: { device.known: null }\n    expect: { action: PASSIVE, degraded: [store], unknown: [device.known] }\n',
  );
  t.same(failures(run(outage)), []);
  const both = withNetCase(
    '  - name: both\n    degraded: [store, lists]\n    signals: { device.known: null, ip.tor: null }\n    expect: { degraded: [lists, store] }\n',
  );
  t.same(failures(run(both)), [], 'order does not matter');
});

t.test('a shadow expectation fails when the shadow rule answers otherwise', async (t) => {
  const shadowRules = {
    'net.yaml': `${NET}  - { id: watch, description: d, when: "ip.vpn", then: { min_action: FLASHING }, mode: shadow, expires: "2027-03-31" }\n`,
  };
  const cases =
    '  - name: watch\n    signals: { ip.vpn: true }\n    expect: { shadow: { watch: FLASHING } }\n  - name: watch quiet\n    signals: {}\n    expect: { not_fires: [watch] }\n';
  t.same(failures(run({ ...shadowRules, ...withNetCase(cases) })), []);
  const wrong = run({ ...shadowRules, ...withNetCase(cases.replace('watch: FLASHING', 'watch: DENY')) });
  t.same(failures(wrong), [{ name: 'watch', problems: ['shadow watch: FLASHING, expected DENY'] }]);
  const none = run({ ...shadowRules, ...withNetCase(cases.replace('watch: FLASHING', '')) });
  t.same(
    failures(none),
    [{ name: 'watch', problems: ['shadow watch: FLASHING, expected it not to fire'] }],
    '{} asserts no shadow rule fired',
  );
  const quietWatch = run({
    ...shadowRules,
    ...withNetCase(`${cases}  - name: nothing in shadow\n    signals: {}\n    expect: { shadow: {} }\n`),
  });
  t.same(failures(quietWatch), []);
});

t.test('now decides which rules have expired; a date that is not one is refused', async (t) => {
  const expiring = {
    'net.yaml': NET.replace(
      'then: { min_action: ACTIVE_3D } }',
      'then: { min_action: ACTIVE_3D }, expires: "2027-03-31" }',
    ),
  };
  const at = (now: string) =>
    run({
      ...expiring,
      ...withNetCase(
        `  - name: at ${now}\n    now: "${now}"\n    signals: { ip.tor: true }\n    expect: { fires: [tor] }\n`,
      ),
    });
  t.same(failures(at('2027-03-31T23:59:59Z')), [], 'runs to the end of its expiry date');
  t.same(failures(at('2027-04-01T00:00:00Z')), [
    { name: 'at 2027-04-01T00:00:00Z', problems: ['tor did not fire (expired)'] },
  ]);
  for (const bad of [
    'tomorrow',
    '2027-02-30T00:00:00Z',
    '2027-13-01',
    '2027-00-10',
    '2027-04-01T25:00:00Z',
    '1700000000000',
  ]) {
    const report = at(bad);
    t.equal(report.passed, false, `now: ${bad}`);
    t.match(report.problems.join('\n'), /net\.test\.yaml: cases\.5\.now: now is/, `now: ${bad} is named`);
  }
});

t.test('a misspelt signal fails the case wherever it is written', async (t) => {
  const places: Array<[string, string]> = [
    ['a value', '{ ip.torr: true }'],
    ['made unknown', '{ ip.torr: null }'],
    ['a wrong type', '{ ip.tor: "yes" }'],
  ];
  for (const [label, signals] of places) {
    const report = run(withNetCase(`  - name: ${label}\n    signals: ${signals}\n    expect: { action: SKIP }\n`));
    t.match(failures(report), [{ name: label, problems: [/^(unknown signal ip\.torr|ip\.tor must be bool)$/] }], label);
  }
  const inline = run({ 'net.test.yaml': NET_TESTS.replace('base: quiet', 'base: { ip.torr: false }') });
  t.match(inline.problems, ['net.test.yaml: base: unknown signal ip.torr']);
  const fixture = run({ 'fixtures.yaml': FIXTURES.replace('signals: { ip.tor: true }', 'signals: { ip.torr: true }') });
  t.match(fixture.problems, ['fixtures.yaml: fixture listed: unknown signal ip.torr']);
});

t.test('an unknown base is a load error of the file, and none of its cases run', async (t) => {
  const fileBase = run({ 'net.test.yaml': NET_TESTS.replace('base: quiet', 'base: quite') });
  t.same(fileBase.problems, ['net.test.yaml: base quite is not a fixture (fixtures.yaml has: quiet, listed)']);
  t.notOk(
    fileBase.cases.some((c) => c.file === 'net.test.yaml'),
    'no case of the file ran',
  );
  t.equal(fileBase.passed, false);

  const caseBase = run(
    withNetCase('  - name: from elsewhere\n    base: calm\n    signals: {}\n    expect: { action: SKIP }\n'),
  );
  t.same(caseBase.problems, [
    'net.test.yaml: case "from elsewhere": base calm is not a fixture (fixtures.yaml has: quiet, listed)',
  ]);

  const noFixtures = run({ 'fixtures.yaml': null });
  t.ok(
    noFixtures.problems.includes('net.test.yaml: base quiet is not a fixture (there is no fixtures.yaml)'),
    noFixtures.problems.join('\n'),
  );

  const brokenChain = run({
    'fixtures.yaml': FIXTURES.replace('base: quiet', 'base: quieter'),
    ...withNetCase('  - name: listed\n    base: listed\n    signals: {}\n    expect: { fires: [tor] }\n'),
  });
  t.same(brokenChain.problems, [
    'fixtures.yaml: fixture listed: base quieter is not a fixture (quiet, listed)',
    'net.test.yaml: case "listed": base listed: the fixture has problems of its own (see fixtures.yaml)',
  ]);

  const circular = run({ 'fixtures.yaml': `${FIXTURES.replace('  quiet:\n', '  quiet:\n    base: listed\n')}` });
  t.match(circular.problems[0], /fixture (quiet|listed): base (quiet|listed) is circular/);
  t.equal(circular.passed, false);
});

t.test(
  'a case starts from its base fixture, a fixture from its own base, and merges map signals key by key',
  async (t) => {
    const report = run(
      withNetCase(
        [
          '  - name: from the listed fixture, which starts from quiet',
          '    base: listed',
          '    signals: {}',
          '    expect: { action: ACTIVE_3D, unknown: [], fires: [tor] }',
          '  - name: the case overrides the fixture',
          '    base: listed',
          '    signals: { ip.tor: false }',
          '    expect: { action: SKIP, not_fires: [tor] }',
          '  - name: the case overrides an attribute and keeps the others',
          '    signals: { request.attributes: { tenant: other, tier: gold } }',
          '    expect: { not_fires: [gold] }',
          '',
        ].join('\n'),
      ),
    );
    t.same(failures(report), []);
    t.same(report.problems, []);
    // Without the key-by-key merge the case's attributes replace the fixture's, and gold cannot fire.
    const replaced = run({
      'fixtures.yaml': FIXTURES.replace('request.attributes: { tenant: acme }', 'request.attributes: {}'),
    });
    t.same(failures(replaced), [
      {
        name: "gold, merged into the fixture's attributes",
        problems: ['action PASSIVE, expected SKIP', 'score 0, expected 5', 'gold did not fire (unknown)'],
      },
    ]);
  },
);

t.test("a test file runs against its own rules only; another file's rule is named as such", async (t) => {
  // hosting (other.yaml) would DENY: in net.test.yaml it is not evaluated, so the action is net's own.
  const isolated = run(
    withNetCase(
      "  - name: hosting is not net's\n    signals: { ip.hosting: true }\n    expect: { action: SKIP, score: 0 }\n",
    ),
  );
  t.same(failures(isolated), []);
  const named = run(
    withNetCase('  - name: names hosting\n    signals: { ip.hosting: true }\n    expect: { fires: [hosting] }\n'),
  );
  t.same(failures(named), [
    {
      name: 'names hosting',
      problems: [
        'fires names hosting, a rule of other.yaml: a case that needs rules of several files belongs in scenarios.test.yaml',
      ],
    },
  ]);
  const unknownRule = run(
    withNetCase('  - name: names nothing\n    signals: {}\n    expect: { not_fires: [hostingg] }\n'),
  );
  t.same(failures(unknownRule), [{ name: 'names nothing', problems: ['not_fires names unknown rule hostingg'] }]);
  // scenarios.test.yaml sees every rule: the same signals DENY there.
  const scenario = run({
    'scenarios.test.yaml': `${SCENARIOS}  - name: hosting denies\n    signals: { ip.hosting: true }\n    expect: { action: SKIP }\n`,
  });
  t.same(failures(scenario), [{ name: 'hosting denies', problems: ['action DENY, expected SKIP'] }]);
});

t.test('each rule file needs a firing, a quiet and an unknown case; each test file a rule file', async (t) => {
  const noUnknown = run({ 'other.test.yaml': OTHER_TESTS.replace(/ {2}- name: hosting unknown[\s\S]*$/, '') });
  t.same(noUnknown.problems, [
    'other.test.yaml: no case where a signal its rules read is unknown (set one to null and assert expect.unknown)',
  ]);
  // An unknown signal without `expect.unknown` does not count: the case must say what it shows.
  const unasserted = run({
    'other.test.yaml': OTHER_TESTS.replace(
      'expect: { action: PASSIVE, unknown: [ip.hosting] }',
      'expect: { action: PASSIVE }',
    ),
  });
  t.same(unasserted.problems, noUnknown.problems);
  // Nor does a case asserting `unknown` while the file's rules all evaluated.
  const notTheRules = run({
    'other.test.yaml': OTHER_TESTS.replace(
      'signals: { ip.hosting: null }\n    expect: { action: PASSIVE, unknown: [ip.hosting] }',
      'signals: { ip.tor: null }\n    expect: { action: PASSIVE, unknown: [ip.tor] }',
    ),
  });
  t.same(notTheRules.problems, noUnknown.problems);

  const noFiring = run({ 'other.test.yaml': OTHER_TESTS.replace(/ {2}- name: hosting\n[^\n]*\n[^\n]*\n/, '') });
  t.same(noFiring.problems, ['other.test.yaml: rule hosting has no case where it fires']);
  const noQuiet = run({
    'other.test.yaml': OTHER_TESTS.replace(
      'expect: { action: SKIP, not_fires: [hosting] }',
      'expect: { action: SKIP }',
    ),
  });
  t.same(noQuiet.problems, ['other.test.yaml: rule hosting has no case where it does not fire']);
  // A scenario naming a rule does not stand in for its own file's cases.
  const viaScenario = run({
    'other.test.yaml': OTHER_TESTS.replace(/ {2}- name: hosting\n[^\n]*\n[^\n]*\n/, ''),
    'scenarios.test.yaml': `${SCENARIOS}  - name: h\n    signals: { ip.hosting: true }\n    expect: { fires: [hosting] }\n`,
  });
  t.same(viaScenario.problems, noFiring.problems);

  t.same(run({ 'other.test.yaml': null }).problems, ['other.yaml: no test file other.test.yaml beside it']);
  t.same(run({ 'nett.test.yaml': NET_TESTS }).problems, [
    'nett.test.yaml: no rule file beside it (cases that combine files belong in scenarios.test.yaml)',
  ]);
});

t.test(
  'a case asserts something, names a failed input the engine knows, and an outage leaves signals unknown',
  async (t) => {
    const empty = run(withNetCase('  - name: asserts nothing\n    signals: {}\n    expect: {}\n'));
    t.match(empty.problems, [/net\.test\.yaml: cases\.5\.expect: expect needs at least one of/]);
    const misspeltInput = run(
      withNetCase(
        '  - name: typo\n    degraded: [stor]\n    signals: { device.known: null }\n    expect: { action: PASSIVE }\n',
      ),
    );
    t.match(misspeltInput.problems, [/net\.test\.yaml: cases\.5\.degraded\.0: /]);
    const impossible = run(
      withNetCase(
        '  - name: store down, history known\n    degraded: [store]\n    signals: {}\n    expect: { action: SKIP }\n',
      ),
    );
    t.same(failures(impossible), [
      {
        name: 'store down, history known',
        problems: [
          'degraded names store but every store signal is known (an outage leaves them unknown: set them to null, or use a fixture such as store-down)',
        ],
      },
    ]);
  },
);

t.test('fixtures.yaml is test material: the service does not load it and the ruleset hash ignores it', async (t) => {
  const files = Object.entries(GOOD).map(([name, text]) => ({ name, text }));
  const withFixtures = compileFromTexts(files);
  const without = compileFromTexts(files.filter((f) => f.name !== 'fixtures.yaml'));
  t.ok(withFixtures.ok && without.ok);
  if (withFixtures.ok && without.ok) {
    t.equal(withFixtures.ruleset.hash, without.ruleset.hash);
    t.equal(withFixtures.ruleset.rules.length, 4);
  }
});
