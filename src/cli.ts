#!/usr/bin/env node
/** `rules <command>`: the security team's tools, over files in git. `rules help` lists them. */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfig } from './config.js';
import { explain } from './engine/explain.js';
import { formatLoadError } from './engine/ruleset.js';
import { SIGNAL_BY_NAME, type Signals } from './engine/signals.js';
import { createLogger } from './logger.js';
import { loadRuleDir, readRuleDir } from './rules-io/load.js';
import { formatLabelled, formatMatrix, parseLabelLines, replay, type ReplayLabel } from './rules-io/replay.js';
import { effectivenessReport, formatEffectiveness } from './rules-io/effectiveness-report.js';
import type { CompiledRuleset } from './engine/ruleset.js';
import type { DecisionRecords, StoredDecision } from './store/decision-records.js';
import { runRuleTests } from './rules-io/test-runner.js';
import { loadSignalSources } from './data-io/load-sources.js';
import { localIpVelocity } from './signals/ip-velocity.js';
import { createEnricher } from './signals/enrich.js';
import { isValidClientIp, onTrustNetwork } from './signals/ip.js';
import { createPseudonymiser } from './store/pseudonymise.js';
import { openStore } from './open-store.js';
import { decisionRecordsFor, webhookSettings } from './compose.js';
import { createDiditClient } from './didit/client.js';
import { listDeadLetters, replayDeadLetters } from './didit/dead-letters.js';
import { createWebhookHandler } from './didit/webhook-handler.js';
import type { Store } from './store/store.js';

type Out = (line?: string) => void;

async function check(dir: string, out: Out): Promise<number> {
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
  out(
    `ok: ${result.ruleset.rules.length} rules (${shadow} shadow, ${expired.length} expired), ${result.ruleset.bypasses?.length ?? 0} bypasses, ruleset ${result.ruleset.hash}`,
  );
  return 0;
}

async function test(dir: string, out: Out): Promise<number> {
  const result = await loadRuleDir(dir);
  if (!result.ok) return check(dir, out);
  const report = runRuleTests(await readRuleDir(dir), result.ruleset);
  const width = Math.max(...report.cases.map((c) => c.file.length), 4);
  for (const c of report.cases)
    out(
      `${c.passed ? 'pass' : 'FAIL'}  ${c.file.padEnd(width)}  ${c.name}${c.passed ? '' : `\n        ${c.problems.join('\n        ')}`}`,
    );
  for (const problem of report.problems) out(`FAIL  ${problem}`);
  const failedCases = report.cases.filter((c) => !c.passed).length;
  out(`\nrule cases: ${report.cases.length - failedCases} pass, ${failedCases + report.problems.length} fail`);
  return report.passed ? 0 : 1;
}

/** `--signal name=value`: JSON values (true, 3, "x"), bare words as strings, `unknown` removes. */
function parseOverride(text: string): [string, unknown] {
  const at = text.indexOf('=');
  const name = text.slice(0, at);
  const raw = text.slice(at + 1);
  if (!SIGNAL_BY_NAME.has(name)) throw new Error(`unknown signal ${name}`);
  if (raw === 'unknown') return [name, undefined];
  try {
    return [name, JSON.parse(raw)];
  } catch {
    return [name, raw];
  }
}

