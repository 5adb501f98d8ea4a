import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { evaluate } from '../../src/engine/evaluate.js';
import type { Signals } from '../../src/engine/signals.js';
import { compileFromTexts, loadRuleDir, readRuleDir } from '../../src/rules-io/load.js';
import { createRulesHolder } from '../../src/rules-io/rules-holder.js';
import { CHROME_WINDOWS, startTestService, testClock } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

/** The probes first, then the spellings a login service (or a refactor of one) could send. */
const SPELLINGS: readonly string[] = [
  'change-password',
  'reset_password',
  'disable_2fa',
  'delete_account',
  'change_password',
  'changepassword',
  'change.password',
  'change--password',
  'change_password_v2',
  'password_change',
  'password-reset',
  'passwd',
  'reset-password',
  'resetpassword',
  'disable-2fa',
  'disable_mfa',
  'disable-mfa',
  'mfa_disable',
  'remove_2fa',
  'delete-account',
  'account_delete',
  'close_account',
  'remove_account',
  'add-payee',
  'addpayee',
  'add_beneficiary',
  'export',
  'export-data',
  'change_email',
  'change-email',
  'update_phone',
  'login2',
  'login.',
  'login-',
  'log-in',
  'logon',
  'signin',
  'sign_in',
  'unknown',
  'x',
  `a${'b'.repeat(63)}`,
];
/** Refused by the decide schema before any rule runs (uppercase, spaces, look-alike letters, leading digit, too long). */
const MALFORMED: readonly string[] = [
  'Login',
  'LOGIN',
  'CHANGE_PASSWORD',
  'Change-Password',
  'login ',
  ' login',
  'login\n',
  'change password',
  'lоgin',
  '2fa_disable',
  '_login',
  '',
  `a${'b'.repeat(64)}`,
];
const DECLARED_NORMAL = new Set(['login', 'reauthenticate', 'view_account', 'view_statement']);

t.test(
  'decide: on a trusted device only a declared normal purpose skips; every other spelling steps up or is refused',
  async (t) => {
    const clock = testClock();
    const service = await startTestService({}, { clock });
    t.teardown(() => service.close());
    await trustDirectly(
      service,
      { user: 'p-user', device: 'laptop', ip: '89.160.20.112', country: 'SE', asn: 29518 },
      clock(),
    );
    const decide = async (purpose: string) => {
      const response = await service.app.inject({
        method: 'POST',
        url: '/v1/decide',
        headers: { 'content-type': 'application/json', ...service.auth },
        payload: JSON.stringify({
          user_id: 'p-user',
          device_id: 'laptop',
          ip: '89.160.20.112',
          user_agent: CHROME_WINDOWS,
          purpose,
        }),
      });
      return {
        status: response.statusCode,
        body: response.json() as { action: string; reasons: Array<{ rule: string }>; field?: string },
      };
    };
    const undeclaredCount = async () =>
      (await service.metrics.registry.getSingleMetric('risk_undeclared_purpose_total')!.get()).values[0]?.value ?? 0;

    for (const purpose of DECLARED_NORMAL)
      t.equal((await decide(purpose)).body.action, 'SKIP', `declared normal ${purpose} skips`);
    const vocabulary = service.rules.current()!.purposes!;
    let undeclared = 0;
    for (const purpose of SPELLINGS) {
      const before = await undeclaredCount();
      const { status, body } = await decide(purpose);
      t.equal(status, 200, purpose);
      t.not(body.action, 'SKIP', `${purpose} does not skip`);
      t.ok(
        body.reasons.some((r) => r.rule === 'sensitive-purpose'),
        `${purpose}: sensitive-purpose fired`,
      );
      const isUndeclared = !vocabulary.has(purpose);
      if (isUndeclared) undeclared += 1;
      t.equal(
        (await undeclaredCount()) - before,
        isUndeclared ? 1 : 0,
        `${purpose}: risk_undeclared_purpose_total ${isUndeclared ? 'counts it' : 'does not move'}`,
      );
    }
    t.ok(undeclared >= 30, `${undeclared} of ${SPELLINGS.length} spellings are undeclared`);
    for (const purpose of MALFORMED) {
      const { status, body } = await decide(purpose);
      t.equal(status, 400, JSON.stringify(purpose));
      t.equal(body.field, 'purpose');
    }
    const exposition = await service.metrics.registry.metrics();
    t.match(exposition, /^risk_undeclared_purpose_total \d+$/m, 'one series, no labels');
    for (const purpose of SPELLINGS.slice(0, 10))
      t.notOk(exposition.includes(purpose), `no purpose text in metrics: ${purpose}`);
  },
);

const POLICY = {
  name: 'policy.yaml',
  text: 'policy:\n  score_bands: [{ min_score: 0, action: SKIP }]\n  cold_start_floor: PASSIVE\n  degraded_floor: PASSIVE\n',
};
const NO_PURPOSE_RULE = {
  name: 'net.yaml',
  text: 'rules:\n  - { id: tor, description: d, when: "ip.tor", then: { min_action: FLASHING } }\n',
};
const VOCABULARY = { name: 'purposes.yaml', text: 'purposes:\n  login: normal\n  transfer: sensitive\n' };
const quiet: Signals = {
  'ip.tor': false,
  'device.known': true,
  'ip.known': true,
  'ip.prefix_known': true,
  'ip.vpn': false,
  'ip.hosting': false,
  'geo.country': 'GB',
  'user.verified_count': 2,
  'velocity.declines_24h': 0,
  'velocity.declines_device_24h': 0,
  'velocity.declines_elsewhere_24h': 0,
};

