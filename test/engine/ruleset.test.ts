import t from 'tap';
import { formatLoadError } from '../../src/engine/ruleset.js';
import { compileFromTexts } from '../../src/rules-io/load.js';

const POLICY =
  'policy:\n  score_bands: [{ min_score: 0, action: SKIP }]\n  cold_start_floor: PASSIVE\n  degraded_floor: PASSIVE\n';

function errorsOf(text: string, extra: Record<string, string> = {}) {
  const result = compileFromTexts([
    { name: 'policy.yaml', text: POLICY },
    { name: 'bad.yaml', text },
    ...Object.entries(extra).map(([name, text]) => ({ name, text })),
  ]);
  if (result.ok) throw new Error('expected the ruleset to be rejected');
  return result.errors;
}

t.test('a YAML syntax error is reported with file and line', async (t) => {
  const [error] = errorsOf('rules:\n  - id: a\n    description: d\n    when: "true"\n    then: { score: 1\n');
  t.equal(error?.file, 'bad.yaml');
  t.ok((error?.line ?? 0) >= 5, `line ${error?.line}`);
  t.match(error?.reason, /^YAML:/);
});

t.test('an unknown signal is rejected at load with the rule id and line', async (t) => {
  const [error] = errorsOf(
    'rules:\n  - id: ok\n    description: d\n    when: "ip.known"\n    then: { score: 1 }\n  - id: misspelt\n    description: d\n    when: "device.knwon"\n    then: { score: 1 }\n',
  );
  t.equal(error?.rule, 'misspelt');
  t.equal(error?.line, 6);
  t.match(error?.reason, /knwon/);
  t.match(formatLoadError(error!), /^bad\.yaml:6 \[misspelt\]: /);
});

t.test('a type error is rejected at load', async (t) => {
  const [error] = errorsOf(
    'rules:\n  - { id: typed, description: d, when: "device.seen_count == \\"three\\"", then: { score: 1 } }\n',
  );
  t.equal(error?.rule, 'typed');
  t.match(error?.reason, /type error/);
});

t.test('a non-boolean condition is rejected', async (t) => {
  const [error] = errorsOf(
    'rules:\n  - { id: count, description: d, when: "device.seen_count + 1", then: { score: 1 } }\n',
  );
  t.match(error?.reason, /bool/);
});

t.test('duplicate ids are rejected, also across files', async (t) => {
  const errors = errorsOf('rules:\n  - { id: twin, description: d, when: "true", then: { score: 1 } }\n', {
    'other.yaml': 'rules:\n  - { id: twin, description: d, when: "false", then: { score: 1 } }\n',
  });
  t.ok(errors.some((e) => e.rule === 'twin' && /duplicate/.test(e.reason)));
});

t.test('unknown fields are rejected', async (t) => {
  const [error] = errorsOf(
    'rules:\n  - { id: extra, description: d, when: "true", then: { score: 1 }, severity: high }\n',
  );
  t.equal(error?.rule, 'extra');
  t.match(error?.reason, /severity|Unrecognized/i);
});

t.test('prototype-pollution keys in a rule file are rejected and pollute nothing', async (t) => {
  const errors = errorsOf(
    'rules:\n  - id: evil\n    description: d\n    when: "true"\n    then: { score: 1 }\n    __proto__: { polluted: true }\n',
  );
  t.ok(errors.length > 0);
  t.equal(({} as Record<string, unknown>).polluted, undefined);
});

t.test('a shadow rule must carry expires', async (t) => {
  const [error] = errorsOf('rules:\n  - { id: s, description: d, when: "true", then: { score: 1 }, mode: shadow }\n');
  t.match(error?.reason, /expires/);
});

t.test('negative scores are refused (a risk signal may never lower the decision)', async (t) => {
  const [error] = errorsOf('rules:\n  - { id: neg, description: d, when: "true", then: { score: -10 } }\n');
  t.equal(error?.rule, 'neg');
});

