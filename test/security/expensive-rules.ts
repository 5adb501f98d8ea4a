/**
 * A generator of the most expensive rulesets we can build within the request limits: each class of
 * work a CEL rule can ask for (nested comprehensions, wide iterations, big literals, deep nesting,
 * long `+` chains, many arguments, value reuse, slow regex checks, many rules) at several sizes.
 * Every body is small enough to pass the size limits, so only the work budget can refuse it.
 */
export const POLICY =
  'policy:\n  score_bands: [{ min_score: 0, action: SKIP }]\n  cold_start_floor: PASSIVE\n  degraded_floor: PASSIVE\n';

export interface ExpensiveCase {
  readonly label: string;
  readonly cls: string;
  /** The rule id that must be named in the refusal (absent: a ruleset-level refusal). */
  readonly rule?: string;
  readonly files: Array<{ name: string; text: string }>;
}

const list = (n: number, item = (i: number) => String(i % 10)): string =>
  `[${Array.from({ length: n }, (_, i) => item(i)).join(',')}]`;
const quote = (when: string): string => JSON.stringify(when);
const ruleFile = (rules: Array<{ id: string; when: string }>): string =>
  `rules:\n${rules.map((r) => `  - { id: ${r.id}, description: d, when: ${quote(r.when)}, then: { score: 1 } }`).join('\n')}\n`;
const one = (cls: string, label: string, when: string): ExpensiveCase => {
  const id = `${cls}-${label}`
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
  return {
    cls,
    label,
    rule: id,
    files: [
      { name: 'policy.yaml', text: POLICY },
      { name: 'attack.yaml', text: ruleFile([{ id, when }]) },
    ],
  };
};

const MACROS = ['all', 'exists', 'exists_one', 'map', 'filter'] as const;

/** A bool expression of `depth` comprehensions nested inside each other over `items`. */
export function nested(macros: readonly string[], depth: number, items: string): string {
  let inner = 'v0 >= 0';
  for (let level = 1; level <= depth; level++) {
    const macro = macros[(level - 1) % macros.length]!;
    const v = `v${level}`;
    const body = inner.replaceAll('v0', v);
    if (macro === 'map' || macro === 'filter') inner = `size(${items}.${macro}(${v}, ${body})) > 0`;
    else inner = `${items}.${macro}(${v}, ${body})`;
  }
  return inner;
}

export function expensiveCases(): ExpensiveCase[] {
  const cases: ExpensiveCase[] = [];
  const ten = list(10);
  // The reported probe: eight nested comprehensions over ten elements, here for every macro.
  for (const macro of MACROS)
    for (const depth of [3, 4, 6, 8]) cases.push(one('nesting', `${macro}-x${depth}`, nested([macro], depth, ten)));
  cases.push(one('nesting', 'mixed-x8', nested(MACROS, 8, ten)));
  cases.push(one('nesting', 'over-a-signal-map-x3', nested(['exists'], 3, 'request.attributes')));
  // Two levels (allowed) but wide: n² iterations.
  for (const n of [60, 100, 150, 256])
    cases.push(one('wide', `two-levels-of-${n}`, nested(['exists', 'all'], 2, list(n))));
  cases.push(
    one(
      'wide',
      'split-of-a-long-literal',
      `"${'a,'.repeat(800)}a".split(",").exists(p, ${list(60)}.exists(q, p == string(q)))`,
    ),
  );
  // Literals over cel-js's parse limits.
  for (const n of [257, 400, 900]) cases.push(one('list-literal', `${n}-elements`, `size(${list(n)}) > 0`));
  for (const n of [65, 120, 190])
    cases.push(
      one('map-literal', `${n}-entries`, `size({${Array.from({ length: n }, (_, i) => `${i}:0`).join(',')}}) > 0`),
    );
  // More than 400 AST nodes: long `+` chains of ints and of strings.
  for (const n of [201, 400, 600])
    cases.push(one('plus-chain', `ints-${n}`, `${Array.from({ length: n }, () => '1').join('+')} > 0`));
  for (const n of [201, 300])
    cases.push(one('plus-chain', `strings-${n}`, `size(${Array.from({ length: n }, () => '"ab"').join('+')}) > 0`));
  // Deep nesting of every nesting construct.
  // A chain of `!` does not nest in cel-js's depth count: it is bounded by the node count instead.
  for (const n of [401, 1000]) cases.push(one('deep', `not-${n}`, `${'!'.repeat(n)}true`));
  for (const depth of [33, 60]) {
    cases.push(one('deep', `parens-${depth}`, `${'('.repeat(depth)}true${')'.repeat(depth)}`));
    cases.push(one('deep', `lists-${depth}`, `size(${'['.repeat(depth)}1${']'.repeat(depth)}) > 0`));
    cases.push(one('deep', `ternary-${depth}`, `${'true ? ('.repeat(depth)}true${') : false'.repeat(depth)}`));
    cases.push(one('deep', `negation-${depth}`, `${'-('.repeat(depth)}1${')'.repeat(depth)} < 0`));
  }
  cases.push(
    one('arguments', 'twelve-arguments', `"a".startsWith(${Array.from({ length: 12 }, () => '"a"').join(',')})`),
  );
  // Value reuse doubles a list per level (2^20 elements at twenty levels).
  const doubling = Array.from({ length: 20 }, (_, i) => i).reduceRight(
    (inner, i) => `cel.bind(b${i}, ${i === 0 ? '[1, 1]' : `b${i - 1} + b${i - 1}`}, ${inner})`,
    'size(b19) > 0',
  );
  cases.push(one('reuse', 'cel-bind-doubling', doubling));
  cases.push(one('reuse', 'cel-bind-once', 'cel.bind(b, [1, 2, 3, 4], size(b + b + b + b) > 0)'));
  // Regexes whose safety check is slow: each takes recheck past its per-pattern budget.
  const letters = 'abcdefghijklmnop';
  const slow = (i: number): string => `(?:${letters[i]}{1,50}${letters[i + 1]}{1,50}){1,50}z`;
  cases.push(one('regex', 'one-slow-pattern', `request.purpose.matches('${slow(0)}')`));
  cases.push({
    cls: 'regex',
    label: 'ten-slow-patterns-in-ten-rules',
    files: [
      { name: 'policy.yaml', text: POLICY },
      {
        name: 'attack.yaml',
        text: ruleFile(
          Array.from({ length: 10 }, (_, i) => ({ id: `slow-${i}`, when: `request.purpose.matches('${slow(i)}')` })),
        ),
      },
    ],
  });
  // Many rules: each within its own budget, too many or too costly together.
  cases.push({
    cls: 'many-rules',
    label: '301-tiny-rules',
    files: [
      { name: 'policy.yaml', text: POLICY },
      { name: 'attack.yaml', text: ruleFile(Array.from({ length: 301 }, (_, i) => ({ id: `r${i}`, when: 'ip.tor' }))) },
    ],
  });
  cases.push({
    cls: 'many-rules',
    label: '7-rules-of-8000-steps',
    files: [
      { name: 'policy.yaml', text: POLICY },
      {
        name: 'attack.yaml',
        text: ruleFile(
          Array.from({ length: 7 }, (_, i) => ({ id: `w${i}`, when: nested(['exists', 'exists'], 2, list(40)) })),
        ),
      },
    ],
  });
  return cases;
}
