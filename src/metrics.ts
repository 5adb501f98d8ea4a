import client from 'prom-client';
import type { DiditErrorCode } from './didit/client.js';
import type { WebhookResult } from './didit/webhook-handler.js';
import { RUNGS } from './engine/ladder.js';
import { GEO_DATABASES } from './signals/geoip.js';
import { LABELS, STEP_UP_OUTCOMES } from './store/decision-records.js';

/**
 * `values` must name every member of T: a new member of the union (a new webhook result, a new
 * Didit error code) fails to compile here until it is listed, so its series exists from the start.
 */
const allOf =
  <T extends string>() =>
  <const A extends readonly T[]>(
    values: A & ([Exclude<T, A[number]>] extends [never] ? unknown : { missing: Exclude<T, A[number]> }),
  ): A =>
    values;

/**
 * Every label value known before the first event, in one place. Prometheus advises initialising
 * them: a series that appears only with its first increment is invisible to rate() and increase()
 * at that first step, and an alert on "absent" cannot tell "never happened" from "not exported".
 */
export const KNOWN_LABELS = {
  action: RUNGS,
  /** What enrich, the engine, the per-address sync and the rate limiter report as unavailable. */
  degradedInput: ['geoip', 'lists', 'store', 'signals', 'rules', 'ip_velocity_sync', 'rate_limit_store'],
  diditOperation: ['create_session', 'get_decision'],
  diditOutcome: allOf<DiditErrorCode | 'ok'>()([
    'ok',
    'bad_request',
    'auth',
    'not_found',
    'rate_limited',
    'server',
    'timeout',
    'network',
    'circuit_open',
    'bad_response',
  ]),
  webhookResult: allOf<WebhookResult>()([
    'verified',
    'duplicate',
    'rejected_signature',
    'stale',
    'malformed',
    'ignored',
    'unbound',
    'expired',
    'method_too_weak',
    'out_of_order',
    'network_mismatch',
    'retry_later',
    'too_deep',
    'hold',
    'dead_letter',
  ]),
  /** Deliveries refused for the failures their source sent (the route's own result, beside the handler's). */
  webhookRouteResult: ['rate_limited'],
  rateLimit: ['user', 'caller'],
  /** Why a request was shed with 503: too many decides in flight, a lagging event loop, or read late in a long loop turn. */
  shedReason: ['in_flight', 'event_loop', 'queue_delay'],
  stage: ['enrich', 'store', 'evaluate', 'didit'],
  reloadDataset: ['lists', ...GEO_DATABASES.map((db) => `geoip_${db}` as const)],
  /** The engine's own reasons, beside the ruleset's rule and bypass ids (the other `rule` label values). */
  floorRule: ['floor:degraded', 'floor:cold-start', 'floor:undeclared-purpose', 'floor:engine-error'],
  /** The `rule` value of an id the live ruleset no longer has (a step-up raised before a reload). */
  otherRule: 'other',
  stepUpOutcome: STEP_UP_OUTCOMES,
  feedbackLabel: LABELS,
  effectivenessOperation: ['record', 'outcome', 'sweep'],
} as const;