/** One decision, computed like the service computes it (same config, same data), reading history without recording. */
async function explainCommand(values: Record<string, unknown>, out: Out): Promise<number> {
  const user = values.user as string | undefined;
  const device = values.device as string | undefined;
  const ip = values.ip as string | undefined;
  if (!user || !device || !ip || !isValidClientIp(ip)) {
    out(
      'usage: rules explain --user ID --device ID --ip IP [--ua UA] [--purpose P] [--signal name=value ...] [--rules DIR] [--json]',
    );
    return 2;
  }
  const config = loadConfig(process.env);
  const logger = createLogger('silent');
  const ids = createPseudonymiser(
    config.ids.hashKey ?? { kid: 'cli', secret: 'explain-without-id-hash-key-history-is-empty' },
  );
  const { store } = await openStore(config, { logger, waitMs: 3000, commandTimeoutMs: 1000, requireReady: true });
  try {
    const loaded = await loadRuleDir((values.rules as string | undefined) ?? config.rules.dir, { ids });
    if (!loaded.ok) {
      for (const error of loaded.errors) out(formatLoadError(error));
      return 1;
    }
    const sources = await loadSignalSources(config.data, logger);
    // Explain changes nothing, so it migrates nothing either: during a rotation it reads what is under the current key.
    const readOnly: Store = { ...store, observe: (s, now) => store.peek(s, now), migrate: async () => undefined };
    // Read-only here too: a velocity of this process alone, which records nothing shared.
    const enrich = createEnricher({ ...sources, store: readOnly, ids, ipVelocity: localIpVelocity() });
    const now = Date.now();
    const enriched = await enrich(
      {
        userId: user,
        deviceId: device,
        ip,
        purpose: (values.purpose as string | undefined) ?? 'login',
        ...(values.ua ? { userAgent: values.ua as string } : {}),
      },
      now,
    );
    const signals: Record<string, unknown> = { ...enriched.signals };
    for (const override of (values.signal as string[] | undefined) ?? []) {
      const [name, value] = parseOverride(override);
      if (value === undefined) delete signals[name];
      else signals[name] = value;
    }
    const result = explain(loaded.ruleset, {
      signals: signals as Signals,
      degraded: enriched.degraded,
      now,
      bypass: enriched.bypass,
    });
    if (values.json) {
      out(JSON.stringify({ signals, ...result }, null, 2));
      return 0;
    }
    const d = result.decision;
    out(
      `action: ${d.action}   score: ${d.score}   ruleset: ${d.ruleset}${d.degraded.length ? `   degraded: ${d.degraded.join(', ')}` : ''}${config.ids.hashKey ? '' : "\n(note: ID_HASH_KEY is not set, so the user's history cannot be read: every history signal is a cold start)"}`,
    );
    out('\nsignals:');
    for (const [name, value] of Object.entries(signals).sort()) out(`  ${name.padEnd(26)} ${JSON.stringify(value)}`);
    out('\nrules:');
    for (const r of d.results)
      out(`  ${r.outcome.padEnd(10)} ${r.rule.padEnd(28)} ${r.mode === 'shadow' ? '[shadow] ' : ''}${r.because}`);
    for (const reason of d.reasons.filter((x) => x.rule.includes(':')))
      out(`  ${'applied'.padEnd(10)} ${reason.rule.padEnd(28)} ${reason.because}`);
    if (d.shadow.length) out(`\nshadow: ${d.shadow.map((s) => `${s.rule} would set ${s.action}`).join('; ')}`);
    out('\nsmallest single-signal changes:');
    for (const c of result.lower.slice(0, 5))
      out(
        `  would be ${c.action} if ${c.signal} were ${JSON.stringify(c.to)} (is ${JSON.stringify(c.from ?? 'unknown')})`,
      );
    for (const c of result.higher.slice(0, 5))
      out(
        `  would be ${c.action} if ${c.signal} were ${JSON.stringify(c.to)} (is ${JSON.stringify(c.from ?? 'unknown')})`,
      );
    if (!result.lower.length && !result.higher.length) out('  none: no single signal moves this decision one rung');
    return 0;
  } finally {
    await store.close();
  }
}

/** `30d`, `12h`, `90m`: how far back a report reads. */
export function parseSince(text: string): number | undefined {
  const match = /^(\d{1,4})([dhm])$/.exec(text);
  if (!match) return undefined;
  return Number(match[1]) * { d: 86_400_000, h: 3_600_000, m: 60_000 }[match[2] as 'd' | 'h' | 'm'];
}

async function readLines(file: string): Promise<string[]> {
  const lines: string[] = [];
  for await (const line of createInterface({ input: createReadStream(file), crlfDelay: Infinity })) lines.push(line);
  return lines;
}

/** The configured store's decision records (read-only use), closed by the returned function. */
async function openRecords(): Promise<{ records: DecisionRecords; kind: 'memory' | 'redis'; close(): Promise<void> }> {
  const config = loadConfig(process.env);
  const { store, redis } = await openStore(config, {
    logger: createLogger('silent'),
    waitMs: 3000,
    commandTimeoutMs: 5000,
    requireReady: true,
  });
  return { records: decisionRecordsFor(config, redis), kind: store.kind, close: () => store.close() };
}

/** Stored records as decision lines, so replay reads them like the log. */
function recordLines(stored: readonly StoredDecision[]): string[] {
  return stored.map((d) =>
    JSON.stringify({
      msg: 'decision',
      decision_id: d.record.id,
      time: d.record.at,
      action: d.record.action,
      rules: d.record.rules,
      degraded: d.record.degraded,
      signals: d.record.signals,
    }),
  );
}

