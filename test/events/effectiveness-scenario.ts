/**
 * One rule-effectiveness scenario, run against the memory store and against Redis: real step-ups at
 * the Didit simulator, real signed verdicts, a lapse, labels over HTTP; every figure is checked
 * against the hand-computed table below.
 */
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Counter } from 'prom-client';
import type { Test } from 'tap';
import { loadRuleDir } from '../../src/rules-io/load.js';
import { replay } from '../../src/rules-io/replay.js';
import { effectivenessReport } from '../../src/rules-io/effectiveness-report.js';
import type { DiditStack } from '../helpers/didit.js';
import { CHROME_WINDOWS, type TestClock, injectDecide } from '../helpers/service.js';

const RULES = `rules:
  - id: risky-flag
    description: The caller flagged the sign-in risky.
    when: "request.attributes.risky == true"
    then: { min_action: PASSIVE }
  - id: watch-flag
    description: The account is on a watch list.
    when: "request.attributes.watch == true"
    then: { score: 25 }
  - id: noisy-flag
    description: Adds a little score, never a step-up alone.
    when: "request.attributes.noisy == true"
    then: { score: 5 }
  - id: never-fires
    description: Nothing sends this attribute.
    when: "request.attributes.never == true"
    then: { min_action: DENY }
  - id: shadow-flag
    description: A candidate stricter rule, watched in shadow first.
    when: "request.attributes.shadowy == true"
    then: { min_action: FLASHING }
    mode: shadow
    expires: "2027-12-31"
`;

/** The live ruleset of the scenario: the shipped policy and purposes, with SKIP for new users (so some decisions skip). */
export function scenarioRules(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'risk-effect-'));
  cpSync('rules/purposes.yaml', path.join(dir, 'purposes.yaml'));
  writeFileSync(
    path.join(dir, 'policy.yaml'),
    'policy:\n  score_bands:\n    - { min_score: 0, action: SKIP }\n    - { min_score: 20, action: PASSIVE }\n    - { min_score: 40, action: FLASHING }\n  cold_start_floor: SKIP\n  degraded_floor: PASSIVE\n',
  );
  writeFileSync(path.join(dir, 'effect.yaml'), RULES);
  return dir;
}

/** The candidate: risky-flag only adds score, noisy-flag now asks for a selfie. */
export function candidateRules(): string {
  const dir = scenarioRules();
  writeFileSync(
    path.join(dir, 'effect.yaml'),
    RULES.replace(
      'then: { min_action: PASSIVE }\n  - id: watch-flag',
      'then: { score: 5 }\n  - id: watch-flag',
    ).replace('then: { score: 5 }\n  - id: never-fires', 'then: { min_action: PASSIVE }\n  - id: never-fires'),
  );
  return dir;
}

type Flags = Partial<Record<'risky' | 'watch' | 'noisy' | 'shadowy', boolean>>;

export async function value(counter: Counter<string>, labels: Record<string, string>): Promise<number> {
  const found = (await counter.get()).values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x));
  return found?.value ?? 0;
}

export interface ScenarioResult {
  readonly ids: Record<string, string>;
}

/**
 * Decisions (each a new user, so nothing learnt leaks between them):
 *   A risky               PASSIVE  [risky-flag]              Approved           label legitimate (after a fraud label it replaces)
 *   B risky+watch+shadowy PASSIVE  [risky-flag, watch-flag]  Declined           label fraud      shadow-flag would: FLASHING
 *   C watch               PASSIVE  [watch-flag]              Abandoned (Didit)  label fraud
 *   D risky               PASSIVE  [risky-flag]              no verdict: lapses → abandoned by the sweep
 *   E watch+shadowy       PASSIVE  [watch-flag]              In Review, then Approved        shadow-flag would: FLASHING
 *   F noisy               SKIP     [noisy-flag]                                 label fraud (missed)
 *   G —                   SKIP     []                                           label legitimate
 *   H1, H2 risky, same user and device: H2 is handed H1's session (reused), Approved: counted once, on H2
 */
