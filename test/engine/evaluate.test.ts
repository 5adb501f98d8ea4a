import t from 'tap';
import { evaluate } from '../../src/engine/evaluate.js';
import type { CompiledRuleset } from '../../src/engine/ruleset.js';
import type { Signals } from '../../src/engine/signals.js';
import { compileFromTexts, loadRuleDir } from '../../src/rules-io/load.js';

const NOW = Date.parse('2026-11-25T12:00:00Z');

const POLICY = `policy:
  score_bands:
    - { min_score: 0, action: SKIP }
    - { min_score: 20, action: PASSIVE }
    - { min_score: 60, action: ACTIVE_3D }
  cold_start_floor: PASSIVE
  degraded_floor: PASSIVE
`;

function compile(files: Record<string, string>): CompiledRuleset {
  const result = compileFromTexts(Object.entries(files).map(([name, text]) => ({ name, text })));
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.ruleset;
}

const returning: Signals = {
  'request.purpose': 'login',
  'request.attributes': {},
  'device.known': true,
  'device.seen_count': 4,
  'ip.known': true,
  'ip.prefix_known': true,
  'ip.tor': false,
  'ip.vpn': false,
  'ip.hosting': false,
  'ip.relay': false,
  'geo.country': 'SE',
  'geo.country_known': true,
  'geo.travel_assessed': false,
  'ua.bot': false,
  'ua.changed': false,
  'user.verified_count': 1,
  'velocity.decides_1h': 1,
  'velocity.distinct_ips_1h': 1,
  'velocity.declines_24h': 0,
  'velocity.declines_device_24h': 0,
  'velocity.declines_elsewhere_24h': 0,
  'velocity.ip_decides_1m': 1,
};

t.test('the shipped policy puts each brief case on its rung', async (t) => {
  const loaded = await loadRuleDir('rules');
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors));
  const rs = loaded.ruleset;
  const decide = (overrides: Signals) => evaluate(rs, { signals: { ...returning, ...overrides }, now: NOW }).action;
  t.equal(decide({}), 'SKIP', 'known device + known IP skips');
  t.equal(decide({ 'ip.known': false, 'ip.prefix_known': false }), 'PASSIVE', 'known device + new IP is passive');
  t.equal(
    decide({ 'device.known': false, 'ip.known': false, 'ip.prefix_known': false }),
    'PASSIVE',
    'new device + new IP is passive',
  );
  t.equal(decide({ 'device.known': false }), 'PASSIVE', 'new device + known IP is passive');
  t.equal(
    decide({ 'device.known': false, 'ip.known': false, 'ip.prefix_known': false, 'ip.tor': true }),
    'ACTIVE_3D',
    'Tor + new device is ACTIVE_3D',
  );
  t.equal(
    decide({ 'device.known': false, 'ip.known': false, 'ip.prefix_known': false, 'ip.vpn': true }),
    'ACTIVE_3D',
    'VPN + new device is ACTIVE_3D',
  );
  t.equal(
    decide({ 'device.known': false, 'ip.hosting': true, 'ip.known': false, 'ip.prefix_known': false }),
    'FLASHING',
    'hosting + new device is FLASHING',
  );
  t.equal(
    decide({ 'velocity.declines_24h': 5, 'velocity.declines_device_24h': 5 }),
    'DENY',
    'five declines in a day on this device deny',
  );
  t.equal(
    decide({ 'velocity.declines_24h': 5, 'velocity.declines_elsewhere_24h': 5 }),
    'SKIP',
    'declines on other devices never lock a trusted device out',
  );
});

t.test('a user with no verified history never skips (cold-start floor)', async (t) => {
  const rs = compile({
    'policy.yaml': POLICY,
    'a.yaml': 'rules:\n  - { id: never, description: d, when: "false", then: { score: 1 } }\n',
  });
  const decision = evaluate(rs, { signals: { ...returning, 'user.verified_count': 0 }, now: NOW });
  t.equal(decision.action, 'PASSIVE');
  t.ok(decision.reasons.some((r) => r.rule === 'floor:cold-start'));
  t.equal(evaluate(rs, { signals: returning, now: NOW }).action, 'SKIP');
});