function labelsOf(stored: readonly StoredDecision[]): Map<string, ReplayLabel> {
  return new Map(stored.filter((d) => d.label).map((d) => [d.record.id, d.label!.label]));
}

/** The report over records already read: the CLI and the tests (an embedded service's memory records) share it. */
export function printReport(
  stored: readonly StoredDecision[],
  ruleset: Pick<CompiledRuleset, 'rules' | 'hash'>,
  since: number,
  json: boolean,
  out: Out,
): void {
  const report = effectivenessReport(stored, ruleset, { since });
  out(json ? JSON.stringify({ ruleset: ruleset.hash, ...report }, null, 2) : formatEffectiveness(report));
}

async function reportCommand(values: Record<string, unknown>, out: Out): Promise<number> {
  const window = parseSince((values.since as string | undefined) ?? '30d');
  if (window === undefined) {
    out('--since takes a number and a unit: 30d, 12h or 90m');
    return 2;
  }
  const loaded = await loadRuleDir((values.rules as string | undefined) ?? loadConfig(process.env).rules.dir);
  if (!loaded.ok) {
    for (const error of loaded.errors) out(formatLoadError(error));
    return 1;
  }
  const opened = await openRecords();
  try {
    const now = Date.now();
    if (opened.kind === 'memory')
      out(
        "(note: no REDIS_URL: the memory store of this process is empty; the report reads a running service's records from Redis)",
      );
    printReport(await opened.records.list(now - window, now), loaded.ruleset, now - window, values.json === true, out);
    return 0;
  } finally {
    await opened.close();
  }
}

async function replayCommand(values: Record<string, unknown>, out: Out): Promise<number> {
  const log = values.log as string | undefined;
  const dir = values.rules as string | undefined;
  const labelSource = values.labels as string | undefined;
  if (!log || !dir) {
    out(
      'usage: rules replay --log decisions.jsonl|store --rules candidate/ [--labels labels.jsonl|store] [--since 30d] [--json] [--examples N]',
    );
    return 2;
  }
  const window = parseSince((values.since as string | undefined) ?? '90d');
  if (window === undefined) {
    out('--since takes a number and a unit: 30d, 12h or 90m');
    return 2;
  }
  const loaded = await loadRuleDir(dir);
  if (!loaded.ok) {
    for (const error of loaded.errors) out(formatLoadError(error));
    return 1;
  }
  let stored: StoredDecision[] | undefined;
  if (log === 'store' || labelSource === 'store') {
    const opened = await openRecords();
    try {
      const now = Date.now();
      stored = await opened.records.list(now - window, now);
    } finally {
      await opened.close();
    }
  }
  const lines = log === 'store' ? recordLines(stored!) : await readLines(log);
  const labels =
    labelSource === undefined
      ? undefined
      : labelSource === 'store'
        ? labelsOf(stored!)
        : parseLabelLines(await readLines(labelSource));
  const report = replay(lines, loaded.ruleset, Number(values.examples ?? 3), labels);
  if (values.json) {
    out(JSON.stringify({ candidate: loaded.ruleset.hash, ...report }, null, 2));
    return 0;
  }
  out(
    `replayed ${report.decisions} decisions against ruleset ${loaded.ruleset.hash} (${report.skipped} lines were not decisions)`,
  );
  out(
    `${report.changed} changed (${report.decisions ? ((100 * report.changed) / report.decisions).toFixed(2) : '0.00'}%)\n`,
  );
  out(formatMatrix(report));
  if (report.responsible.length) {
    out('\nrules behind the changes:');
    for (const r of report.responsible.slice(0, 15)) out(`  ${String(r.count).padStart(7)}  ${r.rule}`);
  }
  if (Object.keys(report.examples).length) {
    out('\nexamples:');
    for (const [cell, ids] of Object.entries(report.examples)) out(`  ${cell.padEnd(22)} ${ids.join(', ')}`);
  }
  if (report.labelled) out(`\n${formatLabelled(report.labelled)}`);
  return 0;
}

