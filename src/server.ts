// First: V8 flags must be set before anything allocates in bulk.
import './v8-flags.js';
import closeWithGrace from 'close-with-grace';
import type { Logger } from 'pino';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createLogger } from './logger.js';
import { createMetricsApp } from './routes/metrics-listener.js';
import { updateData } from './data-io/data-update.js';
import { createSimulator, simulatorCredentials } from './didit/simulator.js';
import { createService, type DiditEndpoint, type Service } from './compose.js';
import { openStore } from './open-store.js';
import { createDrain } from './lib/drain.js';
import { COMMAND_LINE_FLAGS, missingCommandLineFlags } from './node-flags.js';

type Simulator = ReturnType<typeof createSimulator>;

/** The settings, or exit 2 with every problem on stderr. */
function readConfig(): Config {
  try {
    return loadConfig(process.env, { server: true });
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
}

/**
 * No Didit key: the offline simulator on loopback, and the endpoint the service calls it at (config
 * refuses this when anything production-like is set). With a key, the simulator is never created.
 */
function offlineDidit(config: Config): { simulator: Simulator; port: number; didit: DiditEndpoint } | undefined {
  if (!config.simulator) return undefined;
  const credentials = simulatorCredentials();
  const port = config.simulator.port;
  const baseUrl = `http://127.0.0.1:${port}`;
  const simulator = createSimulator({
    ...credentials,
    publicBaseUrl: baseUrl,
    webhookUrl: `http://127.0.0.1:${config.listen.port}/v1/webhooks/didit`,
    retryDelaysMs: [2000, 8000],
    callbackPolicy: config.callbacks,
  });
  return {
    simulator,
    port,
    didit: {
      baseUrl,
      apiKey: credentials.apiKey,
      webhookSecrets: [credentials.webhookSecret],
      workflows: credentials.workflows,
    },
  };
}

/** Says loudly which embedded defaults this run uses: each is fine for a try-out, wrong in production. */
function warnEmbeddedDefaults(config: Config, service: Service, logger: Logger): void {
  if (config.embedded.length > 0) {
    logger.warn(
      { embedded_defaults: config.embedded },
      'EMBEDDED DEFAULTS IN USE: not for production (see data/ops/README.md)',
    );
  }
  if (config.embedded.includes('maxmind-test-databases')) {
    logger.warn(
      'GeoIP: MaxMind TEST databases (made-up data). Set GEOIP_CITY_DB and GEOIP_ASN_DB to real GeoLite2/GeoIP2 files, or run npm run data:update with MAXMIND_LICENSE_KEY',
    );
  }
  if (config.embedded.includes('memory-store'))
    logger.warn('STORE: in-memory (one process, lost on restart). Set REDIS_URL for production');
  if (config.embedded.includes('ephemeral-id-hash-key'))
    logger.warn('ID_HASH_KEY not set: pseudonyms use a random per-process key');
  const missing = missingCommandLineFlags();
  if (missing.length > 0)
    logger.warn(
      { missing_node_flags: missing, expected: COMMAND_LINE_FLAGS },
      'node was started without the flags npm start passes: latency after a quiet spell suffers (see data/ops/README.md)',
    );
  if (service.generatedToken) {
    // Printed once to stdout for the quick start; never logged through pino.
    process.stdout.write(
      `\n  API token for this run (set API_TOKENS=name:token to choose your own):\n  Authorization: Bearer ${service.generatedToken}\n\n`,
    );
  }
}

/** Refreshes the configured IP lists every LIST_REFRESH_MINUTES (none configured: nothing runs). */
function scheduleListRefresh(config: Config, logger: Logger): void {
  const { refreshMs, urls: listUrls } = config.data.lists;
  if (refreshMs <= 0 || Object.keys(listUrls).length === 0) return;
  // Conditional GET, validate, atomic rename; the data watcher swaps the new lists in.
  const refresh = () =>
    updateData({ dataDir: config.data.dir, maxmindBaseUrl: '', editions: {}, listUrls }).then(
      (report) => logger.info({ lists: report }, 'list refresh'),
      (error: Error) => logger.error({ err: error.message }, 'list refresh failed; the last good lists keep serving'),
    );
  setInterval(() => void refresh(), refreshMs).unref();
}

/**
 * SIGHUP reloads the rules. SIGTERM/SIGINT drain in-flight requests (new ones get 503 + Connection:
 * close) and exit within 5 s; a second signal exits at once. SIGHUP is skipped by the drain: it
 * reloads rules, it never stops us.
 */
function handleSignals(
  parts: {
    service: Service;
    metricsApp: ReturnType<typeof createMetricsApp>;
    simulator: Simulator | undefined;
    drain: ReturnType<typeof createDrain>;
  },
  logger: Logger,
): void {
  const { service, metricsApp, simulator, drain } = parts;
  process.on('SIGHUP', () => {
    logger.info('SIGHUP: reloading rules');
    void service.rules.reload();
  });
  closeWithGrace({ delay: 5000, skip: ['SIGHUP'] }, async ({ signal, err }) => {
    if (err) logger.error({ err: { type: err.name, message: err.message } }, 'fatal error: shutting down');
    else logger.info({ signal }, 'shutting down: draining in-flight requests');
    // Kept-alive sockets close after their next answer; those silent for 1 s are idle and reaped below.
    const drained = await drain.start(1000);
    logger.info({ drain_ms: drained.ms, idle_connections: drained.left }, 'drained');
    await Promise.allSettled([service.close(), metricsApp.close(), simulator?.app.close()]);
  });
}

/** The only place that reads the environment, opens sockets and handles signals. */
async function main(): Promise<void> {
  const config = readConfig();
  const logger = createLogger(config.log.level);
  const offline = offlineDidit(config);
  const { store, redis } = await openStore(config, { logger });
  const service = await createService(config, {
    logger,
    watch: true,
    store,
    ...(offline ? { didit: offline.didit } : {}),
    ...(redis ? { redis } : {}),
  });
  warnEmbeddedDefaults(config, service, logger);
  const metricsApp = createMetricsApp(service.metrics.registry);
  scheduleListRefresh(config, logger);

  // Sockets open only once everything above has loaded: a failed start leaves nothing listening.
  if (offline) {
    await offline.simulator.app.listen({ port: offline.port, host: '127.0.0.1' });
    logger.warn(
      { simulator: offline.didit.baseUrl },
      'DIDIT: offline SIMULATOR in use (no DIDIT_API_KEY); step-up URLs open its Approve / Decline page',
    );
  }
  const drain = createDrain(service.app);
  await service.app.listen({ ...config.listen });
  await metricsApp.listen({ ...config.metrics });
  logger.info(
    { port: config.listen.port, metrics_port: config.metrics.port, ruleset: service.rules.current()?.hash },
    'risk engine listening',
  );
  handleSignals({ service, metricsApp, simulator: offline?.simulator, drain }, logger);
}

main().catch((error: unknown) => {
  // A start that fails after the config was accepted (an unreadable rules directory or database, a
  // port in use): one line, no stack trace, exit 1.
  process.stderr.write(`startup failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
