/** Regenerates the generated sections of README.md (`npm run docs`). */
import { readFileSync, writeFileSync } from 'node:fs';
import { signalTableMarkdown } from '../../src/engine/signals.js';

export function withGeneratedSections(readme: string): string {
  return readme.replace(/(<!-- signals:start -->)[\s\S]*?(<!-- signals:end -->)/, (_all, start: string, end: string) => `${start}\n${signalTableMarkdown()}\n${end}`);
}

if (process.argv[1]?.endsWith('gen-readme.ts')) {
  const readme = readFileSync('README.md', 'utf8');
  writeFileSync('README.md', withGeneratedSections(readme));
}