export async function runScenario(t: Test, stack: DiditStack, clock: TestClock): Promise<ScenarioResult> {
  const { service, simulator } = stack;
  const { metrics } = service;
  const ids: Record<string, string> = {};
  const sessions: Record<string, string> = {};
  const run = Math.random().toString(36).slice(2, 8);

  const decide = async (name: string, flags: Flags, user = `${name}-${run}`) => {
    const attributes = { risky: false, watch: false, noisy: false, never: false, shadowy: false, ...flags };
    const response = await injectDecide(service, {
      user_id: user,
      device_id: `${user}-phone`,
      ip: '2001:218::1',
      user_agent: CHROME_WINDOWS,
      attributes,
    });
    const body = response.json() as {
      decision_id: string;
      action: string;
      reasons: Array<{ rule: string }>;
      verification: { status: string; session_id?: string };
    };
    ids[name] = body.decision_id;
    if (body.verification.session_id) sessions[name] = body.verification.session_id;
    return body;
  };

  const expectations: Array<[string, Flags, string, string[], string]> = [
    ['A', { risky: true }, 'PASSIVE', ['risky-flag'], 'created'],
    ['B', { risky: true, watch: true, shadowy: true }, 'PASSIVE', ['risky-flag', 'watch-flag'], 'created'],
    ['C', { watch: true }, 'PASSIVE', ['watch-flag'], 'created'],
    ['D', { risky: true }, 'PASSIVE', ['risky-flag'], 'created'],
    ['E', { watch: true, shadowy: true }, 'PASSIVE', ['watch-flag'], 'created'],
    ['F', { noisy: true }, 'SKIP', ['noisy-flag'], 'not_needed'],
    ['G', {}, 'SKIP', [], 'not_needed'],
  ];
  for (const [name, flags, action, rules, status] of expectations) {
    const d = await decide(name, flags);
    t.match(d, { action, verification: { status } }, `${name}: ${action}, step-up ${status}`);
    t.same(
      d.reasons.map((r) => r.rule),
      rules,
      `${name}: fired ${rules.join(', ') || 'nothing'}`,
    );
  }
  const h1 = await decide('H1', { risky: true }, `H-${run}`);
  const h2 = await decide('H2', { risky: true }, `H-${run}`);
  t.equal(h1.verification.status, 'created');
  t.equal(h2.verification.status, 'reused', 'H2 is handed the session H1 opened');
  t.equal(sessions.H2, sessions.H1);
  await service.effectiveness.flush();

  // Verdicts as Didit sends them: signed deliveries to the service's webhook over HTTP.
  t.same(await simulator.complete(sessions.A!, 'Approved'), [200, 200], 'A approved');
  t.same(await simulator.complete(sessions.B!, 'Declined'), [200, 200], 'B declined');
  t.same(await simulator.complete(sessions.C!, 'Abandoned'), [200, 200], 'C abandoned at Didit');
  t.same(await simulator.complete(sessions.E!, 'In Review'), [200, 200], 'E in review');
  clock.advance(1000);
  t.same(await simulator.complete(sessions.E!, 'Approved'), [200], 'E approved by the reviewer');
  t.same(await simulator.complete(sessions.H2!, 'Approved'), [200, 200], 'H approved');

  // A repeated delivery of a verdict (Didit retries) counts nothing more.
  const again = simulator.webhookFor(sessions.B!, 'Declined');
  const replayed = await service.app.inject({
    method: 'POST',
    url: '/v1/webhooks/didit',
    headers: again.headers,
    payload: again.body,
  });
  t.equal(replayed.statusCode, 200);

  t.equal(await service.effectiveness.sweep(), 0, 'nothing lapsed yet: D is inside its window');
  clock.advance(11 * 60_000);
  t.equal(await service.effectiveness.sweep(), 1, 'past PENDING_TTL_MINUTES D is abandoned');
  t.equal(await service.effectiveness.sweep(), 0, 'and only once');

  const outcome = (rule: string, o: string) => value(metrics.stepUpOutcomes, { rule, method: 'PASSIVE', outcome: o });
  const shadowOutcome = (rule: string, o: string) =>
    value(metrics.shadowStepUpOutcomes, { rule, method: 'PASSIVE', outcome: o });
  const table = async (rule: string, read: typeof outcome) => ({
    approved: await read(rule, 'approved'),
    declined: await read(rule, 'declined'),
    abandoned: await read(rule, 'abandoned'),
    in_review: await read(rule, 'in_review'),
  });
  t.same(
    await table('risky-flag', outcome),
    { approved: 2, declined: 1, abandoned: 1, in_review: 0 },
    'risky-flag: A, H2 approved; B declined; D lapsed',
  );
  t.same(
    await table('watch-flag', outcome),
    { approved: 1, declined: 1, abandoned: 1, in_review: 1 },
    'watch-flag: E reviewed then approved; B declined; C abandoned',
  );
  t.same(
    await table('shadow-flag', shadowOutcome),
    { approved: 1, declined: 1, abandoned: 0, in_review: 1 },
    'shadow-flag, partial evidence: B and E',
  );
  t.same(
    await table('shadow-flag', outcome),
    { approved: 0, declined: 0, abandoned: 0, in_review: 0 },
    'a shadow rule never counts as a live one',
  );
  t.equal(await outcome('noisy-flag', 'approved'), 0);

  // Labels from the people who know.
  const label = (decision: string, l: string, source = 'fraud_team', note?: string) =>
    service.app.inject({
      method: 'POST',
      url: '/v1/feedback',
      headers: { 'content-type': 'application/json', ...service.auth },
      payload: JSON.stringify({ decision_id: decision, label: l, source, ...(note ? { note } : {}) }),
    });
  const first = await label(ids.A!, 'fraud', 'user_report', 'this was not me');
  t.equal(first.statusCode, 200);
  t.same(first.json(), { decision_id: ids.A, label: 'fraud' });
  const replaced = await label(ids.A!, 'legitimate', 'support');
  t.same(
    replaced.json(),
    { decision_id: ids.A, label: 'legitimate', replaced: 'fraud' },
    'a second label replaces the first',
  );
  const audit = service.logs
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.audit === 'feedback_label' && l.decision_id === ids.A);
  t.match(
    audit,
    [
      { label: 'fraud', caller: 'tests' },
      { label: 'legitimate', replaced: 'fraud', replaced_by: 'tests', caller: 'tests' },
    ],
    'both labels are audited with the caller',
  );
  t.notOk(
    service.logs.some((l) => l.includes('this was not me')),
    'the free-text note is never logged',
  );
  for (const [name, l] of [
    ['B', 'fraud'],
    ['C', 'fraud'],
    ['F', 'fraud'],
    ['G', 'legitimate'],
    ['G', 'legitimate'],
  ] as const)
    t.equal((await label(ids[name]!, l)).statusCode, 200, `${name} labelled ${l}`);

  const feedback = (rule: string, l: string) => value(metrics.feedback, { rule, label: l });
  // risky-flag: A fraud, then A legitimate (a replacement is kept in the record, not counted again: a
  // flipped label must not inflate the series), B fraud; watch-flag: B, C fraud; G twice: once, and G has no rule.
  t.same(
    [
      await feedback('risky-flag', 'fraud'),
      await feedback('risky-flag', 'legitimate'),
      await feedback('watch-flag', 'fraud'),
      await feedback('noisy-flag', 'fraud'),
    ],
    [2, 0, 2, 1],
    'risk_feedback_total per rule',
  );
  for (let i = 0; i < 10; i++) await label(ids.A!, i % 2 === 0 ? 'fraud' : 'legitimate');
  t.same(
    [await feedback('risky-flag', 'fraud'), await feedback('risky-flag', 'legitimate')],
    [2, 0],
    'ten flips of one decision add nothing',
  );
  await label(ids.A!, 'legitimate', 'support');

  // The report, from the stored records.
  const loaded = await loadRuleDir(service.config.rules.dir);
  if (!loaded.ok) throw new Error('rules');
  const stored = await service.records.list(0, clock());
  const report = effectivenessReport(stored, loaded.ruleset, { since: 0 });
  const rule = (id: string) => [...report.rules, ...report.shadow].find((r) => r.rule === id)!;
  t.match(
    report,
    { decisions: 9, stepUps: 6, superseded: 1, labelled: { fraud: 3, legitimate: 2 } },
    'totals: 9 decisions, 6 step-ups (H1 and H2 are one), 3 fraud and 2 legitimate labels',
  );
  t.match(rule('risky-flag'), {
    mode: 'enforce',
    fired: 5,
    stepUps: 4,
    outcomes: { approved: 2, declined: 1, abandoned: 1, in_review: 0, pending: 0 },
    fraud: 1,
    legitimate: 1,
    precisionLabels: 0.5,
    precisionDeclines: 1 / 3,
    approvalRate: 0.5,
  });
  t.match(rule('watch-flag'), {
    mode: 'enforce',
    fired: 3,
    stepUps: 3,
    outcomes: { approved: 1, declined: 1, abandoned: 1 },
    fraud: 2,
    legitimate: 0,
    precisionLabels: 1,
    precisionDeclines: 0.5,
    approvalRate: 1 / 3,
  });
  t.match(rule('noisy-flag'), { fired: 1, stepUps: 0, fraud: 1, precisionDeclines: null });
  t.match(rule('shadow-flag'), {
    mode: 'shadow',
    fired: 2,
    stepUps: 2,
    outcomes: { approved: 1, declined: 1 },
    fraud: 1,
  });
  t.same(report.dead, ['never-fires']);
  t.same(report.noisy, ['noisy-flag']);

  // The labelled replay: the candidate lets risky-only sign-ins through and challenges noisy ones.
  const candidate = await loadRuleDir(candidateRules());
  if (!candidate.ok) throw new Error('candidate');
  const lines = stored.map((d) =>
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
  const labels = new Map(stored.filter((d) => d.label).map((d) => [d.record.id, d.label!.label]));
  const replayed2 = replay(lines, candidate.ruleset, 3, labels);
  t.match(
    replayed2.labelled,
    {
      fraud: { total: 3, challengedBefore: 2, stillChallenged: 3, nowLetThrough: 0 },
      legitimate: { total: 2, challengedBefore: 1, challengedAfter: 0, nowLetThrough: 1, newlyChallenged: 0 },
    },
    'frauds B, C stay challenged and F is now; legitimate A is let through',
  );
  t.equal(replayed2.matrix.PASSIVE.SKIP, 4, 'A, D, H1, H2 drop to SKIP');
  t.equal(replayed2.matrix.SKIP.PASSIVE, 1, 'F rises to PASSIVE');
  return { ids };
}
