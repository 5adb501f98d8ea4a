import { readFileSync } from 'node:fs';
import t from 'tap';
import { COMMAND_LINE_FLAGS, missingCommandLineFlags } from '../src/node-flags.js';

t.test('a flag counts as given in either spelling and with any value', async (t) => {
  t.same(missingCommandLineFlags([]), COMMAND_LINE_FLAGS);
  t.same(missingCommandLineFlags(['--import', 'tsx', '--max-semi-space-size=16']), COMMAND_LINE_FLAGS);
  t.same(missingCommandLineFlags(['--min-semi-space-size=16']), []);
  t.same(missingCommandLineFlags(['--min_semi_space_size=8']), [], 'an operator may choose another size');
  t.same(missingCommandLineFlags(['--min-semi-space-size', '16']), [], 'as two words');
  t.same(missingCommandLineFlags(['--min-semi-space-size=0']), COMMAND_LINE_FLAGS, "0 is V8's unset");
  t.same(missingCommandLineFlags(['--min-semi-space-size', '0']), COMMAND_LINE_FLAGS);
});

t.test('npm start passes every flag the entry point expects', async (t) => {
  const start = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts
    .start!;
  const argv = start.split(/\s+/);
  t.equal(argv[0], 'node');
  t.same(missingCommandLineFlags(argv.slice(1, argv.indexOf('dist/server.js'))), [], start);
});
