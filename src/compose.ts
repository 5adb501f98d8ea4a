import { decisionLines } from './logger.js';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { buildApp } from './app.js';
import type { Config, DiditSettings } from './config.js';
import { openDatabase } from './data-io/geoip-files.js';
import { createMetrics, KNOWN_LABELS, stageTimer, type Metrics } from './metrics.js';
import type { ApiToken } from './routes/auth.js';
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
import { openMemoryStore } from './open-store.js';
import { redisReadiness } from './store/redis-client.js';
import { createPseudonymiser } from './store/pseudonymise.js';
import type { Store } from './store/store.js';
import { createBreaker } from './didit/breaker.js';
import { createDiditClient } from './didit/client.js';
import { createStepUpService } from './didit/step-up.js';
import { createWebhookHandler, DEAD_LETTER_TTL_MS } from './didit/webhook-handler.js';
import type { Cluster, Redis } from 'ioredis';
import type { RateLimitSettings } from './routes/rate-limit.js';
import { startEvents, type Events } from './events/service.js';
import type { DispatcherTuning } from './events/dispatcher.js';
import { createRedisOutbox } from './store/outbox-redis.js';
import { createMemoryOutbox } from './store/outbox-memory.js';
import { createMemoryDecisionRecords } from './store/decision-records-memory.js';
import { createRedisDecisionRecords } from './store/decision-records-redis.js';
import type { DecisionRecords } from './store/decision-records.js';
import { createEffectiveness, type Effectiveness } from './events/effectiveness.js';
import type { CompiledRuleset } from './engine/ruleset.js';

export interface ServiceOptions {
  readonly logger: Logger;
  readonly clock?: () => number;
  /** The store openStore chose (server.ts, the CLI, Redis tests); the memory store otherwise. */
  readonly store?: Store;
  /** Watch the rules directory and GeoIP files and hot-swap them (server.ts and the reload tests). */
  readonly watch?: boolean;
  /** The Redis client behind the store, shared by the rate limiter. */
  readonly redis?: Redis | Cluster;
  /** Didit endpoint and secrets: from the config, or the embedded simulator's. */
  readonly didit?: DiditEndpoint;
  /** Outgoing events: another fetch (tests) and loop timings. */
  readonly events?: {
    readonly fetch?: typeof fetch;
    readonly tuning?: Partial<DispatcherTuning>;
    readonly leaseMs?: number;
  };
}

/** A Didit endpoint: the configured account, or the embedded simulator's (server.ts, tests), maybe with another fetch. */
export interface DiditEndpoint extends DiditSettings {
  readonly fetch?: typeof fetch;
}

/** The webhook handler's settings: the service and `rules dead-letters replay` share them. */
export function webhookSettings(config: Config) {
  return {
    toleranceS: config.webhook.toleranceS,
    requireMethodMatch: config.webhook.requireMethodMatch,
    pendingTtlMs: config.retention.pendingMs,
    reviewTtlMs: config.retention.reviewMs,
    trustTtlMs: config.retention.trustMs,
    claimTtlMs: config.retention.claimMs,
    deadLetterTtlMs: DEAD_LETTER_TTL_MS,
  };
}

/** How often each replica settles step-ups whose window lapsed (claims make concurrent sweeps count once). */
export const EFFECTIVENESS_SWEEP_MS = 30_000;

