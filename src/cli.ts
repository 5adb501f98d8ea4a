#!/usr/bin/env node
/** `rules check | test | explain | replay`: the security team's tools, over files in git. */
import { formatLoadError } from './engine/ruleset.js';
import { loadRuleDir, readRuleDir } from './rules-io/load.js';
import { runRuleTests } from './rules-io/rule-tests.js';

function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

async function check(dir: string): Promise<number> {
  const result = await loadRuleDir(dir);
  if (!result.ok) {
    for (const error of result.errors) out(formatLoadError(error));
    out(`\n${result.errors.length} problem(s); the ruleset would be rejected`);
    return 1;
  }
  const now = Date.now();
  const expired = result.ruleset.rules.filter((r) => r.expiresAt !== undefined && r.expiresAt < now);
  for (const rule of expired) out(`${rule.file}:${rule.line} [${rule.id}]: expired; it no longer runs`);
  const shadow = result.ruleset.rules.filter((r) => r.mode === 'shadow').length;
  out(`ok: ${result.ruleset.rules.length} rules (${shadow} shadow, ${expired.length} expired), ruleset ${result.ruleset.hash}`);
  return 0;
}

async function test(dir: string): Promise<number> {
  const result = await loadRuleDir(dir);
  if (!result.ok) return check(dir);
  const report = runRuleTests(await readRuleDir(dir), result.ruleset);
  const width = Math.max(...report.cases.map((c) => c.file.length), 4);
  for (const c of report.cases) out(`${c.passed ? 'pass' : 'FAIL'}  ${c.file.padEnd(width)}  ${c.name}${c.passed ? '' : `\n        ${c.problems.join('\n        ')}`}`);
  for (const problem of report.problems) out(`FAIL  ${problem}`);
  const failed = report.cases.filter((c) => !c.passed).length + report.problems.length;
  out(`\n${report.cases.length - report.cases.filter((c) => !c.passed).length} passed, ${failed} failed`);
  return report.passed ? 0 : 1;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const dir = rest.find((a) => !a.startsWith('--')) ?? 'rules';
  switch (command) {
    case 'check':
      return check(dir);
    case 'test':
      return test(dir);
    default:
      out('usage: rules check [dir] | rules test [dir]');
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: Error) => {
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  },
);
