import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildApp } from './app.js';
import { callbackPolicyOf, type Config } from './config.js';
import { openDatabase } from './data-io/geoip-files.js';
import { createMetrics, KNOWN_LABELS, stageTimer, type Metrics } from './metrics.js';
import { parseApiTokens, type ApiToken } from './routes/auth.js';
import { createRulesHolder, type RulesHolder } from './rules-io/rules-holder.js';
import { loadRuleDir } from './rules-io/load.js';
import { createRuleSandbox, type RuleSandbox } from './rules-io/rule-sandbox.js';
import { createEnricher } from './signals/enrich.js';
import { localIpVelocity } from './signals/ip-velocity.js';
import { onTrustNetwork } from './signals/ip.js';
import { sharedIpVelocity } from './store/ip-velocity-sync.js';
import { watchGeoDatabases } from './data-io/geoip-watch.js';
import { watchDirectory } from './lib/watch-directory.js';
import type { IpLists } from './signals/ip-lists.js';
import { instrumentStore } from './store/instrumented-store.js';
import { loadSignalSources } from './data-io/load-sources.js';
import { listDirectories, loadListsFromManifest } from './data-io/list-files.js';
import { createMemoryStore } from './store/memory-store.js';
import { redisReadiness } from './store/redis-client.js';
import { retentionFromConfig } from './open-store.js';
import { createPseudonymiser, pseudonymiserOf } from './store/pseudonymise.js';
import type { Store } from './store/store.js';
import { createBreaker } from './didit/breaker.js';
import { createDiditClient } from './didit/client.js';
import { createStepUpService } from './didit/step-up.js';
import { createWebhookHandler, DEAD_LETTER_TTL_MS } from './didit/webhook-handler.js';
import type { StepUpRung } from './engine/ladder.js';
import type { Cluster, Redis } from 'ioredis';
import { webhookFailureLimit, type RateLimitSettings } from './routes/rate-limit.js';
import { registerDiditWebhook } from './routes/didit-webhook.js';
import { registerSessions } from './routes/sessions.js';
import { registerUsers } from './routes/users.js';
import { registerEvaluate } from './routes/evaluate.js';
import { startEvents, type Events } from './events/service.js';
import type { DispatcherTuning } from './events/dispatcher.js';
import { createRedisOutbox } from './store/outbox-redis.js';
import { createMemoryOutbox } from './store/outbox-memory.js';
import { createMemoryDecisionRecords } from './store/decision-records-memory.js';
import { createRedisDecisionRecords } from './store/decision-records-redis.js';
import type { DecisionRecords } from './store/decision-records.js';
import { createEffectiveness, type Effectiveness } from './events/effectiveness.js';
import { registerFeedback } from './routes/feedback.js';
import type { CompiledRuleset } from './engine/ruleset.js';

export interface ServiceOptions {
  readonly logger: Logger;
  readonly clock?: () => number;
  /** A store built by the caller (server.ts builds Redis); the memory store otherwise. */
  readonly store?: Store;
  /** Watch the rules directory and GeoIP files and hot-swap them (server.ts and the reload tests). */
  readonly watch?: boolean;
  /** The Redis client behind the store, shared by the rate limiter. */
  readonly redis?: Redis | Cluster;
  /** Didit endpoint and secrets: from the config, or the embedded simulator's. */
  readonly didit?: DiditSettings;
  /** Outgoing events: another fetch (tests) and loop timings. */
  readonly events?: { readonly fetch?: typeof fetch; readonly tuning?: Partial<DispatcherTuning>; readonly leaseMs?: number };
}

export interface DiditSettings {
  readonly baseUrl: string;
  readonly apiKey: string;
  readonly webhookSecrets: readonly string[];
  readonly workflows: Readonly<Record<StepUpRung, string>>;
  readonly fetch?: typeof fetch;
}