/** Decision records on the store's Redis when there is one, else bounded in this process. */
export function decisionRecordsFor(config: Config, redis?: Redis | Cluster): DecisionRecords {
  const ttlMs = config.retention.decisionRecordMs;
  return redis
    ? createRedisDecisionRecords({ redis, keyPrefix: config.redis.keyPrefix, ttlMs })
    : createMemoryDecisionRecords({ ttlMs });
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
    if (ruleset && cached?.hash !== ruleset.hash)
      cached = {
        hash: ruleset.hash,
        ids: new Set([...ruleset.rules.map((r) => r.id), ...(ruleset.bypasses ?? []).map((b) => `bypass:${b.id}`)]),
      };
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
function eventsFromConfig(
  config: Config,
  options: ServiceOptions,
  metrics: Metrics,
  clock: () => number,
  ids: ReturnType<typeof createPseudonymiser>,
): Events | undefined {
  if (!config.events) return undefined;
  const { outbox: limits, ...settings } = config.events;
  const outbox = options.redis
    ? createRedisOutbox({
        redis: options.redis,
        keyPrefix: config.redis.keyPrefix,
        ...limits,
        ...(options.events?.leaseMs ? { leaseMs: options.events.leaseMs } : {}),
      })
    : createMemoryOutbox({ maxEntries: limits.maxEntries });
  return startEvents(settings, {
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
  });
}

export interface Service extends ServiceParts {
  readonly app: FastifyInstance;
  readonly apiTokens: readonly ApiToken[];
  /** The token generated for this run when API_TOKENS is unset. */
  readonly generatedToken?: string;
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

  const hashKey = config.ids.hashKey ?? { kid: 'eph', secret: randomBytes(32).toString('base64url') };
  // During an ID_HASH_KEY rotation, what was stored under the previous key is read and moved on touch.
  const ids = createPseudonymiser(hashKey, config.ids.previousHashKey);

  // Boot compiles here (nothing is served yet); later reloads are checked in the sandbox first.
  const sandbox = createRuleSandbox({ log: logger });
  let booted = false;
  const rules = createRulesHolder({
    // After boot every reload is checked in the sandbox, waiting for its worker to start when it is
    // idle (stopped after SANDBOX idleMs, to give its memory back): a reload is never urgent enough
    // to compile an unchecked set here.
    load: () => loadRuleDir(config.rules.dir, { ids, now: clock(), ...(booted ? { sandbox } : {}) }),
    log: logger,
    onReload: (outcome, ruleset) => {
      metrics.rulesReloadSuccess.set(outcome.ok ? 1 : 0);
      metrics.rulesetInfo.reset();
      if (ruleset) metrics.rulesetInfo.labels(ruleset.hash).set(1);
    },
  });
  await rules.reload();
  booted = true;

  const {
    geoip,
    lists,
    userAgents,
    geoipPaths: paths,
  } = await loadSignalSources(
    config.data,
    logger,
    (dataset, seconds) => metrics.dataAge.labels(dataset).set(seconds),
    clock,
  );
  const stops: Array<() => void> = [];
  if (options.watch) {
    // Lists are replaced by `npm run data:update` with atomic renames: reload the ones that parse.
    const reloadLists = () =>
      void loadListsFromManifest(config.data.dir).then(
        ({ snapshots, failures }) => {
          for (const snapshot of snapshots) if (snapshot.entries > 0) lists.replace(snapshot);
          for (const failure of failures) {
            metrics.dataReloadFailures.labels('lists').inc();
            logger.error({ list: failure }, 'list update rejected; the previous list keeps serving');
          }
          for (const snap of snapshots)
            metrics.dataAge.labels(`list_${snap.name}`).set(Math.max(0, (clock() - snap.asOf) / 1000));
        },
        () => metrics.dataReloadFailures.labels('lists').inc(),
      );
    for (const dir of await listDirectories(config.data.dir)) stops.push(watchDirectory(dir, reloadLists, 500));
    stops.push(watchDirectory(config.rules.dir, () => void rules.reload()));
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
    for (const snap of lists.snapshots())
      metrics.dataAge.labels(`list_${snap.name}`).set(Math.max(0, (clock() - snap.asOf) / 1000));
  }, 60_000);
  ageTimer.unref();
  stops.push(() => clearInterval(ageTimer));

  // The gauge is written when the store's state changes, not on each of a decide's store calls.
  let storeUp = true;
  const store = instrumentStore(options.store ?? openMemoryStore(config), (up) => {
    if (up === storeUp) return;
    storeUp = up;
    metrics.storeUp.set(up ? 1 : 0);
  });
  metrics.storeUp.set(1);
  const timer = stageTimer(metrics);
  // Shared through Redis when there is one (synced each second), else exact in this process.
  const ipVelocity = options.redis
    ? sharedIpVelocity({
        redis: options.redis,
        keyPrefix: config.redis.keyPrefix,
        onSyncError: () => metrics.degraded.labels('ip_velocity_sync').inc(),
      })
    : localIpVelocity();
  const enrich = createEnricher(
    { geoip, lists, userAgents, store, ids, ipVelocity, userLimit: { perMinute: config.limits.userPerMinute } },
    timer,
  );

  // No API_TOKENS: one token for this run, which server.ts prints once for the quick start.
  const generated =
    config.auth.apiTokens.length > 0 ? undefined : { name: 'embedded', token: randomBytes(24).toString('base64url') };
  const apiTokens = generated ? [generated] : config.auth.apiTokens;
  const parts: ServiceParts = { config, logger, store, metrics, rules, sandbox, lists, ids, clock };

  const events = eventsFromConfig(config, options, metrics, clock, ids);
  const didit: DiditEndpoint | undefined = options.didit ?? config.didit;
  const breaker = createBreaker({ onChange: (open) => metrics.diditCircuitOpen.set(open ? 1 : 0) });
  const client = didit
    ? createDiditClient({
        baseUrl: didit.baseUrl,
        apiKey: didit.apiKey,
        workflows: didit.workflows,
        timeoutMs: config.stepUp.timeoutMs,
        clock,
        breaker,
        ...(didit.fetch ? { fetch: didit.fetch } : {}),
        onRequest: (operation, outcome) => metrics.diditRequests.labels(operation, outcome).inc(),
      })
    : undefined;
  const stepUp = client
    ? createStepUpService({
        client,
        store,
        sealer: ids,
        pendingTtlMs: config.retention.pendingMs,
        userMaxPer15m: config.limits.stepUpsPerUserPer15m,
        deviceMaxPer15m: config.limits.stepUpsPerDevicePer15m,
        globalMaxPerMin: config.limits.stepUpsPerMinute,
        deadlineMs: config.stepUp.timeoutMs + 300,
        log: logger,
        ...(config.stepUp.callbackUrl ? { callbackUrl: config.stepUp.callbackUrl } : {}),
      })
    : undefined;
  const records = decisionRecordsFor(config, options.redis);
  const effectiveness = createEffectiveness({
    records,
    counters: {
      outcome: (rule, method, outcome, shadow) =>
        (shadow ? metrics.shadowStepUpOutcomes : metrics.stepUpOutcomes).labels(rule, method, outcome).inc(),
      feedback: (rule, label) => metrics.feedback.labels(rule, label).inc(),
      failed: (operation) => metrics.effectivenessFailures.labels(operation).inc(),
    },
    ruleLabel: ruleLabeller(() => rules.current()),
    pendingTtlMs: config.retention.pendingMs,
    clock,
    log: logger,
    lines: decisionLines(logger),
    journal: { flushMs: config.journal.flushMs },
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
    keyPrefix: config.redis.keyPrefix,
    ids,
    callerPerMinute: config.limits.callerPerMinute,
    webhookPerMinute: config.limits.webhookPerMinute,
    onFallback: () => metrics.degraded.labels('rate_limit_store').inc(),
    ...(options.redis ? { redis: options.redis } : {}),
  };
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
    callbackPolicy: config.callbacks,
    ...(options.redis ? { readiness: redisReadiness(options.redis, config.redis.allowEviction) } : {}),
    staleData: () => lists.stale(clock()).map((name) => `list_${name}`),
    ...(stepUp ? { stepUp } : {}),
    ...(events ? { events: events.sink } : {}),
    decisions: {
      decided(facts) {
        events?.sink.decided(facts);
        effectiveness.decided(facts);
      },
    },
    effectiveness,
    handleWebhook,
    sandbox,
    rateLimits,
    maxDecidesInFlight: config.pressure.maxDecidesInFlight,
    pressure: config.pressure,
    connections: config.http.connections,
    trustProxy: config.auth.trustProxy,
  });
  return {
    ...parts,
    app,
    apiTokens,
    ...(generated ? { generatedToken: generated.token } : {}),
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
