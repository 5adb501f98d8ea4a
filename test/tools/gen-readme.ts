/** Regenerates the generated sections of the documents (`npm run docs`): the signal table in rules/README.md. */
import { readFileSync, writeFileSync } from 'node:fs';
import { signalTableMarkdown } from '../../src/engine/signals.js';

/** The rule author's page, beside the rules that read the signals. */
export const SIGNALS_PAGE = 'rules/README.md';

export function withGeneratedSections(page: string): string {
  return page.replace(
    /(<!-- signals:start -->)[\s\S]*?(<!-- signals:end -->)/,
    (_all, start: string, end: string) => `${start}\n${signalTableMarkdown()}\n${end}`,
  );
}

if (process.argv[1]?.endsWith('gen-readme.ts')) {
  writeFileSync(SIGNALS_PAGE, withGeneratedSections(readFileSync(SIGNALS_PAGE, 'utf8')));
}