t.test('an unknown signal needed for SKIP gives the degraded floor, never SKIP', async (t) => {
  const rs = compile({
    'policy.yaml': POLICY,
    'a.yaml': 'rules:\n  - { id: tor, description: d, when: "ip.tor", then: { min_action: ACTIVE_3D } }\n',
  });
  const signals = { ...returning };
  delete signals['ip.tor'];
  const decision = evaluate(rs, { signals, degraded: ['lists'], now: NOW });
  t.equal(decision.action, 'PASSIVE');
  t.same(decision.degraded, ['lists']);
  t.ok(decision.unknown.includes('ip.tor'));
  t.equal(
    decision.results.find((r) => r.rule === 'tor')?.outcome,
    'unknown',
    'an unreadable signal is unknown, not false',
  );
});

t.test('a rule reading a missing optional signal cannot produce SKIP', async (t) => {
  const rs = compile({
    'policy.yaml': POLICY,
    'a.yaml': 'rules:\n  - { id: asn, description: d, when: "ip.asn == 16509", then: { score: 5 } }\n',
  });
  const decision = evaluate(rs, { signals: returning, now: NOW });
  t.equal(decision.action, 'PASSIVE');
  t.same(decision.unknown, ['ip.asn']);
  t.same(decision.degraded, ['signals']);
});

t.test('shadow rules are reported but never change the action', async (t) => {
  const rs = compile({
    'policy.yaml': POLICY,
    'a.yaml':
      'rules:\n  - { id: watch-asn, description: d, when: "ip.asn == 16509", then: { min_action: ACTIVE_3D }, mode: shadow, expires: "2030-01-01" }\n  - { id: enforce-new-ip, description: d, when: "!ip.known", then: { score: 20 } }\n',
  });
  const decision = evaluate(rs, { signals: { ...returning, 'ip.asn': 16509 }, now: NOW });
  t.equal(decision.action, 'SKIP');
  t.same(decision.shadow, [{ rule: 'watch-asn', action: 'ACTIVE_3D', because: 'ip.asn=16509' }]);
  const asEnforce = compile({
    'policy.yaml': POLICY,
    'a.yaml':
      'rules:\n  - { id: watch-asn, description: d, when: "ip.asn == 16509", then: { min_action: ACTIVE_3D } }\n',
  });
  t.equal(evaluate(asEnforce, { signals: { ...returning, 'ip.asn': 16509 }, now: NOW }).action, 'ACTIVE_3D');
});

t.test('the highest rung wins whatever the file order', async (t) => {
  const a = 'rules:\n  - { id: a-passive, description: d, when: "!ip.known", then: { min_action: PASSIVE } }\n';
  const b =
    'rules:\n  - { id: b-active, description: d, when: "!ip.known", then: { min_action: ACTIVE_3D } }\n  - { id: c-score, description: d, when: "!ip.known", then: { score: 25 } }\n';
  const one = compileFromTexts([
    { name: 'policy.yaml', text: POLICY },
    { name: 'a.yaml', text: a },
    { name: 'b.yaml', text: b },
  ]);
  const two = compileFromTexts([
    { name: 'b.yaml', text: b },
    { name: 'a.yaml', text: a },
    { name: 'policy.yaml', text: POLICY },
  ]);
  if (!one.ok || !two.ok) throw new Error('compile failed');
  t.equal(one.ruleset.hash, two.ruleset.hash, 'the hash ignores file order');
  const signals = { ...returning, 'ip.known': false };
  const first = evaluate(one.ruleset, { signals, now: NOW });
  const second = evaluate(two.ruleset, { signals, now: NOW });
  t.equal(first.action, 'ACTIVE_3D');
  t.same(first, second, 'same input, same output');
  t.equal(first.score, 25);
});

