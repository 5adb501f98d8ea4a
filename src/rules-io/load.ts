import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { isMap, isSeq, LineCounter, parseDocument } from 'yaml';
import {
  compileRuleset,
  type CompileResult,
  type LoadError,
  type RegexGuard,
  type RuleSource,
} from '../engine/ruleset.js';
import { compileBypasses, type BypassIds } from './bypasses.js';
import { compilePurposes, isPurposesFile } from './purposes.js';
import { createRecheckGuard } from './regex-guard.js';
import type { RuleSandbox } from './rule-sandbox.js';

/** A rule file larger than this is refused before parsing (a 10 MB write must not stall a reload). */
export const MAX_RULE_FILE_BYTES = 256 * 1024;

export interface TextFile {
  readonly name: string;
  readonly text: string;
  /** Set by the directory reader for a file it refused to read because of its size. */
  readonly tooLarge?: boolean;
  /**
   * Set by the directory reader for a file that is not UTF-8: decoded, each invalid byte would be
   * U+FFFD, and a bypass's id could land on another user's (data/ops/SECURITY.md).
   */
  readonly notUtf8?: boolean;
}

export function isTestFile(name: string): boolean {
  return /\.test\.ya?ml$/.test(name);
}

export function isBypassFile(name: string): boolean {
  return /^bypasses\.ya?ml$/.test(path.basename(name));
}

/**
 * `fixtures.yaml`: the signal sets rule test cases start from (test-fixtures.ts). Test material only:
 * the service never loads it and it is not part of the ruleset hash, so editing it changes no decision.
 */
export function isFixturesFile(name: string): boolean {
  return /^fixtures\.ya?ml$/.test(path.basename(name));
}

export function isRuleFile(name: string): boolean {
  return (
    /\.ya?ml$/.test(name) && !isTestFile(name) && !isBypassFile(name) && !isPurposesFile(name) && !isFixturesFile(name)
  );
}

export interface LoadOptions {
  readonly regexGuard?: RegexGuard;
  /** Pseudonymises user and device ids named in bypasses.yaml. */
  readonly ids?: BypassIds;
  readonly now?: number;
  /** Polled between files and rules: a reason once the time budget for this compile is spent. */
  readonly outOfTime?: () => string | undefined;
}

/** YAML → plain data with the line of each rule; YAML errors come back with their line. */
export function parseYaml(
  file: string,
  text: string,
): { content: unknown; lineOfRule: (i: number) => number } | LoadError {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false, strict: true });
  const problem = doc.errors[0];
  if (problem) {
    const line = problem.linePos?.[0]?.line ?? lineCounter.linePos(problem.pos[0]).line;
    return { file, line, reason: `YAML: ${problem.message.split('\n')[0]}` };
  }
  let content: unknown;
  try {
    content = doc.toJS({ maxAliasCount: 50 });
  } catch (error) {
    return { file, reason: `YAML: ${(error as Error).message}` };
  }
  const rules = isMap(doc.contents) ? doc.contents.get('rules', true) : undefined;
  const lineOfRule = (index: number): number => {
    const item = isSeq(rules) ? rules.items[index] : undefined;
    const offset = (item as { range?: [number, number, number] } | undefined)?.range?.[0];
    return offset === undefined ? 0 : lineCounter.linePos(offset).line;
  };
  return { content, lineOfRule };
}

