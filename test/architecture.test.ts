import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';

/**
 * The layers, lowest first. A folder may import itself and the folders listed for it; the root's
 * foundation files (errors, metrics, logger, config) only where listed; the root's composition files
 * (app, compose, open-store, server, cli) from nowhere inside a folder.
 */
const ALLOWED: Record<string, readonly string[]> = {
  lib: [],
  engine: [],
  store: ['lib', 'engine'],
  signals: ['lib', 'engine', 'store'],
  'rules-io': ['lib', 'engine'],
  'data-io': ['lib', 'signals', 'config.ts'],
  didit: ['lib', 'engine', 'store'],
  events: ['lib', 'engine', 'store'],
  routes: ['lib', 'engine', 'store', 'signals', 'rules-io', 'didit', 'events', 'errors.ts', 'metrics.ts'],
};
const FOUNDATION = new Set(['errors.ts', 'metrics.ts', 'logger.ts', 'config.ts']);
/** The pure engine: nothing but itself, CEL and zod. */
const ENGINE_PACKAGES = new Set(['@marcbachmann/cel-js', 'zod']);
const FILE_SYSTEM = /^(node:)?fs(\/promises)?$/;

const src = path.resolve('src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}

/** Static imports, re-exports and dynamic import() calls, comments stripped first. */
export function importsOf(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const found: string[] = [];
  for (const match of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm))
    found.push(match[1]!);
  return found;
}

/** 'engine', 'routes', … for a file inside a folder; the file name for a root file. */
function placeOf(file: string): string {
  return path.relative(src, file).split(path.sep)[0]!;
}

export function violations(files: ReadonlyArray<{ file: string; text: string }>): string[] {
  const problems: string[] = [];
  for (const { file, text } of files) {
    const from = placeOf(file);
    const inFolder = from in ALLOWED;
    for (const spec of importsOf(text)) {
      if (!spec.startsWith('.')) {
        if (from === 'engine' && !ENGINE_PACKAGES.has(spec))
          problems.push(`${path.relative(src, file)}: the engine imports ${spec}`);
        if ((from === 'signals' || from === 'engine') && FILE_SYSTEM.test(spec))
          problems.push(`${path.relative(src, file)}: ${from}/ touches the file system`);
        continue;
      }
      const target = path.resolve(path.dirname(file), spec);
      if (!target.startsWith(src + path.sep)) {
        problems.push(`${path.relative(src, file)}: imports ${spec} from outside src/`);
        continue;
      }
      const to = placeOf(target.replace(/\.js$/, '.ts'));
      if (!inFolder || to === from) continue;
      if (!(to in ALLOWED) && !FOUNDATION.has(to))
        problems.push(`${path.relative(src, file)}: a folder imports the composition file ${to}`);
      else if (!ALLOWED[from]!.includes(to))
        problems.push(
          `${path.relative(src, file)}: ${from}/ imports ${to}${to in ALLOWED ? '/' : ''}, which it may not`,
        );
    }
  }
  return problems;
}

const files = sourceFiles(src).map((file) => ({ file, text: readFileSync(file, 'utf8') }));

t.test('every folder imports only itself and the layers below it', async (t) => {
  t.ok(files.length > 50, `read ${files.length} source files`);
  t.same(violations(files), []);
});

t.test('every folder of src/ has a declared place in the layers', async (t) => {
  const folders = readdirSync(src, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name);
  t.same(
    folders.filter((f) => !(f in ALLOWED)),
    [],
    'a new folder needs a line in ALLOWED',
  );
});

t.test('the check catches each kind of violation (so it cannot pass vacuously)', async (t) => {
  const at = (name: string) => path.join(src, name);
  const cases: Array<[string, string, RegExp]> = [
    ['engine/x.ts', "import { Redis } from 'ioredis';", /the engine imports ioredis/],
    ['engine/x.ts', "import { readFile } from 'node:fs/promises';", /engine\/ touches the file system/],
    ['signals/x.ts', "import fs from 'node:fs';", /signals\/ touches the file system/],
    ['signals/x.ts', "const m = await import('fs');", /signals\/ touches the file system/],
    ['store/x.ts', "import type { Enriched } from '../signals/enrich.js';", /store\/ imports signals\//],
    ['engine/x.ts', "export { a } from '../store/store.js';", /engine\/ imports store\//],
    ['didit/x.ts', "import { buildApp } from '../app.js';", /composition file app\.ts/],
    ['signals/x.ts', "import { RiskError } from '../errors.js';", /signals\/ imports errors\.ts/],
  ];
  for (const [name, text, expected] of cases) {
    const found = violations([{ file: at(name), text }]);
    t.match(found.join('\n'), expected, `${name}: ${text}`);
  }
  t.same(
    violations([
      {
        file: at('routes/x.ts'),
        text: "import { evaluate } from '../engine/evaluate.js';\n// import x from '../app.js';",
      },
    ]),
    [],
  );
});

/**
 * Tests mirror src/: a test of a module sits in the test folder named after the module's folder, so a
 * reader finds it by the path. Beside them, folders named for a concern that crosses the layers, and
 * the test support code.
 */
const CONCERN_FOLDERS = new Set(['reliability', 'security', 'privacy', 'ops', 'docs']);
const SUPPORT_FOLDERS = new Set(['helpers', 'tools', 'bench']);

export function misplacedTests(
  testDirs: string[],
  rootTests: string[],
  srcFolders: string[],
  srcRootFiles: string[],
): string[] {
  const problems: string[] = [];
  for (const dir of testDirs) {
    if (!srcFolders.includes(dir) && !CONCERN_FOLDERS.has(dir) && !SUPPORT_FOLDERS.has(dir))
      problems.push(`test/${dir}/ mirrors no folder of src/ and names no declared concern`);
  }
  for (const file of rootTests) {
    const module = file.replace(/\.test\.ts$/, '.ts');
    if (file !== 'architecture.test.ts' && !srcRootFiles.includes(module))
      problems.push(`test/${file} tests no root file of src/ (src/${module})`);
  }
  return problems;
}

t.test('test folders mirror src/ folders or name a concern that crosses them', async (t) => {
  const srcEntries = readdirSync(src, { withFileTypes: true });
  const testEntries = readdirSync('test', { withFileTypes: true });
  const problems = misplacedTests(
    testEntries.filter((d) => d.isDirectory()).map((d) => d.name),
    testEntries.filter((d) => d.isFile() && d.name.endsWith('.test.ts')).map((d) => d.name),
    srcEntries.filter((d) => d.isDirectory()).map((d) => d.name),
    srcEntries.filter((d) => d.isFile()).map((d) => d.name),
  );
  t.same(problems, []);
  t.match(
    misplacedTests(['rules', 'store'], ['cli.test.ts', 'service.test.ts'], ['store'], ['cli.ts']).join('\n'),
    /test\/rules\/ mirrors no folder[\s\S]*test\/service\.test\.ts tests no root file/,
    'the check names each kind',
  );
});

t.test('the entry points set the V8 flags before anything else is imported', async (t) => {
  // An import above it would run first (ES modules evaluate in order) and allocate under V8's defaults.
  for (const file of ['src/server.ts', 'test/bench/servers.ts']) {
    const first = importsOf(readFileSync(file, 'utf8'))[0] ?? '';
    t.match(first, /\/v8-flags\.js$/, `${file} imports v8-flags first`);
  }
});
