import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import t from 'tap';
import { COMMAND_NAMES, main } from '../src/cli.js';
import { evaluate } from '../src/engine/evaluate.js';
import type { Signals } from '../src/engine/signals.js';
import { loadRuleDir } from '../src/rules-io/load.js';

async function run(...args: string[]): Promise<{ code: number; text: string }> {
  const lines: string[] = [];
  const code = await main(args, (line = '') => lines.push(line));
  return { code, text: lines.join('\n') };
}

const work = mkdtempSync(path.join(tmpdir(), 'risk-cli-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

t.test('check: the shipped rules pass; a broken file is reported with file, line and rule id', async (t) => {
  const ok = await run('check', 'rules');
  t.equal(ok.code, 0);
  t.match(ok.text, /^ok: 17 rules \(1 shadow, 0 expired\)/m);
  const broken = path.join(work, 'broken');
  cpSync('rules', broken, { recursive: true });
  writeFileSync(
    path.join(broken, 'network.yaml'),
    readFileSync('rules/network.yaml', 'utf8').replace(
      '"!ip.known && !ip.prefix_known"',
      '"!ip.known && !ip.prefix_knwn"',
    ),
  );
  const bad = await run('check', broken);
  t.equal(bad.code, 1);
  t.match(bad.text, /^network\.yaml:2 \[new-network\]: type error in when: .*prefix_knwn/m);
});

t.test('check reports an expired shadow rule', async (t) => {
  const dir = path.join(work, 'expired');
  cpSync('rules', dir, { recursive: true });
  writeFileSync(
    path.join(dir, 'travel.yaml'),
    readFileSync('rules/travel.yaml', 'utf8').replace('"2027-03-31"', '"2025-01-31"'),
  );
  const result = await run('check', dir);
  t.equal(result.code, 0);
  t.match(result.text, /travel\.yaml:2 \[impossible-travel\]: expired; it no longer runs/);
});

t.test('test: a table of cases; a failing case fails the command', async (t) => {
  const ok = await run('test', 'rules');
  t.equal(ok.code, 0);
  t.match(ok.text, /pass {2}network\.test\.yaml +a Tor exit with a new device gets the motion challenge/);
  const dir = path.join(work, 'failing');
  cpSync('rules', dir, { recursive: true });
  writeFileSync(
    path.join(dir, 'abuse.yaml'),
    readFileSync('rules/abuse.yaml', 'utf8').replace(
      'velocity.declines_device_24h >= 5',
      'velocity.declines_device_24h >= 6',
    ),
  );
  const failing = await run('test', dir);
  t.equal(failing.code, 1);
  t.match(
    failing.text,
    /FAIL {2}abuse\.test\.yaml +five declines in a day are denied\n +action ACTIVE_3D, expected DENY/,
  );
});

t.test('explain: every signal, every rule, and the smallest change that moves the action', async (t) => {
  const result = await run(
    'explain',
    '--user',
    'alice',
    '--device',
    'laptop',
    '--ip',
    '89.160.20.112',
    '--signal',
    'device.known=true',
    '--signal',
    'user.verified_count=2',
    '--signal',
    'ip.prefix_known=false',
    '--signal',
    'geo.country_known=true',
  );
  t.equal(result.code, 0);
  t.match(result.text, /^action: PASSIVE/);
  t.match(result.text, /fired +new-network +ip\.known=false, ip\.prefix_known=false/);
  t.match(result.text, /not_fired +new-device/);
  t.match(result.text, /would be SKIP if ip\.known were true \(is false\)/);
  t.match(result.text, /would be SKIP if ip\.prefix_known were true/);
  const json = JSON.parse(
    (await run('explain', '--user', 'a', '--device', 'b', '--ip', '185.220.101.1', '--json')).text,
  ) as { decision: { action: string }; signals: Record<string, unknown> };
  t.equal(json.decision.action, 'ACTIVE_3D');
  t.equal(json.signals['ip.tor'], true);
  t.equal((await run('explain', '--user', 'a')).code, 2, 'usage on missing arguments');
});

t.test('replay: 10,000 logged decisions against a candidate ruleset give a transition matrix', async (t) => {
  const current = await loadRuleDir('rules');
  if (!current.ok) throw new Error('rules');
  const signalArb = fc.record({
    'request.purpose': fc.constantFrom('login', 'login', 'login', 'change_password'),
    'request.attributes': fc.constant({}),
    'device.known': fc.boolean(),
    'device.seen_count': fc.nat(20),
    'ip.known': fc.boolean(),
    'ip.prefix_known': fc.boolean(),
    'ip.tor': fc.boolean().map((b) => b && Math.random() < 0.1),
    'ip.vpn': fc.constant(false),
    'ip.hosting': fc.boolean(),
    'ip.relay': fc.constant(false),
    'geo.country': fc.constantFrom('SE', 'GB', 'US', ''),
    'geo.country_known': fc.boolean(),
    'geo.travel_assessed': fc.constant(false),
    'ua.bot': fc.constant(false),
    'ua.changed': fc.boolean(),
    'user.verified_count': fc.nat(3),
    'velocity.decides_1h': fc.nat(25),
    'velocity.distinct_ips_1h': fc.nat(6),
    'velocity.declines_24h': fc.nat(6),
    'velocity.declines_device_24h': fc.nat(6),
    'velocity.declines_elsewhere_24h': fc.nat(6),
    'velocity.ip_decides_1m': fc.nat(200),
  });
  const samples = fc.sample(signalArb, { numRuns: 10_000, seed: 20261125 }) as Signals[];
  const time = '2026-11-25T12:00:00.000Z';
  const lines = samples.map((signals, i) => {
    const d = evaluate(current.ruleset, { signals, now: Date.parse(time) });
    return JSON.stringify({
      level: 30,
      time,
      msg: 'decision',
      decision_id: `d-${i}`,
      action: d.action,
      rules: d.reasons.map((r) => r.rule),
      degraded: d.degraded,
      ruleset: d.ruleset,
      signals,
    });
  });
  const log = path.join(work, 'decisions.jsonl');
  writeFileSync(log, `${lines.join('\n')}\n{"msg":"ruleset loaded"}\nnot json\n`);

  const candidate = path.join(work, 'candidate');
  cpSync('rules', candidate, { recursive: true });
  writeFileSync(
    path.join(candidate, 'network.yaml'),
    readFileSync('rules/network.yaml', 'utf8').replace('then: { score: 10 }', 'then: { score: 20 }'),
  );
  const report = JSON.parse((await run('replay', '--log', log, '--rules', candidate, '--json')).text) as {
    decisions: number;
    skipped: number;
    changed: number;
    matrix: Record<string, Record<string, number>>;
    responsible: Array<{ rule: string }>;
    examples: Record<string, string[]>;
  };
  t.equal(report.decisions, 10_000);
  t.equal(report.skipped, 2, 'non-decision lines are skipped, not fatal');
  const cand = await loadRuleDir(candidate);
  if (!cand.ok) throw new Error('candidate');
  let expectedChanged = 0;
  let skipToPassive = 0;
  samples.forEach((signals) => {
    const before = evaluate(current.ruleset, { signals, now: Date.parse(time) }).action;
    const after = evaluate(cand.ruleset, { signals, now: Date.parse(time) }).action;
    if (before !== after) expectedChanged += 1;
    if (before === 'SKIP' && after === 'PASSIVE') skipToPassive += 1;
  });
  t.ok(expectedChanged > 0, `${expectedChanged} decisions change`);
  t.equal(report.changed, expectedChanged);
  t.equal(report.matrix.SKIP!.PASSIVE, skipToPassive);
  t.equal(report.responsible[0]?.rule, 'new-country', 'the changed rule is named as responsible');
  t.ok(report.examples['SKIP->PASSIVE']!.length <= 3);
  const table = await run('replay', '--log', log, '--rules', candidate);
  t.match(table.text, /old \\ new +SKIP +PASSIVE +FLASHING +ACTIVE_3D +DENY/);
  const unchanged = JSON.parse((await run('replay', '--log', log, '--rules', 'rules', '--json')).text) as {
    changed: number;
  };
  t.equal(unchanged.changed, 0, 'the same ruleset replays to the same actions');
});

t.test(
  'help: every command answers --help, -h and `help <command>` with its usage, options and an example',
  async (t) => {
    const names = COMMAND_NAMES();
    t.ok(names.length >= 4, `${names.length} commands`);
    const overview = await run('--help');
    t.equal(overview.code, 0);
    for (const name of names) {
      t.match(overview.text, new RegExp(`^  ${name} +\\S`, 'm'), `the overview lists ${name}`);
      const viaFlag = await run(name, '--help');
      const viaShort = await run(name, '-h');
      const viaHelp = await run('help', name);
      for (const answer of [viaFlag, viaShort, viaHelp]) {
        t.equal(answer.code, 0, `${name}: exit 0`);
        t.match(answer.text, new RegExp(`^usage: rules ${name}`, 'm'), `${name}: usage`);
        t.match(answer.text, /^example:\n {2}npm run rules -- /m, `${name}: an example`);
      }
      t.equal(viaFlag.text, viaHelp.text, `${name}: --help and help ${name} say the same`);
    }
  },
);

t.test('an unknown command or option exits 2 and shows the help instead of a stack trace', async (t) => {
  for (const name of COMMAND_NAMES()) {
    const answer = await run(name, '--no-such-option');
    t.equal(answer.code, 2, `${name} --no-such-option`);
    t.match(answer.text, /Unknown option '--no-such-option'[\s\S]*^usage: rules /m);
  }
  const unknown = await run('frobnicate');
  t.equal(unknown.code, 2);
  t.match(unknown.text, /unknown command "frobnicate"[\s\S]*commands:/);
  const helpUnknown = await run('help', 'frobnicate');
  t.equal(helpUnknown.code, 2);
  const none = await run();
  t.equal(none.code, 2);
  t.match(none.text, /^usage: rules <command>/m);
});

t.test('data:update answers --help and refuses arguments it does not take', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const help = spawnSync(process.execPath, ['--import', 'tsx', 'src/data-io/data-update.ts', '--help'], {
    encoding: 'utf8',
  });
  t.equal(help.status, 0);
  t.match(help.stdout, /^usage: npm run data:update/);
  t.match(help.stdout, /example:/);
  const bad = spawnSync(process.execPath, ['--import', 'tsx', 'src/data-io/data-update.ts', '--licence', 'x'], {
    encoding: 'utf8',
  });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /unknown argument "--licence"/);
});
