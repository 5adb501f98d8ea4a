import { readFileSync } from 'node:fs';
import t from 'tap';
import { parse } from 'yaml';
import { createMetrics } from '../../src/metrics.js';

const known = new Set((await createMetrics().registry.getMetricsAsJSON()).map((m) => m.name));
const referenced = (text: string) => [
  ...new Set([...text.matchAll(/\brisk_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''))),
];

t.test('the alert rules parse and only name metrics the service exports', async (t) => {
  const text = readFileSync('data/ops/prometheus-alerts.yaml', 'utf8');
  const doc = parse(text) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
  const alerts = doc.groups.flatMap((g) => g.rules.map((r) => r.alert));
  for (const name of [
    'RiskRulesReloadFailing',
    'RiskDegradedDecisionsHigh',
    'RiskDiditErrors',
    'RiskDiditCircuitOpen',
    'RiskWebhookSignatureFailures',
    'RiskDataStale',
    'RiskListsDegradingDecisions',
    'RiskRuleOnlyAddsFriction',
  ])
    t.ok(alerts.includes(name), name);
  const friction = doc.groups.flatMap((g) => g.rules).find((r) => r.alert === 'RiskRuleOnlyAddsFriction')!;
  t.match(
    friction.expr,
    /sum by \(rule\) \(increase\(risk_stepup_outcomes_total\{outcome="approved"\}\[7d\]\)\)/,
    'approval per rule over a week',
  );
  t.match(friction.expr, /> 0\.98/, 'above 98%');
  for (const metric of referenced(text)) t.ok(known.has(metric), metric);
});

t.test('the dashboard is valid JSON and only names exported metrics', async (t) => {
  const text = readFileSync('data/ops/grafana-dashboard.json', 'utf8');
  const dashboard = JSON.parse(text) as { panels: unknown[] };
  t.ok(dashboard.panels.length >= 10);
  const perRule = (dashboard.panels as Array<{ repeat?: string; targets: Array<{ expr: string }> }>).find(
    (p) => p.repeat === 'rule',
  );
  t.ok(perRule, 'a panel repeated per rule');
  for (const outcome of ['approved', 'declined', 'abandoned'])
    t.ok(
      perRule?.targets.some((q) => q.expr.includes(`outcome="${outcome}"`)),
      `its ${outcome} rate`,
    );
  for (const metric of referenced(text)) t.ok(known.has(metric), metric);
});
