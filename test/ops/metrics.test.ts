import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import t from 'tap';
import { KNOWN_LABELS } from '../../src/metrics.js';
import { createMetricsApp } from '../../src/routes/metrics-listener.js';
import { startTestService, injectDecide } from '../helpers/service.js';

const service = await startTestService();
const metricsApp = createMetricsApp(service.metrics.registry);
t.teardown(async () => {
  await service.close();
  await metricsApp.close();
});

const scrape = async () => {
  const response = await metricsApp.inject({ method: 'GET', url: '/metrics' });
  return {
    text: response.body,
    families: parsePrometheusTextFormat(response.body) as Array<{
      name: string;
      metrics: Array<{ labels?: Record<string, string> }>;
    }>,
  };
};
/** Every series of our own metrics, name and labels (the parser folds histogram buckets, so read the text). */
const seriesOf = (text: string) =>
  new Set(
    text
      .split('\n')
      .filter((line) => line.startsWith('risk_'))
      .map((line) => line.replace(/ \S+$/, '')),
  );
/**
 * Sign-in number i: its own user, device and address. Addresses step through the whole IPv4 space
 * (a multiplicative hash), so a run meets many countries, networks and address kinds: a label taken
 * from any of them would add series.
 */
const decide = (i: number) => {
  const ip = Math.imul(i, 2654435761) >>> 0;
  return injectDecide(service, {
    user_id: `user-${i}`,
    device_id: `device-${i}`,
    ip: [24, 16, 8, 0].map((shift) => (ip >>> shift) & 255).join('.'),
  });
};

t.test('/metrics is served only on the internal listener', async (t) => {
  t.equal((await service.app.inject({ method: 'GET', url: '/metrics' })).statusCode, 404);
  t.equal((await metricsApp.inject({ method: 'GET', url: '/metrics' })).statusCode, 200);
});

t.test('the exposition parses with a Prometheus text parser and has the required series', async (t) => {
  const required = [
    'risk_decisions_total',
    'risk_rule_fired_total',
    'risk_decide_duration_seconds',
    'risk_stage_duration_seconds',
    'risk_degraded_total',
    'risk_didit_requests_total',
    'risk_didit_circuit_open',
    'risk_webhook_events_total',
    'risk_ruleset_info',
    'risk_rules_last_reload_success',
    'risk_data_age_seconds',
    'risk_store_up',
    'risk_rate_limited_total',
    'risk_shed_total',
    'risk_data_reload_failures_total',
    'process_cpu_user_seconds_total',
    'nodejs_eventloop_lag_seconds',
  ];
  // Before the first event: every counter with label values known in advance already has a 0 series.
  const fresh = await scrape();
  const sample = (name: string, labels: Record<string, string>) =>
    fresh.families
      .find((f) => f.name === name)
      ?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)) as
      | { value?: string }
      | undefined;
  const initialised: Array<[string, Record<string, string>]> = [
    ...KNOWN_LABELS.action.map((action): [string, Record<string, string>] => ['risk_decisions_total', { action }]),
    ...KNOWN_LABELS.degradedInput.map((input): [string, Record<string, string>] => ['risk_degraded_total', { input }]),
    ...KNOWN_LABELS.diditOperation.flatMap((operation) =>
      KNOWN_LABELS.diditOutcome.map((outcome): [string, Record<string, string>] => [
        'risk_didit_requests_total',
        { operation, outcome },
      ]),
    ),
    ...[...KNOWN_LABELS.webhookResult, ...KNOWN_LABELS.webhookRouteResult].map(
      (result): [string, Record<string, string>] => ['risk_webhook_events_total', { result }],
    ),
    ...KNOWN_LABELS.rateLimit.map((limit): [string, Record<string, string>] => ['risk_rate_limited_total', { limit }]),
    ...KNOWN_LABELS.shedReason.map((reason): [string, Record<string, string>] => ['risk_shed_total', { reason }]),
    ...KNOWN_LABELS.reloadDataset.map((dataset): [string, Record<string, string>] => [
      'risk_data_reload_failures_total',
      { dataset },
    ]),
    ...KNOWN_LABELS.effectivenessOperation.map((operation): [string, Record<string, string>] => [
      'risk_effectiveness_failures_total',
      { operation },
    ]),
  ];
  t.equal(
    initialised.length,
    5 + 7 + 2 * 10 + 16 + 2 + 3 + 5 + 3,
    'the known label values (a new one changes this count on purpose)',
  );
  for (const [name, labels] of initialised)
    t.equal(sample(name, labels)?.value, '0', `${name}${JSON.stringify(labels)} is 0 before the first event`);
  for (const stage of KNOWN_LABELS.stage)
    t.ok(
      fresh.text.includes(`risk_stage_duration_seconds_count{stage="${stage}"} 0`),
      `stage ${stage} has a zero histogram`,
    );
  t.match(fresh.text, /^risk_didit_circuit_open 0$/m);
  const { action } = (await decide(0)).json() as { action: string };
  const { families, text } = await scrape();
  const names = new Set(families.map((f) => f.name));
  for (const name of required) t.ok(names.has(name), name);
  for (const stage of ['enrich', 'store', 'evaluate'])
    t.match(
      text,
      new RegExp(`^risk_stage_duration_seconds_count\\{stage="${stage}"\\} [1-9]`, 'm'),
      `stage ${stage} observed`,
    );
  t.match(
    text,
    new RegExp(`^risk_decisions_total\\{action="${action}"\\} 1$`, 'm'),
    `the ${action} decide counted once`,
  );
});

// Series appear with the first distinct value of a label, so any id or address in one shows at once;
// 10,000 addresses spread over the space meet the bounded-but-wide values (countries, networks).
t.test(
  '10,000 distinct users, devices and IPs add no series but first firings of the ruleset, and no label carries an id',
  async (t) => {
    for (let i = 1; i <= 200; i++) await decide(i);
    const before = seriesOf((await scrape()).text);
    const total = 10_000;
    const statuses: Record<number, number> = {};
    for (let start = 201; start <= total; start += 100)
      for (const reply of await Promise.all(Array.from({ length: 100 }, (_, k) => decide(start + k))))
        statuses[reply.statusCode] = (statuses[reply.statusCode] ?? 0) + 1;
    t.same(
      statuses,
      { 200: total - 200 },
      'every decide answered 200 (a refused one never reaches the labelled series)',
    );
    const { families, text } = await scrape();
    const after = seriesOf(text);
    // A rule that first fires on an address kind met late adds its own series: bounded by the ruleset.
    const firsts = new Set(
      service.rules.current()!.rules.map((r) => `risk_rule_fired_total{rule="${r.id}",mode="${r.mode}"}`),
    );
    const added = [...after].filter((s) => !before.has(s));
    t.comment(`${before.size} risk_* series after 200 users, ${after.size} after ${total}; added: ${added.join(' ')}`);
    t.same(
      added.filter((s) => !firsts.has(s)),
      [],
      'no series added but a rule of the loaded ruleset firing for the first time',
    );
    t.ok(after.size <= 300, 'bounded');
    t.notOk(/user-\d|device-\d/.test(text), 'no user or device in any label');
    const labelValues = families.flatMap((f) => f.metrics.flatMap((m) => Object.values(m.labels ?? {})));
    t.notOk(
      labelValues.some((v) => /^\d+\.\d+\.\d+\.\d+$/.test(v) || /t1\./.test(v)),
      'no IP or pseudonym in any label',
    );
  },
);
