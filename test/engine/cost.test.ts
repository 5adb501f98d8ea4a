import t from 'tap';
import { celEnvironment } from '../../src/engine/cel-env.js';
import { COST_LIMITS, estimateCost } from '../../src/engine/cost.js';
import { compileFromTexts, readRuleDir } from '../../src/rules-io/load.js';
import { expensiveCases, nested, POLICY } from '../security/expensive-rules.js';

const rule = (id: string, when: string) =>
  `rules:\n  - { id: ${id}, description: d, when: ${JSON.stringify(when)}, then: { score: 1 } }\n`;
const compile = (when: string) =>
  compileFromTexts([
    { name: 'policy.yaml', text: POLICY },
    { name: 'r.yaml', text: rule('probe', when) },
  ]);

t.test('every generated expensive ruleset is refused at compile time as too expensive, naming the rule', async (t) => {
  const cases = expensiveCases();
  const classes = new Set(cases.map((c) => c.cls));
  t.ok(cases.length >= 50 && classes.size >= 10, `${cases.length} cases in ${classes.size} classes`);
  for (const c of cases) {
    const result = compileFromTexts(c.files);
    if (result.ok) {
      t.fail(`${c.cls}/${c.label} was accepted`);
      continue;
    }
    const expensive = result.errors.filter((e) => e.tooExpensive);
    t.ok(expensive.length > 0, `${c.cls}/${c.label}: ${result.errors[0]?.reason}`);
    if (c.rule)
      t.ok(
        expensive.some((e) => e.rule === c.rule && e.file === 'attack.yaml'),
        `${c.cls}/${c.label} names rule ${c.rule}`,
      );
    t.ok(
      expensive.every((e) => /too expensive/.test(e.reason)),
      `${c.cls}/${c.label}: the reason says so`,
    );
  }
});

t.test('the reported probe (eight nested comprehensions over ten elements) is refused for its nesting', async (t) => {
  const result = compile(nested(['all'], 8, '[0,1,2,3,4,5,6,7,8,9]'));
  t.notOk(result.ok);
  if (!result.ok) t.match(result.errors[0]?.reason, /comprehensions nested 8 deep \(at most 2\)/);
});

t.test('ordinary rules stay well inside the budget and are accepted', async (t) => {
  const files = await readRuleDir('rules');
  const shipped = compileFromTexts(files);
  t.ok(shipped.ok, 'the shipped rules compile');
  if (shipped.ok) {
    const worst = Math.max(...shipped.ruleset.rules.map((r) => r.cost));
    t.ok(worst < COST_LIMITS.maxCost / 100, `costliest shipped rule: ${worst} steps`);
  }
  for (const when of [
    'request.attributes.exists(k, k == "vip")',
    '[1, 2, 3].exists(x, [4, 5].all(y, x < y))',
    'request.purpose in ["a", "b"] && !ip.tor',
    'size(request.attributes) > 2 || request.purpose.matches("^pay_[a-z]+$")',
    nested(['exists', 'all'], 2, '[0,1,2,3,4,5,6,7,8,9]'),
  ]) {
    const result = compile(when);
    t.ok(result.ok, `accepted: ${when}${result.ok ? '' : ` (${result.errors[0]?.reason})`}`);
  }
});

t.test('the estimate grows with what runs: iterations × body, nested levels multiply', async (t) => {
  const cost = (when: string) => estimateCost(celEnvironment.parse(when).ast).cost;
  const one = cost('[1,2,3,4,5,6,7,8,9,10].exists(x, x > 1)');
  const two = cost('[1,2,3,4,5,6,7,8,9,10].exists(x, [1,2,3,4,5,6,7,8,9,10].exists(y, y > x))');
  t.ok(one >= 10 && one < 100, `one level over ten: ${one}`);
  t.ok(two >= 10 * one, `two levels over ten: ${two}`);
  t.equal(estimateCost(celEnvironment.parse('ip.tor').ast).nesting, 0);
  t.equal(estimateCost(celEnvironment.parse(nested(['map', 'filter', 'exists'], 3, '[1]')).ast).nesting, 3);
});

t.test('a measured worst accepted rule stays cheap when it runs', async (t) => {
  // Find the widest two-level rule the budget accepts, then time it: the budget is in real time too.
  let n = 2;
  while (
    compile(
      nested(
        ['exists', 'exists'],
        2,
        `[${Array(n + 1)
          .fill(1)
          .join(',')}]`,
      ),
    ).ok
  )
    n++;
  const result = compile(nested(['exists', 'exists'], 2, `[${Array(n).fill(1).join(',')}]`));
  t.ok(result.ok, `widest accepted: two levels over ${n} elements`);
  if (!result.ok) return;
  const run = result.ruleset.rules[0]!.run;
  for (let i = 0; i < 20; i++) run({});
  const started = performance.now();
  for (let i = 0; i < 20; i++) run({});
  const each = (performance.now() - started) / 20;
  t.comment(`worst accepted rule: ${result.ruleset.rules[0]!.cost} estimated steps, ${each.toFixed(2)} ms a run`);
  // Generous: ~1-2 ms on a quiet dev machine; this machine is shared with other test runs.
  t.ok(each < 50, `${each.toFixed(2)} ms a run`);
});
