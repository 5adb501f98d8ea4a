import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { createMemoryStore } from '../../src/store/memory-store.js';
import type { Store } from '../../src/store/store.js';
import { startTestService, testClock } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

const clock = testClock();
const dir = mkdtempSync(path.join(tmpdir(), 'risk-bypass-'));
cpSync('rules', dir, { recursive: true });
writeFileSync(
  path.join(dir, 'bypasses.yaml'),
  `bypasses:
  - id: ceo-offsite-tokyo
    reason: CEO at the Tokyo offsite, approved in SEC-1234
    match: { user: "ceo", country: "JP" }
    lowest: PASSIVE
    expires: "2026-12-20"
  - id: office-vpn
    reason: Corporate VPN egress, known to be ours
    match: { ip_prefix: "185.220.101.0/24" }
    lowest: SKIP
    expires: "2026-12-31"
`,
);
/** Every store call the service makes, by method: "changes nothing" is checked on all of them. */
const storeCalls: string[] = [];
const memory = createMemoryStore();
const recordingStore = new Proxy(memory, {
  get(target, name, receiver) {
    const value = Reflect.get(target, name, receiver) as unknown;
    if (typeof value !== 'function') return value;
    return (...args: unknown[]) => {
      storeCalls.push(String(name));
      return (value as (...a: unknown[]) => unknown).apply(target, args);
    };
  },
}) as Store;
const service = await startTestService({ RULES_DIR: dir }, { clock, store: recordingStore });
t.teardown(async () => {
  await service.close();
  rmSync(dir, { recursive: true, force: true });
});
const decide = async (body: Record<string, unknown>) =>
  (
    await service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': 'application/json', ...service.auth },
      payload: JSON.stringify(body),
    })
  ).json() as Record<string, any>;

t.test('a matching bypass lowers the action to its lowest rung and says so', async (t) => {
  await trustDirectly(service, { user: 'ceo', device: 'phone', ip: '89.160.20.112' }, clock());
  // Two failed selfies on the hotel PC: repeated-declines would demand ACTIVE_3D.
  for (let i = 0; i < 2; i++)
    await service.store.recordDecline(service.ids.id('user', 'ceo'), clock(), service.ids.id('device', 'hotel-pc'));
  const decision = await decide({ user_id: 'ceo', device_id: 'hotel-pc', ip: '2001:218::1' });
  t.equal(decision.action, 'PASSIVE');
  t.ok(decision.reasons.some((r: { rule: string }) => r.rule === 'bypass:ceo-offsite-tokyo'));
  const elsewhere = await decide({ user_id: 'ceo', device_id: 'hotel-pc', ip: '89.160.20.112' });
  t.equal(elsewhere.action, 'ACTIVE_3D', 'scoped to the country');
  const other = await decide({ user_id: 'cfo', device_id: 'hotel-pc', ip: '2001:218::1' });
  t.notOk(
    other.reasons.some((r: { rule: string }) => r.rule.startsWith('bypass:')),
    'scoped to the user',
  );
});

t.test('a bypass never lowers a DENY demanded by a rule, nor below the floors', async (t) => {
  await trustDirectly(service, { user: 'vpn-user', device: 'laptop', ip: '89.160.20.112' }, clock());
  const lowered = await decide({ user_id: 'vpn-user', device_id: 'laptop', ip: '185.220.101.1' });
  t.equal(lowered.action, 'SKIP', 'Tor-listed office egress on a known device');
  t.ok(lowered.reasons.some((r: { rule: string }) => r.rule === 'bypass:office-vpn'));
  const cold = await decide({ user_id: 'nobody-yet', device_id: 'x', ip: '185.220.101.1' });
  t.equal(cold.action, 'PASSIVE', 'no verified history: the cold-start floor holds');
  for (let i = 0; i < 5; i++)
    await service.store.recordDecline(service.ids.id('user', 'vpn-user'), clock(), service.ids.id('device', 'laptop'));
  const denied = await decide({ user_id: 'vpn-user', device_id: 'laptop', ip: '185.220.101.1' });
  t.equal(denied.action, 'DENY', 'decline-storm demands DENY; the bypass does not touch it');
  const metrics = await service.metrics.registry.getSingleMetricAsString('risk_bypass_used_total');
  t.match(metrics, /risk_bypass_used_total\{bypass="office-vpn"\} [1-9]/);
});

t.test('an expired bypass no longer applies', async (t) => {
  clock.set(Date.parse('2027-01-02T00:00:00Z'));
  await trustDirectly(service, { user: 'late', device: 'laptop', ip: '89.160.20.112' }, clock());
  const decision = await decide({ user_id: 'late', device_id: 'laptop', ip: '185.220.101.1' });
  t.not(decision.action, 'SKIP');
  clock.set(Date.parse('2026-11-25T12:00:00Z'));
});

