import { readFileSync } from 'node:fs';
import t from 'tap';
import { parse } from 'yaml';
import { createMetrics } from '../../src/metrics.js';

const known = new Set((await createMetrics().registry.getMetricsAsJSON()).map((m) => m.name));
const referenced = (text: string) => [...new Set([...text.matchAll(/\brisk_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, '')))];

t.test('the alert rules parse and only name metrics the service exports', async (t) => {
  const text = readFileSync('data/ops/prometheus-alerts.yaml', 'utf8');
  const doc = parse(text) as { groups: Array<{ rules: Array<{ alert: string; expr: string }> }> };
  const alerts = doc.groups.flatMap((g) => g.rules.map((r) => r.alert));
  for (const name of ['RiskRulesReloadFailing', 'RiskDegradedDecisionsHigh', 'RiskDiditErrors', 'RiskDiditCircuitOpen', 'RiskWebhookSignatureFailures', 'RiskDataStale', 'RiskListsDegradingDecisions']) t.ok(alerts.includes(name), name);
  for (const metric of referenced(text)) t.ok(known.has(metric), metric);
});

t.test('the dashboard is valid JSON and only names exported metrics', async (t) => {
  const text = readFileSync('data/ops/grafana-dashboard.json', 'utf8');
  const dashboard = JSON.parse(text) as { panels: unknown[] };
  t.ok(dashboard.panels.length >= 10);
  for (const metric of referenced(text)) t.ok(known.has(metric), metric);
});