export function hashFiles(files: readonly TextFile[]): string {
  const hash = createHash('sha256');
  for (const file of [...files].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    hash.update(file.name).update('\0').update(file.text).update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

/** Compile a ruleset from in-memory texts: used by the loader, `POST /v1/evaluate` and the CLI. */
export function compileFromTexts(files: readonly TextFile[], options: LoadOptions = {}): CompileResult {
  // recheck (automaton + fuzz) with a time budget per pattern and per load; see regex-guard.ts.
  const regexGuard = options.regexGuard ?? createRecheckGuard();
  const errors: LoadError[] = [];
  const sources: RuleSource[] = [];
  const used = files.filter((f) => isRuleFile(f.name) || isBypassFile(f.name) || isPurposesFile(f.name));
  let bypasses: ReturnType<typeof compileBypasses>['bypasses'] = [];
  let purposes: ReturnType<typeof compilePurposes>['purposes'] | undefined;
  for (const file of used) {
    const late = options.outOfTime?.();
    if (late) {
      errors.push({ file: file.name, reason: `ruleset too expensive: ${late}`, tooExpensive: true });
      break;
    }
    if (file.tooLarge || Buffer.byteLength(file.text) > MAX_RULE_FILE_BYTES) {
      errors.push({ file: file.name, reason: `file larger than ${MAX_RULE_FILE_BYTES} bytes` });
      continue;
    }
    if (file.notUtf8) {
      errors.push({ file: file.name, reason: 'not valid UTF-8' });
      continue;
    }
    if (file.text.trim() === '') {
      errors.push({ file: file.name, reason: 'empty file' });
      continue;
    }
    const parsed = parseYaml(file.name, file.text);
    if ('reason' in parsed) {
      errors.push(parsed);
      continue;
    }
    if (isBypassFile(file.name)) {
      const compiled = compileBypasses(file.name, parsed.content, options.ids, options.now ?? Date.now());
      errors.push(...compiled.errors);
      bypasses = compiled.bypasses;
      continue;
    }
    if (isPurposesFile(file.name)) {
      const compiled = compilePurposes(file.name, parsed.content);
      errors.push(...compiled.errors);
      purposes = compiled.purposes;
      continue;
    }
    const kind = /^policy\.ya?ml$/.test(path.basename(file.name)) ? 'policy' : 'rules';
    sources.push({ file: file.name, kind, content: parsed.content, lineOfRule: parsed.lineOfRule });
  }
  const compiled = compileRuleset(sources, {
    hash: hashFiles(used),
    regexGuard,
    ...(options.outOfTime ? { outOfTime: options.outOfTime } : {}),
  });
  if (errors.length > 0) return { ok: false, errors: [...errors, ...(compiled.ok ? [] : compiled.errors)] };
  return compiled.ok
    ? { ok: true, ruleset: { ...compiled.ruleset, bypasses, ...(purposes ? { purposes } : {}) } }
    : compiled;
}

/** Reads every file of a rules directory (one level); sizes are checked before reading. */
export async function readRuleDir(dir: string): Promise<TextFile[]> {
  const names = (await readdir(dir)).filter((n) => /\.ya?ml$/.test(n)).sort();
  const files: TextFile[] = [];
  for (const name of names) {
    const full = path.join(dir, name);
    const info = await stat(full);
    if (!info.isFile()) continue;
    if (info.size > MAX_RULE_FILE_BYTES && isRuleFile(name)) {
      files.push({ name, text: '', tooLarge: true });
      continue;
    }
    const bytes = await readFile(full);
    files.push(isUtf8(bytes) ? { name, text: bytes.toString('utf8') } : { name, text: '', notUtf8: true });
  }
  return files;
}

export interface DirLoadOptions extends LoadOptions {
  /**
   * Check the files in the rule sandbox first (worker, deadline, regex budget), so a bad commit
   * cannot stall this event loop; only a set that passed is then compiled here, its regexes
   * taken as checked.
   */
  readonly sandbox?: RuleSandbox;
}

export async function loadRuleDir(dir: string, options: DirLoadOptions = {}): Promise<CompileResult> {
  let files: TextFile[];
  try {
    files = await readRuleDir(dir);
  } catch (error) {
    return { ok: false, errors: [{ file: dir, reason: `cannot read rules directory: ${(error as Error).message}` }] };
  }
  const { sandbox, ...load } = options;
  if (!sandbox) return compileFromTexts(files, load);
  const checked = await sandbox.check(files, load.now ?? Date.now());
  if (checked.kind === 'rejected') return { ok: false, errors: [...checked.errors] };
  if (checked.kind !== 'ok')
    return {
      ok: false,
      errors: [
        { file: dir, reason: `rules check refused: ${checked.reason}`, tooExpensive: checked.kind === 'too_expensive' },
      ],
    };
  const approved = new Set(checked.patterns);
  return compileFromTexts(files, {
    ...load,
    regexGuard: (pattern) => (approved.has(pattern) ? undefined : 'not checked by the rule sandbox'),
  });
}