t.test('a policy whose bands step down the ladder is refused', async (t) => {
  const result = compileFromTexts([
    {
      name: 'policy.yaml',
      text: 'policy:\n  score_bands: [{ min_score: 0, action: PASSIVE }, { min_score: 10, action: SKIP }]\n  cold_start_floor: PASSIVE\n  degraded_floor: PASSIVE\n',
    },
  ]);
  t.equal(result.ok, false);
});

t.test('empty files and files over the size limit are refused', async (t) => {
  t.ok(errorsOf('   \n').some((e) => /empty/.test(e.reason)));
  t.ok(errorsOf(`# ${'x'.repeat(300 * 1024)}\n`).some((e) => /larger/.test(e.reason)));
});

t.test('expression size and nesting limits hold at load', async (t) => {
  const deep = `${'('.repeat(60)}true${')'.repeat(60)}`;
  const errors = errorsOf(`rules:\n  - { id: deep, description: d, when: "${deep}", then: { score: 1 } }\n`);
  t.equal(errors[0]?.rule, 'deep');
});

t.test('matches() patterns are checked with recheck at load: catastrophic backtracking is refused', async (t) => {
  for (const pattern of ['^(a|a)*$', '(a+)+$', '^(\\\\w+\\\\s?)*$']) {
    const [error] = errorsOf(
      `rules:\n  - { id: rx, description: d, when: 'ua.browser.matches("${pattern}")', then: { score: 1 } }\n`,
    );
    t.equal(error?.rule, 'rx', pattern);
    t.match(error?.reason, /catastrophic|rejected/, pattern);
  }
  const [nonLiteral] = errorsOf(
    'rules:\n  - { id: rx, description: d, when: "ua.browser.matches(ua.os)", then: { score: 1 } }\n',
  );
  t.match(nonLiteral?.reason, /literal/);
  const safe = compileFromTexts([
    { name: 'policy.yaml', text: POLICY },
    {
      name: 'ok.yaml',
      text: `rules:\n  - { id: rx, description: d, when: 'ua.browser.matches("^(Chrome|Firefox)$")', then: { score: 1 } }\n`,
    },
  ]);
  t.equal(safe.ok, true, 'a linear pattern is accepted');
});

t.test(
  'every spelling of a matches() call is found in the parse tree and checked (not only `.matches("…")`)',
  async (t) => {
    // YAML block scalars keep the CEL text exactly as written.
    const rule = (when: string) =>
      `rules:\n  - id: rx\n    description: d\n    when: |-\n      ${when.replace(/\n/g, '\n      ')}\n    then: { score: 1 }\n`;
    const catastrophic = [
      'ua.browser.matches ("^(a+)+$")',
      'ua.browser.matches\n("^(a+)+$")',
      'ua.browser.\nmatches("^(a+)+$")',
      'matches(ua.browser, "^(a+)+$")',
      'ua.browser.matches("""^(a+)+$""")',
      "ua.browser.matches(r'^(a+)+$')",
      'ua.browser.matches("\\x5e(a+)+$")',
      'ua.os == "x" || ua.browser.matches("^ok$") && ua.browser.matches ("(a|a)*$")',
    ];
    for (const when of catastrophic) {
      const [error] = errorsOf(rule(when));
      t.equal(error?.rule, 'rx', JSON.stringify(when));
      t.match(error?.reason, /catastrophic|rejected/, `${JSON.stringify(when)}: ${error?.reason}`);
    }
    for (const when of [
      'ua.browser.matches("" + "^(a+)+$")',
      'matches(ua.browser, ua.os)',
      'ua.browser.matches(ua.os + "x")',
    ]) {
      const [error] = errorsOf(rule(when));
      t.match(error?.reason, /literal/, JSON.stringify(when));
    }
    const escaped = compileFromTexts([
      { name: 'policy.yaml', text: POLICY },
      { name: 'ok.yaml', text: rule('ua.browser.matches("\\x5e(Chrome|Firefox)$")') },
    ]);
    t.equal(escaped.ok, true, 'an escaped linear pattern is read as CEL reads it, not refused or crashed on');
  },
);