/** `dead-letters list | replay`: authentic Didit deliveries the webhook could not apply, kept a week in the store. */
async function deadLettersCommand(action: string | undefined, out: Out): Promise<number> {
  if (action !== 'list' && action !== 'replay') {
    out('usage: rules dead-letters list | rules dead-letters replay');
    return 2;
  }
  const config = loadConfig(process.env);
  const {
    didit,
    ids: { hashKey },
  } = config;
  if (!hashKey || !didit) {
    out(
      "dead letters need the service's ID_HASH_KEY (they are sealed under it), its store and the Didit settings (DIDIT_API_KEY, DIDIT_BASE_URL, DIDIT_WEBHOOK_SECRET, workflows)",
    );
    return 2;
  }
  // Letters sealed before a rotation open under ID_HASH_KEY_PREVIOUS.
  const ids = createPseudonymiser(hashKey, config.ids.previousHashKey);
  const { store } = await openStore(config, {
    logger: createLogger('silent'),
    waitMs: 3000,
    commandTimeoutMs: 1000,
    requireReady: true,
  });
  try {
    const now = Date.now();
    if (action === 'list') {
      const letters = await listDeadLetters(store, ids, now);
      for (const l of letters)
        out(
          `${l.letter.id}  ${new Date(l.letter.at).toISOString()}  ${l.letter.reason.padEnd(16)}  ${l.sessionId ?? '?'}  ${l.status ?? (l.content ? '?' : '(sealed under another ID_HASH_KEY)')}`,
        );
      out(`${letters.length} dead letter(s)`);
      return 0;
    }
    const client = createDiditClient({
      baseUrl: didit.baseUrl,
      apiKey: didit.apiKey,
      workflows: didit.workflows,
      timeoutMs: config.stepUp.timeoutMs,
    });
    const handle = createWebhookHandler({
      store,
      ids,
      secrets: didit.webhookSecrets,
      ...webhookSettings(config),
      client,
      onNetwork: onTrustNetwork(ids),
      clock: Date.now,
    });
    const results = await replayDeadLetters({ store, ids, handle, now });
    for (const r of results)
      out(
        `${r.id}  ${r.outcome.result}${'reason' in r.outcome && r.outcome.reason ? ` (${r.outcome.reason})` : ''}  ${r.removed ? 'settled, removed' : 'kept'}`,
      );
    const settled = results.filter((r) => r.removed).length;
    out(`replayed ${results.length}: ${settled} settled, ${results.length - settled} kept`);
    return settled === results.length ? 0 : 1;
  } finally {
    await store.close();
  }
}

interface Command {
  readonly summary: string;
  readonly usage: string;
  readonly example: string;
  readonly options: ParseArgsConfig['options'];
  /** What each option means, for `help <command>`. */
  readonly describe: Readonly<Record<string, string>>;
  readonly positionals?: boolean;
  run(values: Record<string, unknown>, positionals: string[], out: Out): Promise<number>;
}

const rulesDir = { rules: { type: 'string' } } as const;