/** Didit settings from the environment, when a real Didit is configured. */
export function diditFromConfig(config: Config): DiditSettings | undefined {
  if (!config.DIDIT_API_KEY || !config.DIDIT_BASE_URL || !config.DIDIT_WEBHOOK_SECRET) return undefined;
  return {
    baseUrl: config.DIDIT_BASE_URL,
    apiKey: config.DIDIT_API_KEY,
    webhookSecrets: [config.DIDIT_WEBHOOK_SECRET, ...(config.DIDIT_WEBHOOK_SECRET_PREVIOUS ? [config.DIDIT_WEBHOOK_SECRET_PREVIOUS] : [])],
    workflows: { PASSIVE: config.DIDIT_WORKFLOW_PASSIVE!, FLASHING: config.DIDIT_WORKFLOW_FLASHING!, ACTIVE_3D: config.DIDIT_WORKFLOW_ACTIVE_3D! },
  };
}

/** The webhook handler's settings from the config: the service and `rules dead-letters replay` share them. */
export function webhookSettings(config: Config) {
  return {
    toleranceS: config.WEBHOOK_TOLERANCE_S,
    pendingTtlMs: config.PENDING_TTL_MINUTES * 60_000,
    reviewTtlMs: config.DIDIT_REVIEW_TTL_HOURS * 3600_000,
    trustTtlMs: retentionFromConfig(config).trustMs,
    claimTtlMs: retentionFromConfig(config).claimMs,
    deadLetterTtlMs: DEAD_LETTER_TTL_MS,
    requireMethodMatch: config.DIDIT_REQUIRE_METHOD_MATCH,
  };
}

/** How often each replica settles step-ups whose window lapsed (claims make concurrent sweeps count once). */
export const EFFECTIVENESS_SWEEP_MS = 30_000;

/** Decision records on the store's Redis when there is one, else bounded in this process. */
export function decisionRecordsFor(config: Config, redis?: Redis | Cluster): DecisionRecords {
  const ttlMs = config.DECISION_RECORD_TTL_DAYS * 86_400_000;
  return redis ? createRedisDecisionRecords({ redis, keyPrefix: config.REDIS_KEY_PREFIX, ttlMs }) : createMemoryDecisionRecords({ ttlMs });
}

/**
 * The metric label of a rule id: an id of the live ruleset (rule or bypass) or an engine floor, else
 * `other`. Bounded by the ruleset, whatever a stored record names.
 */
export function ruleLabeller(current: () => CompiledRuleset | undefined): (rule: string) => string {
  let cached: { hash: string; ids: Set<string> } | undefined;
  const floors = new Set<string>(KNOWN_LABELS.floorRule);
  return (rule) => {
    const ruleset = current();
    if (ruleset && cached?.hash !== ruleset.hash) cached = { hash: ruleset.hash, ids: new Set([...ruleset.rules.map((r) => r.id), ...(ruleset.bypasses ?? []).map((b) => `bypass:${b.id}`)]) };
    return floors.has(rule) || cached?.ids.has(rule) ? rule : KNOWN_LABELS.otherRule;
  };
}

export interface ServiceParts {
  readonly config: Config;
  readonly logger: Logger;
  readonly store: Store;
  readonly metrics: Metrics;
  readonly rules: RulesHolder;
  /** Where untrusted rulesets and rule reloads are compiled (a worker with a deadline). */
  readonly sandbox: RuleSandbox;
  readonly lists: IpLists;
  readonly ids: ReturnType<typeof createPseudonymiser>;
  readonly clock: () => number;
}

