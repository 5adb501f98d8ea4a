import { readFileSync } from 'node:fs';
import t from 'tap';
import { CONFIG_VARIABLES } from '../../src/config.js';
import { withGeneratedSections } from '../tools/gen-readme.js';

const readme = readFileSync('README.md', 'utf8');

t.test('the README signal table matches src/engine/signals.ts (run npm run docs)', async (t) => {
  t.ok(readme.includes('<!-- signals:start -->'), 'the README has the generated section');
  t.ok(readme.includes('| `device.known` | bool |'), 'the table is filled in');
  t.equal(withGeneratedSections(readme), readme);
});

t.test('every configuration variable is documented in the README', async (t) => {
  for (const name of CONFIG_VARIABLES) t.ok(readme.includes(`\`${name}\``), name);
});