t.test('score bands map the total score', async (t) => {
  const rs = compile({
    'policy.yaml': POLICY,
    'a.yaml':
      'rules:\n  - { id: ten, description: d, when: "!ip.known", then: { score: 10 } }\n  - { id: fifty, description: d, when: "ua.changed", then: { score: 50 } }\n',
  });
  t.equal(evaluate(rs, { signals: { ...returning, 'ip.known': false }, now: NOW }).action, 'SKIP');
  t.equal(evaluate(rs, { signals: { ...returning, 'ua.changed': true }, now: NOW }).action, 'PASSIVE');
  t.equal(
    evaluate(rs, { signals: { ...returning, 'ip.known': false, 'ua.changed': true }, now: NOW }).action,
    'ACTIVE_3D',
  );
});

t.test('an expired rule is skipped and reported', async (t) => {
  const rs = compile({
    'policy.yaml': POLICY,
    'a.yaml':
      'rules:\n  - { id: old, description: d, when: "true", then: { min_action: DENY }, expires: "2026-01-31" }\n',
  });
  const decision = evaluate(rs, { signals: returning, now: NOW });
  t.equal(decision.action, 'SKIP');
  t.equal(decision.results[0]?.outcome, 'expired');
  t.equal(evaluate(rs, { signals: returning, now: Date.parse('2026-01-15T00:00:00Z') }).action, 'DENY');
});

t.test('reasons name the signal values the rule read', async (t) => {
  const rs = compile({
    'policy.yaml': POLICY,
    'a.yaml':
      'rules:\n  - { id: tor, description: d, when: "ip.tor && !device.known", then: { min_action: ACTIVE_3D } }\n',
  });
  const decision = evaluate(rs, { signals: { ...returning, 'ip.tor': true, 'device.known': false }, now: NOW });
  t.same(decision.reasons, [{ rule: 'tor', because: 'device.known=false, ip.tor=true' }]);
  t.equal(decision.ruleset, rs.hash);
});

t.test('reasons read request.purpose_class as the vocabulary classes the purpose, not as supplied', async (t) => {
  const rs = compile({
    'policy.yaml': POLICY,
    'purposes.yaml': 'purposes:\n  login: normal\n  transfer: sensitive\n',
    'a.yaml': [
      'rules:',
      '  - { id: sensitive, description: d, when: "request.purpose_class == \'sensitive\'", then: { score: 20 } }',
      '  - { id: watch, description: d, mode: shadow, when: "request.purpose_class != \'normal\'", then: { min_action: ACTIVE_3D }, expires: "2030-01-01" }',
      '',
    ].join('\n'),
  });
  for (const supplied of [undefined, 'normal', 'undeclared']) {
    const signals: Signals = { ...returning, 'request.purpose': 'transfer' };
    if (supplied) (signals as Record<string, unknown>)['request.purpose_class'] = supplied;
    const decision = evaluate(rs, { signals, now: NOW });
    t.same(
      decision.reasons,
      [{ rule: 'sensitive', because: 'request.purpose_class="sensitive"' }],
      `supplied ${supplied}: the rule fired on the vocabulary's class and says so`,
    );
    t.same(
      decision.shadow.map((s) => s.because),
      ['request.purpose_class="sensitive"'],
      `supplied ${supplied}: so does the shadow rule`,
    );
    t.same(decision.unknown, [], `supplied ${supplied}: nothing unknown`);
  }
  // Without a purpose there is no class to derive: a supplied one is read as given.
  const { 'request.purpose': _purpose, ...withoutPurpose } = returning as Record<string, unknown>;
  const bare = evaluate(rs, {
    signals: { ...withoutPurpose, 'request.purpose_class': 'sensitive' } as Signals,
    now: NOW,
  });
  t.same(
    bare.reasons.map((r) => r.because),
    ['request.purpose_class="sensitive"'],
  );
});

t.test('evaluate never throws, even on a malformed ruleset object', async (t) => {
  const broken = { hash: 'x', policy: undefined, rules: [] } as unknown as CompiledRuleset;
  const decision = evaluate(broken, { signals: returning, now: NOW });
  t.equal(decision.action, 'PASSIVE');
  t.ok(decision.degraded.includes('rules'));
});