/** EVENTS_URL set: the outbox (Redis Stream with Redis, else in process), the sink and the delivery worker. */
function eventsFromConfig(config: Config, options: ServiceOptions, metrics: Metrics, clock: () => number, ids: ReturnType<typeof createPseudonymiser>): Events | undefined {
  if (!config.EVENTS_URL || !config.EVENTS_SECRET) return undefined;
  const retryMs = config.EVENTS_RETRY_HOURS * 3600_000;
  const outbox = options.redis
    ? createRedisOutbox({ redis: options.redis, keyPrefix: config.REDIS_KEY_PREFIX, maxEntries: config.EVENTS_OUTBOX_MAX, ttlMs: retryMs + 3600_000, ...(options.events?.leaseMs ? { leaseMs: options.events.leaseMs } : {}) })
    : createMemoryOutbox({ maxEntries: config.EVENTS_OUTBOX_MAX });
  return startEvents(
    {
      url: config.EVENTS_URL,
      secrets: [config.EVENTS_SECRET, ...(config.EVENTS_SECRET_PREVIOUS ? [config.EVENTS_SECRET_PREVIOUS] : [])],
      includeUserId: config.EVENTS_INCLUDE_USER_ID,
      decisions: config.EVENTS_DECISIONS,
      maxConcurrency: config.EVENTS_MAX_CONCURRENCY,
      timeoutMs: config.EVENTS_TIMEOUT_MS,
      retryMs,
      // Two command deadlines (250 ms by default, the enricher's store deadline): an append never
      // holds a webhook or a revoke longer than a store read does.
      appendDeadlineMs: config.REDIS_COMMAND_TIMEOUT_MS * 2 + 50,
    },
    {
      outbox,
      sealer: ids,
      clock,
      log: options.logger,
      count: (type, result) => metrics.events.labels(type, result).inc(),
      gauges: (stats) => {
        metrics.eventsOutboxDepth.set(stats.depth);
        metrics.eventsOutboxOldestAge.set(stats.oldestAgeMs / 1000);
      },
      circuit: (open) => metrics.eventsCircuitOpen.set(open ? 1 : 0),
      ...(options.events?.fetch ? { fetch: options.events.fetch } : {}),
      ...(options.events?.tuning ? { tuning: options.events.tuning } : {}),
    },
  );
}

export interface Service extends ServiceParts {
  readonly app: FastifyInstance;
  readonly apiTokens: readonly ApiToken[];
  /** The outgoing events sink, when EVENTS_URL is set. */
  readonly events?: Events['sink'];
  /** Decision records (outcomes, labels) and what joins verdicts and labels to rules. */
  readonly records: DecisionRecords;
  readonly effectiveness: Effectiveness;
  close(): Promise<void>;
}