/** Every metric in one place. Labels are bounded enums: never a user, device, IP or session id. */
export function createMetrics() {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const m = {
    registry,
    decisions: new client.Counter({
      name: 'risk_decisions_total',
      help: 'Decisions by action',
      labelNames: ['action'] as const,
      registers: [registry],
    }),
    ruleFired: new client.Counter({
      name: 'risk_rule_fired_total',
      help: 'Rules that fired, by rule id and mode',
      labelNames: ['rule', 'mode'] as const,
      registers: [registry],
    }),
    shadow: new client.Counter({
      name: 'risk_shadow_decisions_total',
      help: 'What shadow rules would have done',
      labelNames: ['rule', 'live_action', 'shadow_action'] as const,
      registers: [registry],
    }),
    decideDuration: new client.Histogram({
      name: 'risk_decide_duration_seconds',
      help: 'Time to answer a decide',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    stageDuration: new client.Histogram({
      name: 'risk_stage_duration_seconds',
      help: 'Time per decide stage',
      labelNames: ['stage'] as const,
      buckets: [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 2],
      registers: [registry],
    }),
    degraded: new client.Counter({
      name: 'risk_degraded_total',
      help: 'Decisions made with an input unavailable',
      labelNames: ['input'] as const,
      registers: [registry],
    }),
    diditRequests: new client.Counter({
      name: 'risk_didit_requests_total',
      help: 'Calls to Didit by operation and outcome',
      labelNames: ['operation', 'outcome'] as const,
      registers: [registry],
    }),
    diditCircuitOpen: new client.Gauge({
      name: 'risk_didit_circuit_open',
      help: '1 while the Didit circuit breaker is open',
      registers: [registry],
    }),
    webhookEvents: new client.Counter({
      name: 'risk_webhook_events_total',
      help: 'Didit webhook deliveries by result',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    rulesetInfo: new client.Gauge({
      name: 'risk_ruleset_info',
      help: 'The live ruleset hash (value 1)',
      labelNames: ['hash'] as const,
      registers: [registry],
    }),
    rulesReloadSuccess: new client.Gauge({
      name: 'risk_rules_last_reload_success',
      help: '1 when the last rules reload succeeded',
      registers: [registry],
    }),
    dataAge: new client.Gauge({
      name: 'risk_data_age_seconds',
      help: 'Age of each GeoIP database and list',
      labelNames: ['dataset'] as const,
      registers: [registry],
    }),
    bypassUsed: new client.Counter({
      name: 'risk_bypass_used_total',
      help: 'Decisions lowered by a bypass',
      labelNames: ['bypass'] as const,
      registers: [registry],
    }),
    dataReloadFailures: new client.Counter({
      name: 'risk_data_reload_failures_total',
      help: 'Rejected GeoIP or list updates (the previous data keeps serving)',
      labelNames: ['dataset'] as const,
      registers: [registry],
    }),
    rateLimited: new client.Counter({
      name: 'risk_rate_limited_total',
      help: 'Decides refused by a rate limit (user: shared per user; caller: per process)',
      labelNames: ['limit'] as const,
      registers: [registry],
    }),
    shed: new client.Counter({
      name: 'risk_shed_total',
      help: 'Requests refused with 503 + Retry-After under overload, by reason (in_flight: MAX_DECIDES_IN_FLIGHT; event_loop: PRESSURE_MAX_EVENT_LOOP_DELAY_MS; queue_delay: PRESSURE_MAX_QUEUE_DELAY_MS)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    undeclaredPurpose: new client.Counter({
      name: 'risk_undeclared_purpose_total',
      help: 'Decides whose purpose is not declared in rules/purposes.yaml (treated as sensitive; no label: the purpose is caller text)',
      registers: [registry],
    }),
    events: new client.Counter({
      name: 'risk_events_total',
      help: 'Outgoing events by type and result (queued, dropped, delivered, rejected, retry, expired)',
      labelNames: ['type', 'result'] as const,
      registers: [registry],
    }),
    eventsOutboxDepth: new client.Gauge({
      name: 'risk_events_outbox_depth',
      help: 'Events in the outbox not yet delivered, rejected or given up',
      registers: [registry],
    }),
    eventsOutboxOldestAge: new client.Gauge({
      name: 'risk_events_outbox_oldest_age_seconds',
      help: 'Age of the oldest event in the outbox',
      registers: [registry],
    }),
    eventsCircuitOpen: new client.Gauge({
      name: 'risk_events_circuit_open',
      help: '1 while the events receiver circuit breaker is open',
      registers: [registry],
    }),
    stepUpOutcomes: new client.Counter({
      name: 'risk_stepup_outcomes_total',
      help: 'Step-up outcomes (approved, declined, abandoned, in_review), once per rule that raised the step-up',
      labelNames: ['rule', 'method', 'outcome'] as const,
      registers: [registry],
    }),
    shadowStepUpOutcomes: new client.Counter({
      name: 'risk_shadow_stepup_outcomes_total',
      help: 'Partial evidence: outcomes of step-ups a shadow rule would have raised, counted only on sign-ins that stepped up for another reason',
      labelNames: ['rule', 'method', 'outcome'] as const,
      registers: [registry],
    }),
    feedback: new client.Counter({
      name: 'risk_feedback_total',
      help: 'Decisions labelled through /v1/feedback (the first label of each; a replacement is kept in the record and the report), per rule of the labelled decision',
      labelNames: ['rule', 'label'] as const,
      registers: [registry],
    }),
    effectivenessFailures: new client.Counter({
      name: 'risk_effectiveness_failures_total',
      help: 'Decision records, outcomes or sweeps the store did not take (rule effectiveness is missing that much evidence)',
      labelNames: ['operation'] as const,
      registers: [registry],
    }),
    storeUp: new client.Gauge({
      name: 'risk_store_up',
      help: '1 when the state store answered its last call',
      registers: [registry],
    }),
  };
  // Bounded label values exist from the start, so rate() sees the first event and the series
  // count does not move with traffic.
  for (const action of KNOWN_LABELS.action) m.decisions.labels(action).inc(0);
  for (const input of KNOWN_LABELS.degradedInput) m.degraded.labels(input).inc(0);
  for (const operation of KNOWN_LABELS.diditOperation)
    for (const outcome of KNOWN_LABELS.diditOutcome) m.diditRequests.labels(operation, outcome).inc(0);
  for (const result of [...KNOWN_LABELS.webhookResult, ...KNOWN_LABELS.webhookRouteResult])
    m.webhookEvents.labels(result).inc(0);
  for (const limit of KNOWN_LABELS.rateLimit) m.rateLimited.labels(limit).inc(0);
  for (const reason of KNOWN_LABELS.shedReason) m.shed.labels(reason).inc(0);
  for (const stage of KNOWN_LABELS.stage) m.stageDuration.zero({ stage });
  for (const dataset of KNOWN_LABELS.reloadDataset) m.dataReloadFailures.labels(dataset).inc(0);
  for (const operation of KNOWN_LABELS.effectivenessOperation) m.effectivenessFailures.labels(operation).inc(0);
  m.diditCircuitOpen.set(0);
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * Label children looked up once per label value: `labels()` hashes its arguments on every call,
 * which on the decide path costs more than the observation itself. Only for bounded label values.
 */
export function children<C>(labels: (value: string) => C): (value: string) => C {
  const cache = new Map<string, C>();
  return (value) => {
    let child = cache.get(value);
    if (child === undefined) cache.set(value, (child = labels(value)));
    return child;
  };
}

export type Stage = (typeof KNOWN_LABELS.stage)[number];

/** Seconds since a `process.hrtime.bigint()` reading. */
export function secondsSince(startedAt: bigint): number {
  return Number(process.hrtime.bigint() - startedAt) / 1e9;
}

/** Observes a decide stage's duration from its start: the one way every stage is timed. */
export function stageTimer(metrics: Metrics) {
  const stage = children((name) => metrics.stageDuration.labels(name));
  return (name: Stage, startedAt: bigint): void => {
    stage(name).observe(secondsSince(startedAt));
  };
}
