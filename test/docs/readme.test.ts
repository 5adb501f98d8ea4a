import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { CONFIG_VARIABLES } from '../../src/config.js';
import { SIGNALS_PAGE, withGeneratedSections } from '../tools/gen-readme.js';

/**
 * The documents by audience: the README for a newcomer, and a page beside what each other reader works
 * on. These checks keep the moves honest: the generated parts stay generated, every variable stays
 * documented, no link dangles, and the README stays short enough to read.
 */
const read = (file: string) => readFileSync(file, 'utf8');
const readme = read('README.md');
const OPERATOR_PAGE = 'data/ops/README.md';
const AUDIENCE_PAGES = [
  OPERATOR_PAGE,
  'data/ops/SECURITY.md',
  SIGNALS_PAGE,
  'src/routes/README.md',
  'src/didit/README.md',
  'test/bench/README.md',
  'test/reliability/README.md',
];
const SKIPPED_DIRS = new Set(['node_modules', 'dist', '.git', 'coverage', '.tap']);

function markdownFiles(dir = '.'): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return SKIPPED_DIRS.has(entry.name) ? [] : markdownFiles(full);
    return entry.name.endsWith('.md') ? [full] : [];
  });
}

/** Code is not prose: links and headings inside fences or backticks are examples, not navigation. */
const withoutFences = (text: string) => text.replace(/^```[\s\S]*?^```/gm, '');

/** GitHub's heading anchors (github-slugger): inline markup dropped, lower case, punctuation gone, spaces to hyphens, repeats numbered. */
export function anchorsOf(text: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const match of withoutFences(text).matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const plain = match[1]!.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/[`*_]/g, (c) => (c === '_' ? '_' : ''));
    const base = plain
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
      .replace(/ /g, '-');
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  }
  return anchors;
}

/** Relative link targets of a page: [text](target), skipping URLs with a scheme and anything in code. */
export function relativeLinks(text: string): string[] {
  const prose = withoutFences(text).replace(/`[^`\n]*`/g, '``');
  return [...prose.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)]
    .map((m) => m[1]!)
    .filter((target) => !/^[a-z][a-z0-9+.-]*:/i.test(target));
}

/** What is wrong with one link from `from`, or undefined when it resolves to a file (and heading). */
export function brokenLink(from: string, target: string): string | undefined {
  const [file = '', anchor] = target.split('#');
  const resolved = file === '' ? from : path.normalize(path.join(path.dirname(from), decodeURIComponent(file)));
  if (resolved.startsWith('..')) return `${target}: leaves the repository`;
  let isFile: boolean;
  try {
    isFile = statSync(resolved).isFile();
  } catch {
    return `${target}: ${resolved} does not exist`;
  }
  if (anchor === undefined) return undefined;
  if (!isFile || !resolved.endsWith('.md')) return `${target}: an anchor into something that is not a markdown page`;
  return anchorsOf(read(resolved)).has(anchor) ? undefined : `${target}: ${resolved} has no heading #${anchor}`;
}

t.test('the signal table in rules/README.md matches src/engine/signals.ts (run npm run docs)', async (t) => {
  const page = read(SIGNALS_PAGE);
  t.ok(page.includes('<!-- signals:start -->'), 'the rule author page has the generated section');
  t.ok(page.includes('| `device.known` | bool |'), 'the table is filled in');
  t.equal(withGeneratedSections(page), page);
  for (const other of markdownFiles().filter((file) => file !== SIGNALS_PAGE))
    t.notOk(read(other).includes('<!-- signals:start -->'), `${other} has no second copy`);
});

t.test('every configuration variable is documented in the operator page, once, as a row of its table', async (t) => {
  const page = read(OPERATOR_PAGE);
  for (const name of CONFIG_VARIABLES) t.equal(page.split(`\n| \`${name}\` |`).length - 1, 1, name);
});

t.test('every relative link in every markdown page resolves to a file, and an anchor to a heading', async (t) => {
  const files = markdownFiles();
  t.ok(files.length >= AUDIENCE_PAGES.length + 1, `${files.length} pages read`);
  let links = 0;
  for (const file of files) {
    for (const target of relativeLinks(read(file))) {
      links++;
      const problem = brokenLink(file, target);
      if (problem) t.fail(`${file}: ${problem}`);
    }
  }
  t.ok(links > 30, `${links} links checked`);
});

t.test('the link checker itself: it tells a broken file, a broken anchor and a good link apart', async (t) => {
  t.equal(brokenLink('README.md', 'rules/README.md#signals'), undefined);
  t.equal(brokenLink('data/ops/README.md', '../../src/didit/README.md'), undefined);
  t.match(brokenLink('README.md', 'rules/NOPE.md'), /does not exist/);
  t.match(brokenLink('README.md', 'rules/README.md#no-such-heading'), /no heading/);
  t.match(brokenLink('README.md', '../outside.md'), /leaves the repository/);
  t.same(
    [...anchorsOf('# A `code` heading: (with) punctuation, ok?\n## Same\n## Same\n```\n# not a heading\n```\n')],
    ['a-code-heading-with-punctuation-ok', 'same', 'same-1'],
  );
  t.same(relativeLinks('[a](x.md) [b](https://e.org) `[c](y.md)`\n```\n[d](z.md)\n```\n'), ['x.md']);
});

t.test(
  'the README is a newcomer page: short, with the loop, the policy, the API and links to every other audience',
  async (t) => {
    const bytes = Buffer.byteLength(readme);
    t.ok(bytes <= 14 * 1024, `README.md is ${bytes} bytes (at most 14 KiB: details belong on the audience pages)`);
    const headings = [...readme.matchAll(/^##+ (.+)$/gm)].map((m) => m[1]);
    for (const heading of [
      'Quick start',
      'The step-up loop on the simulator',
      'The default policy',
      'API',
      'Architecture',
      'Development',
    ])
      t.ok(headings.includes(heading), `has "${heading}"`);
    t.match(readme, /npm ci && npm start/, 'the first quick-start command');
    t.match(readme, /npm ci && npm test/, 'the second quick-start command');
    const linked = new Set(relativeLinks(readme).map((target) => target.split('#')[0]));
    for (const page of AUDIENCE_PAGES) t.ok(linked.has(page), `links ${page}`);
  },
);

t.test(
  'the bench page carries the figures the bench writes; the reliability page names tests by what they prove',
  async (t) => {
    const bench = read('test/bench/README.md');
    const figures = /<!-- bench:start -->([\s\S]*?)<!-- bench:end -->/.exec(bench)?.[1] ?? '';
    t.match(figures, /Measured \d{4}-\d\d-\d\d with `npm run bench`/, 'a dated run');
    t.match(figures, /^\| redis \| \d+/m, 'the table of the run');
    t.ok(read('test/bench/run.ts').includes("'test/bench/README.md'"), 'the bench writes this page');
    const reliability = read('test/reliability/README.md');
    t.notMatch(reliability, /\bT\d{2}\b|§\d/, 'no codes of a document outside the repository');
    for (const test of readdirSync('test/reliability').filter((f) => f.endsWith('.test.ts')))
      t.ok(reliability.includes(`\`${test}\``), `${test} is on the page`);
  },
);