t.test('bypasses more than 90 days ahead, without a scope or with an ill-formed id are refused at load', async (t) => {
  const { compileFromTexts } = await import('../../src/rules-io/load.js');
  const { readRuleDir } = await import('../../src/rules-io/load.js');
  const base = (await readRuleDir('rules')).filter((f) => !f.name.startsWith('bypass'));
  const far = compileFromTexts(
    [
      ...base,
      {
        name: 'bypasses.yaml',
        text: 'bypasses:\n  - { id: far, reason: too long an exception, match: { asn: 1 }, lowest: SKIP, expires: "2027-12-31" }\n',
      },
    ],
    { now: Date.parse('2026-11-25') },
  );
  t.equal(far.ok, false);
  const unscoped = compileFromTexts(
    [
      ...base,
      {
        name: 'bypasses.yaml',
        text: 'bypasses:\n  - { id: all, reason: everything at once, match: {}, lowest: SKIP, expires: "2026-12-01" }\n',
      },
    ],
    { now: Date.parse('2026-11-25') },
  );
  t.equal(unscoped.ok, false);
  // A lone surrogate would be hashed as U+FFFD: the bypass would apply to another user or device.
  for (const field of ['user', 'device']) {
    for (const id of ['\\ud800', 'ceo\\udfff', '\\udc00ceo']) {
      const lone = compileFromTexts(
        [
          ...base,
          {
            name: 'bypasses.yaml',
            text: `bypasses:\n  - { id: lone, reason: an ill-formed id, match: { ${field}: "${id}" }, lowest: SKIP, expires: "2026-12-01" }\n`,
          },
        ],
        { now: Date.parse('2026-11-25') },
      );
      t.equal(lone.ok, false, `${field} ${id}`);
    }
  }
  const wellFormed = compileFromTexts(
    [
      ...base,
      {
        name: 'bypasses.yaml',
        text: 'bypasses:\n  - { id: pair, reason: an id outside the BMP, match: { user: "ceo\\ud83d\\ude00" }, lowest: SKIP, expires: "2026-12-01" }\n',
      },
    ],
    { now: Date.parse('2026-11-25') },
  );
  t.equal(wellFormed.ok, true, 'a surrogate pair is a character like any other');
});

t.test('a bypass file that is not UTF-8 is refused at load, not read with U+FFFD in its ids', async (t) => {
  const { loadRuleDir } = await import('../../src/rules-io/load.js');
  const dir = mkdtempSync(path.join(tmpdir(), 'bypass-bytes-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync('rules', dir, { recursive: true });
  for (const name of readdirSync(dir)) if (name.startsWith('bypass')) rmSync(path.join(dir, name));
  const line = (user: Buffer) =>
    Buffer.concat([
      Buffer.from('bypasses:\n  - { id: bytes, reason: a raw byte in an id, match: { user: "ceo'),
      user,
      Buffer.from('" }, lowest: SKIP, expires: "2026-12-01" }\n'),
    ]);
  writeFileSync(path.join(dir, 'bypasses.yaml'), line(Buffer.from([0xff])));
  const refused = await loadRuleDir(dir, { now: Date.parse('2026-11-25') });
  t.equal(refused.ok, false);
  t.match(JSON.stringify(refused), /not valid UTF-8/);
  writeFileSync(path.join(dir, 'bypasses.yaml'), line(Buffer.from('é')));
  const accepted = await loadRuleDir(dir, { now: Date.parse('2026-11-25') });
  t.equal(accepted.ok, true, 'a UTF-8 file with the same shape loads');
});

t.test('POST /v1/evaluate answers from signals alone and changes nothing', async (t) => {
  const post = (payload: unknown) =>
    service.app.inject({
      method: 'POST',
      url: '/v1/evaluate',
      headers: { 'content-type': 'application/json', ...service.auth },
      payload: JSON.stringify(payload),
    });
  const signals = {
    'device.known': false,
    'ip.known': false,
    'ip.prefix_known': false,
    'ip.tor': true,
    'ip.vpn': false,
    'ip.hosting': true,
    'geo.country': 'DE',
    'user.verified_count': 1,
    'velocity.declines_24h': 0,
  };
  const decisionsBefore = await service.metrics.registry.getSingleMetricAsString('risk_decisions_total');
  // The recorder records: a decide makes store calls (observe at least).
  storeCalls.length = 0;
  await decide({ user_id: 'probe', device_id: 'd', ip: '89.160.20.112' });
  t.ok(storeCalls.includes('observe'), `a decide calls the store (${storeCalls.join(', ')})`);
  storeCalls.length = 0;
  const decisionsAfterProbe = await service.metrics.registry.getSingleMetricAsString('risk_decisions_total');
  t.not(decisionsAfterProbe, decisionsBefore, 'a decide is counted in risk_decisions_total');
  const live = await post({ signals });
  t.equal(live.statusCode, 200);
  t.equal(live.json().action, 'ACTIVE_3D');
  t.ok(live.json().results.length >= 14, 'every rule outcome');
  const supplied = await post({
    signals,
    ruleset: {
      files: [
        {
          name: 'policy.yaml',
          text: 'policy:\n  score_bands: [{ min_score: 0, action: SKIP }]\n  cold_start_floor: PASSIVE\n  degraded_floor: PASSIVE\n',
        },
        {
          name: 'only.yaml',
          text: 'rules:\n  - { id: only-tor, description: d, when: "ip.tor", then: { min_action: FLASHING } }\n',
        },
      ],
    },
  });
  t.equal(supplied.json().action, 'FLASHING', 'a supplied ruleset is used instead');
  const badSignal = await post({ signals: { 'ip.torr': true } });
  t.equal(badSignal.statusCode, 400);
  t.equal(badSignal.json().field, 'signals');
  const badRules = await post({ signals, ruleset: { files: [{ name: 'x.yaml', text: 'rules: [' }] } });
  t.equal(badRules.statusCode, 400);
  t.equal(badRules.json().field, 'ruleset');
  t.same(storeCalls, [], 'no store call at all: no sighting read or recorded');
  t.equal(
    await service.metrics.registry.getSingleMetricAsString('risk_decisions_total'),
    decisionsAfterProbe,
    'no decision counted',
  );
});