const COMMANDS: Readonly<Record<string, Command>> = {
  check: {
    summary: 'load a rules directory as the service would and report every problem',
    usage: 'rules check [dir]',
    example: 'npm run rules -- check rules',
    options: {},
    describe: { dir: 'the rules directory (default: rules)' },
    positionals: true,
    run: (_values, positionals, out) => check(positionals[0] ?? 'rules', out),
  },
  test: {
    summary: "run every rule file's test cases (<file>.test.yaml)",
    usage: 'rules test [dir]',
    example: 'npm run rules -- test rules',
    options: {},
    describe: { dir: 'the rules directory (default: rules)' },
    positionals: true,
    run: (_values, positionals, out) => test(positionals[0] ?? 'rules', out),
  },
  explain: {
    summary: 'one decision with every signal and rule, read-only against the configured store',
    usage:
      'rules explain --user ID --device ID --ip IP [--ua UA] [--purpose P] [--signal name=value ...] [--rules DIR] [--json]',
    example: 'npm run rules -- explain --user alice --device laptop --ip 89.160.20.112 --signal device.known=true',
    options: {
      user: { type: 'string' },
      device: { type: 'string' },
      ip: { type: 'string' },
      ua: { type: 'string' },
      purpose: { type: 'string' },
      signal: { type: 'string', multiple: true },
      ...rulesDir,
      json: { type: 'boolean' },
    },
    describe: {
      '--user': 'the user id, as the login service sends it',
      '--device': 'the device id',
      '--ip': 'the client IP (IPv4 or IPv6)',
      '--ua': 'the user agent',
      '--purpose': 'the sign-in purpose (default: login)',
      '--signal': 'override a signal: name=value (JSON, a bare word, or unknown); repeatable',
      '--rules': 'the rules directory (default: RULES_DIR)',
      '--json': 'print JSON',
    },
    run: (values, _positionals, out) => explainCommand(values, out),
  },
  replay: {
    summary: 'replay logged decisions against a candidate ruleset: what would change, and which rules cause it',
    usage:
      'rules replay --log decisions.jsonl|store --rules candidate/ [--labels labels.jsonl|store] [--since 90d] [--examples N] [--json]',
    example: 'npm run rules -- replay --log decisions.jsonl --rules candidate/ --labels store',
    options: {
      log: { type: 'string' },
      ...rulesDir,
      labels: { type: 'string' },
      since: { type: 'string' },
      json: { type: 'boolean' },
      examples: { type: 'string' },
    },
    describe: {
      '--log': 'a file of decision lines (the service log; other lines are skipped), or `store`: the decision records',
      '--rules': 'the candidate rules directory',
      '--labels': 'fraud / legitimate labels: `store` (POST /v1/feedback) or a file of {"decision_id","label"} lines',
      '--since': 'with `store`: how far back to read (default 90d)',
      '--examples': 'decision ids shown per changed cell (default 3)',
      '--json': 'print JSON',
    },
    run: (values, _positionals, out) => replayCommand(values, out),
  },
  report: {
    summary:
      'rule effectiveness from the stored records: per rule, step-ups, outcomes, labels, precision; dead and noisy rules',
    usage: 'rules report [--since 30d] [--rules DIR] [--json]',
    example: 'npm run rules -- report --since 7d',
    options: { since: { type: 'string' }, ...rulesDir, json: { type: 'boolean' } },
    describe: {
      '--since': 'how far back: 30d (default), 12h, 90m',
      '--rules': 'the ruleset the dead rules are looked for in (default: RULES_DIR)',
      '--json': 'print JSON',
    },
    run: (values, _positionals, out) => reportCommand(values, out),
  },
  'dead-letters': {
    summary: 'list or re-apply authentic Didit deliveries the webhook could not apply (kept 7 days)',
    usage: 'rules dead-letters list | rules dead-letters replay',
    example: 'npm run rules -- dead-letters list',
    options: {},
    describe: {
      list: 'print each dead letter (id, time, reason, session, status)',
      replay: 'apply each again through the webhook handler; settled ones are removed',
    },
    positionals: true,
    run: (_values, positionals, out) => deadLettersCommand(positionals[0], out),
  },
};

function overview(out: Out): void {
  out('usage: rules <command> [options]    (npm run rules -- <command> …)\n');
  out('commands:');
  for (const [name, command] of Object.entries(COMMANDS)) out(`  ${name.padEnd(9)} ${command.summary}`);
  out('  help      this text, or `help <command>` for its options and an example');
}

function help(name: string, out: Out): void {
  const command = COMMANDS[name]!;
  out(`usage: ${command.usage}\n\n${command.summary}\n`);
  if (Object.keys(command.describe).length > 0) {
    out('options:');
    for (const [option, meaning] of Object.entries(command.describe)) out(`  ${option.padEnd(12)} ${meaning}`);
  }
  out(`\nexample:\n  ${command.example}`);
}

/** The command names, for the help tests. */
export const COMMAND_NAMES = (): string[] => Object.keys(COMMANDS);

const isCommand = (name: string | undefined): name is string => name !== undefined && Object.hasOwn(COMMANDS, name);

export async function main(
  argv: string[],
  out: Out = (line = '') => process.stdout.write(`${line}\n`),
): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || (name === 'help' && rest.length === 0)) {
    overview(out);
    return name === undefined ? 2 : 0;
  }
  if (name === 'help') {
    if (isCommand(rest[0])) {
      help(rest[0], out);
      return 0;
    }
    out(`unknown command ${JSON.stringify(rest[0])}\n`);
    overview(out);
    return 2;
  }
  if (!isCommand(name)) {
    out(`unknown command ${JSON.stringify(name)}\n`);
    overview(out);
    return 2;
  }
  const command = COMMANDS[name]!;
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: command.positionals ?? false,
      strict: true,
      options: { ...command.options, help: { type: 'boolean', short: 'h' } },
    });
  } catch (error) {
    out(`${(error as Error).message}\n`);
    help(name, out);
    return 2;
  }
  if (parsed.values.help) {
    help(name, out);
    return 0;
  }
  return command.run(parsed.values, parsed.positionals, out);
}

if (process.argv[1] && /cli\.(ts|js)$/.test(process.argv[1])) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: Error) => {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    },
  );
}