t.test('the engine floor holds without any purpose rule, under a bypass, and without a vocabulary file', async (t) => {
  const compiled = compileFromTexts(
    [
      POLICY,
      NO_PURPOSE_RULE,
      VOCABULARY,
      {
        name: 'bypasses.yaml',
        text: 'bypasses:\n  - { id: everyone-gb, reason: test exception, match: { country: GB }, lowest: SKIP, expires: "2026-12-20" }\n',
      },
    ],
    { now: Date.parse('2026-11-25') },
  );
  if (!compiled.ok) throw new Error(JSON.stringify(compiled.errors));
  const now = Date.parse('2026-11-25T12:00:00Z');
  const run = (purpose: string) =>
    evaluate(compiled.ruleset, {
      signals: { ...quiet, 'request.purpose': purpose },
      now,
      bypass: { user: 'u', device: 'd', ip: [81, 2, 69, 142], country: 'GB' },
    });
  t.equal(run('login').action, 'SKIP');
  t.equal(run('login').purposeClass, 'normal');
  t.equal(run('transfer').purposeClass, 'sensitive');
  t.equal(
    run('transfer').action,
    'SKIP',
    'declared sensitive is for the rules to act on (this ruleset has no such rule)',
  );
  const unknown = run('change-password');
  t.equal(unknown.purposeClass, 'undeclared');
  t.equal(unknown.action, 'PASSIVE', 'undeclared: PASSIVE from the engine, even with a SKIP bypass matching');
  t.ok(unknown.reasons.some((r) => r.rule === 'floor:undeclared-purpose'));
  // A caller-supplied class never overrides the vocabulary.
  t.equal(
    evaluate(compiled.ruleset, {
      signals: { ...quiet, 'request.purpose': 'change-password', 'request.purpose_class': 'normal' },
      now,
    }).action,
    'PASSIVE',
  );

  const bare = compileFromTexts([POLICY, NO_PURPOSE_RULE]);
  if (!bare.ok) throw new Error('bare ruleset');
  t.equal(
    evaluate(bare.ruleset, { signals: { ...quiet, 'request.purpose': 'login' }, now }).action,
    'SKIP',
    'no purposes.yaml: login is still normal',
  );
  t.equal(
    evaluate(bare.ruleset, { signals: { ...quiet, 'request.purpose': 'view_account' }, now }).action,
    'PASSIVE',
    'and nothing else is',
  );
});

t.test('purposes.yaml is validated with the ruleset, all or nothing', async (t) => {
  const shipped = (await readRuleDir('rules')).filter((f) => f.name !== 'purposes.yaml');
  const bad: Record<string, string> = {
    'unknown class': 'purposes:\n  login: normal\n  transfer: secret\n',
    'uppercase name': 'purposes:\n  Login: normal\n',
    'name with a space': 'purposes:\n  "change password": sensitive\n',
    'name the API cannot send': `purposes:\n  a${'b'.repeat(64)}: normal\n`,
    'empty map': 'purposes: {}\n',
    'a list': 'purposes:\n  - login\n',
    'duplicate key': 'purposes:\n  login: normal\n  login: sensitive\n',
    'unknown top-level key': 'purposes:\n  login: normal\nextra: 1\n',
    'not YAML': 'purposes: [\n',
    'too many': `purposes:\n${Array.from({ length: 501 }, (_, i) => `  p${i}: normal`).join('\n')}\n`,
  };
  for (const [label, text] of Object.entries(bad)) {
    const result = compileFromTexts([...shipped, { name: 'purposes.yaml', text }]);
    t.equal(result.ok, false, label);
    if (!result.ok)
      t.ok(
        result.errors.some((e) => e.file === 'purposes.yaml'),
        `${label}: the error names purposes.yaml`,
      );
  }
  const good = compileFromTexts([...shipped, { name: 'purposes.yaml', text: 'purposes:\n  login: normal\n' }]);
  t.equal(good.ok, true);
  if (good.ok) t.same([...good.ruleset.purposes!], [['login', 'normal']]);
});

t.test('the vocabulary is hot-reloaded with the rules; a broken one keeps the last good set', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'purposes-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync('rules', dir, { recursive: true });
  const holder = createRulesHolder({ load: () => loadRuleDir(dir) });
  t.equal((await holder.reload()).ok, true);
  const now = Date.parse('2026-11-25T12:00:00Z');
  const signals = {
    ...quiet,
    'ip.relay': false,
    'geo.country_known': true,
    'geo.travel_assessed': false,
    'ua.bot': false,
    'ua.changed': false,
    'velocity.decides_1h': 1,
    'velocity.distinct_ips_1h': 1,
    'velocity.ip_decides_1m': 1,
    'request.purpose': 'view_invoice',
  } as Signals;
  t.equal(evaluate(holder.current()!, { signals, now }).action, 'PASSIVE', 'undeclared before');
  writeFileSync(path.join(dir, 'purposes.yaml'), 'purposes:\n  login: normal\n  view_invoice: normal\n');
  t.equal((await holder.reload()).ok, true);
  t.equal(evaluate(holder.current()!, { signals, now }).action, 'SKIP', 'declared normal after the reload');
  writeFileSync(path.join(dir, 'purposes.yaml'), 'purposes:\n  view_invoice: harmless\n');
  const rejected = await holder.reload();
  t.equal(rejected.ok, false);
  t.equal(evaluate(holder.current()!, { signals, now }).action, 'SKIP', 'the last good vocabulary keeps serving');
});