/** Wires every part from the validated config. The only IO here is reading local files. */
export async function createService(config: Config, options: ServiceOptions): Promise<Service> {
  const { logger } = options;
  const clock = options.clock ?? Date.now;
  const metrics = createMetrics();

  const ids = config.ID_HASH_KEY
    ? pseudonymiserOf(config.ID_HASH_KEY, config.ID_HASH_KEY_PREVIOUS || undefined)
    : createPseudonymiser({ kid: 'eph', secret: randomBytes(32).toString('base64url') });

  // Boot compiles here (nothing is served yet); later reloads are checked in the sandbox first.
  const sandbox = createRuleSandbox({ log: logger });
  let booted = false;
  const rules = createRulesHolder({
    // Until the sandbox's worker has started (its first seconds), a reload compiles here, under the
    // same static bounds and regex budget, rather than wait for it.
    load: () => loadRuleDir(config.RULES_DIR, { ids, now: clock(), ...(booted && sandbox.ready() ? { sandbox } : {}) }),
    log: logger,
    onReload: (outcome, ruleset) => {
      metrics.rulesReloadSuccess.set(outcome.ok ? 1 : 0);
      metrics.rulesetInfo.reset();
      if (ruleset) metrics.rulesetInfo.labels(ruleset.hash).set(1);
    },
  });
  await rules.reload();
  booted = true;
  // A server that hot-reloads starts its sandbox now, so reloads are checked there from the start.
  if (options.watch) void sandbox.warm();

  const { geoip, lists, userAgents, geoipPaths: paths } = await loadSignalSources(config, logger, (dataset, seconds) => metrics.dataAge.labels(dataset).set(seconds), clock);
  const stops: Array<() => void> = [];
  if (options.watch) {
    // Lists are replaced by `npm run data:update` with atomic renames: reload the ones that parse.
    const reloadLists = () =>
      void loadListsFromManifest(config.DATA_DIR).then(
        ({ snapshots, failures }) => {
          for (const snapshot of snapshots) if (snapshot.entries > 0) lists.replace(snapshot);
          for (const failure of failures) {
            metrics.dataReloadFailures.labels('lists').inc();
            logger.error({ list: failure }, 'list update rejected; the previous list keeps serving');
          }
          for (const snap of snapshots) metrics.dataAge.labels(`list_${snap.name}`).set(Math.max(0, (clock() - snap.asOf) / 1000));
        },
        () => metrics.dataReloadFailures.labels('lists').inc(),
      );
    for (const dir of await listDirectories(config.DATA_DIR)) stops.push(watchDirectory(dir, reloadLists, 500));
    stops.push(watchDirectory(config.RULES_DIR, () => void rules.reload()));
    stops.push(
      watchGeoDatabases(geoip, paths, openDatabase, {
        swapped: (db, loaded) => {
          metrics.dataAge.labels(`geoip_${db}`).set(Math.max(0, clock() / 1000 - loaded.buildEpoch));
          logger.info({ database: db, type: loaded.type }, 'GeoIP database swapped in');
        },
        rejected: (db, reason) => {
          metrics.dataReloadFailures.labels(`geoip_${db}`).inc();
          logger.error({ database: db, reason }, 'GeoIP update rejected; the previous reader keeps serving');
        },
      }),
    );
  }

  // Ages grow while the process runs: refresh the gauges the staleness alert reads.
  const ageTimer = setInterval(() => {
    for (const snap of lists.snapshots()) metrics.dataAge.labels(`list_${snap.name}`).set(Math.max(0, (clock() - snap.asOf) / 1000));
  }, 60_000);
  ageTimer.unref();
  stops.push(() => clearInterval(ageTimer));

  const store = instrumentStore(options.store ?? createMemoryStore({ retention: retentionFromConfig(config) }), (up) => metrics.storeUp.set(up ? 1 : 0));
  metrics.storeUp.set(1);
  const timer = stageTimer(metrics);
  // Shared through Redis when there is one (synced each second), else exact in this process.
  const ipVelocity = options.redis
    ? sharedIpVelocity({ redis: options.redis, keyPrefix: config.REDIS_KEY_PREFIX, onSyncError: () => metrics.degraded.labels('ip_velocity_sync').inc() })
    : localIpVelocity();
  const enrich = createEnricher({ geoip, lists, userAgents, store, ids, ipVelocity, userLimit: { perMinute: config.RATE_LIMIT_USER_PER_MIN } }, timer);

  const apiTokens = config.API_TOKENS ? parseApiTokens(config.API_TOKENS) : [{ name: 'embedded', token: randomBytes(24).toString('base64url') }];
  const parts: ServiceParts = { config, logger, store, metrics, rules, sandbox, lists, ids, clock };

  const events = eventsFromConfig(config, options, metrics, clock, ids);
  const didit = options.didit ?? diditFromConfig(config);
  const breaker = createBreaker({ onChange: (open) => metrics.diditCircuitOpen.set(open ? 1 : 0) });
  const client = didit
    ? createDiditClient({
        baseUrl: didit.baseUrl,
        apiKey: didit.apiKey,
        workflows: didit.workflows,
        timeoutMs: config.DIDIT_TIMEOUT_MS,
        clock,
        breaker,
        ...(didit.fetch ? { fetch: didit.fetch } : {}),
        onRequest: (operation, outcome) => metrics.diditRequests.labels(operation, outcome).inc(),
      })
    : undefined;
  const pendingTtlMs = config.PENDING_TTL_MINUTES * 60_000;
  const stepUp = client
    ? createStepUpService({
        client,
        store,
        sealer: ids,
        pendingTtlMs,
        userMaxPer15m: config.STEPUP_USER_MAX_PER_15M,
        deviceMaxPer15m: config.STEPUP_DEVICE_MAX_PER_15M,
        globalMaxPerMin: config.STEPUP_GLOBAL_MAX_PER_MIN,
        deadlineMs: config.DIDIT_TIMEOUT_MS + 300,
        log: logger,
        ...(config.DIDIT_CALLBACK_URL ? { callbackUrl: config.DIDIT_CALLBACK_URL } : {}),
      })
    : undefined;
  const records = decisionRecordsFor(config, options.redis);
  const effectiveness = createEffectiveness({
    records,
    counters: {
      outcome: (rule, method, outcome, shadow) => (shadow ? metrics.shadowStepUpOutcomes : metrics.stepUpOutcomes).labels(rule, method, outcome).inc(),
      feedback: (rule, label) => metrics.feedback.labels(rule, label).inc(),
      failed: (operation) => metrics.effectivenessFailures.labels(operation).inc(),
    },
    ruleLabel: ruleLabeller(() => rules.current()),
    pendingTtlMs,
    clock,
    log: logger,
  });
  const stopSweep = effectiveness.start(EFFECTIVENESS_SWEEP_MS);
  const handleWebhook = createWebhookHandler({
    store,
    ids,
    secrets: didit?.webhookSecrets ?? [],
    ...webhookSettings(config),
    onNetwork: onTrustNetwork(ids),
    clock,
    ...(client ? { client } : {}),
    events: {
      async stepUpOutcome(applied) {
        await events?.sink.stepUpOutcome(applied);
        await effectiveness.stepUpOutcome(applied);
      },
    },
  });
  const rateLimits: RateLimitSettings = {
    keyPrefix: config.REDIS_KEY_PREFIX,
    ids,
    callerPerMinute: config.RATE_LIMIT_CALLER_PER_MIN,
    webhookPerMinute: config.RATE_LIMIT_WEBHOOK_PER_MIN,
    onFallback: () => metrics.degraded.labels('rate_limit_store').inc(),
    ...(options.redis ? { redis: options.redis } : {}),
  };
  const plugins = [
    (app: FastifyInstance) => registerDiditWebhook(app, { handle: handleWebhook, metrics, failures: webhookFailureLimit(rateLimits, clock) }),
    (app: FastifyInstance) => registerSessions(app, { store, ids, clock }),
    (app: FastifyInstance) => registerUsers(app, { store, ids, clock, ...(events ? { events: events.sink } : {}) }),
    (app: FastifyInstance) => registerEvaluate(app, { rules, clock, sandbox }),
    (app: FastifyInstance) => registerFeedback(app, { effectiveness }),
  ];
  const app = buildApp({
    logger,
    rules,
    enrich,
    store,
    ids,
    metrics,
    apiTokens,
    clock,
    embedded: config.embedded,
    callbackPolicy: callbackPolicyOf(config),
    ...(options.redis ? { readiness: redisReadiness(options.redis, config.REDIS_ALLOW_EVICTION) } : {}),
    staleData: () => lists.stale(clock()).map((name) => `list_${name}`),
    ...(stepUp ? { stepUp } : {}),
    events: {
      decided(facts) {
        events?.sink.decided(facts);
        effectiveness.decided(facts);
      },
    },
    plugins,
    rateLimits,
    maxDecidesInFlight: config.MAX_DECIDES_IN_FLIGHT,
    pressure: { maxEventLoopDelayMs: config.PRESSURE_MAX_EVENT_LOOP_DELAY_MS, sampleIntervalMs: config.PRESSURE_SAMPLE_INTERVAL_MS },
    connections: { max: config.HTTP_MAX_CONNECTIONS, perAddress: config.HTTP_MAX_CONNECTIONS_PER_ADDRESS },
    ...(config.TRUST_PROXY ? { trustProxy: config.TRUST_PROXY.split(',').map((s) => s.trim()) } : {}),
  });
  return {
    ...parts,
    app,
    apiTokens,
    ...(events ? { events: events.sink } : {}),
    records,
    effectiveness,
    async close() {
      ipVelocity.close();
      stopSweep();
      for (const stop of stops) stop();
      await app.close();
      // The decides' record writes, before the store's client closes.
      await effectiveness.flush();
      // After the routes drained (their events are in the outbox), before the store's client closes.
      await events?.close();
      await sandbox.close();
      await store.close();
    },
  };
}
