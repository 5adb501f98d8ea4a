/**
 * `npm run soak -- --minutes N [--rate 200] [--restart-every 3]`: the service as production runs it
 * (`node dist/…/server.js`, built by the test helpers, REDIS_URL from the environment) in its own
 * process; this process is the load generator and the Didit simulator. Mixed traffic: 70%
 * known-device decides, 20% step-ups completed through the simulator (signed webhooks to the
 * service), 10% webhook re-deliveries (duplicates); Redis SIGKILLed and restarted every
 * `--restart-every` minutes (0: never). Every interval it prints the *service's* RSS and event-loop
 * delay (its own /metrics), the decide p99 seen by the client, and the Redis key count; at the end
 * the RSS slope per minute after warm-up (least squares) and the p99 drift.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { createRedisClient, waitForReady } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { parseClientIp } from '../../src/signals/ip.js';
import { startServerProcess } from '../helpers/process.js';
import { entry, ids, PREFIX, serviceEnv, simulator, TOKEN } from '../helpers/production.js';
import { startRedis } from '../helpers/redis.js';
import { CHROME_WINDOWS } from '../helpers/service.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '2' },
    rate: { type: 'string', default: '200' },
    'restart-every': { type: 'string', default: '3' },
  },
});
const minutes = Number(values.minutes);
const rate = Number(values.rate);
const restartEvery = Number(values['restart-every']);
if (!(minutes > 0) || !(rate > 0) || !(restartEvery >= 0))
  throw new Error('--minutes and --rate must be positive, --restart-every ≥ 0');
/** Known users spread over 100 located addresses (89.160.20.128/25), so no address passes the ip-burst rule at the default rate. */
const knownIp = (i: number) => `89.160.20.${129 + (i % 100)}`;

const redisServer = await startRedis();
const service = await startServerProcess(
  serviceEnv(redisServer.url, {
    RATE_LIMIT_USER_PER_MIN: '100000000',
    STEPUP_USER_MAX_PER_15M: '1000',
    STEPUP_GLOBAL_MAX_PER_MIN: '600',
  }),
  entry,
);
simulator.webhookUrl = `${service.base}/v1/webhooks/didit`;
const redis = createRedisClient(redisServer.url, 1000);
redis.on('error', () => undefined);
await waitForReady(redis, 5000);
const store = createRedisStore({ redis, keyPrefix: PREFIX });

/** 500 returning users on their trusted device and network, as an Approved step-up leaves them. */
async function seedAll() {
  for (let i = 0; i < 500; i++) {
    const ip = parseClientIp(knownIp(i));
    await store.trust(
      {
        user: ids.id('user', `soak-${i}`),
        device: ids.id('device', 'phone'),
        ip: ids.id('ip', ip.address),
        prefix: ids.id('net', ip.prefix),
        country: 'SE',
        asn: 29518,
        grantedBy: 'soak-seed',
        ttlMs: 86_400_000,
      },
      Date.now(),
    );
  }
}
await seedAll();

async function serviceMetrics(): Promise<{ rssMb: number; eldP99Ms: number }> {
  const text = await (await fetch(`http://127.0.0.1:${service.metricsPort}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
  return {
    rssMb: Math.round((value('process_resident_memory_bytes') / 2 ** 20) * 10) / 10,
    eldP99Ms: Math.round(value('nodejs_eventloop_lag_p99_seconds') * 1e4) / 10,
  };
}

const generatorEld = monitorEventLoopDelay({ resolution: 10 });
generatorEld.enable();
let decideLatencies: number[] = [];
const counts = { sent: 0, status5xx: 0, status5xxInFault: 0, errors: 0 };
let inFault = false;
const sessions: string[] = [];
const headers = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` };

const byStatus: Record<string, number> = {};
function count(status: number) {
  byStatus[status] = (byStatus[status] ?? 0) + 1;
  if (status < 500) return;
  if (inFault) counts.status5xxInFault += 1;
  else counts.status5xx += 1;
}

async function one(i: number) {
  const roll = i % 10;
  const started = performance.now();
  try {
    if (roll < 7) {
      const r = await fetch(`${service.base}/v1/decide`, {
        method: 'POST',
        headers,
        body: JSON.stringify({
          user_id: `soak-${i % 500}`,
          device_id: 'phone',
          ip: knownIp(i % 500),
          user_agent: CHROME_WINDOWS,
        }),
      });
      count(r.status);
      await r.arrayBuffer();
      decideLatencies.push(performance.now() - started);
    } else if (roll < 9) {
      const r = await fetch(`${service.base}/v1/decide`, {
        method: 'POST',
        headers,
        body: JSON.stringify({
          user_id: `step-${i}`,
          device_id: `d-${i}`,
          ip: '89.160.20.112',
          user_agent: CHROME_WINDOWS,
        }),
      });
      count(r.status);
      const reply = (await r.json()) as { verification?: { session_id?: string } };
      decideLatencies.push(performance.now() - started);
      const id = reply.verification?.session_id;
      if (id) {
        if (sessions.length < 10_000) sessions.push(id);
        else sessions[i % 10_000] = id;
        void simulator.complete(id, i % 3 === 0 ? 'Declined' : 'Approved').catch(() => undefined);
      }
    } else if (sessions.length) {
      // A duplicate delivery of a verdict the service has (usually) seen already.
      const id = sessions[Math.floor((i * 7919) % sessions.length)]!;
      const s = simulator.sessions.get(id);
      if (s && s.status !== 'Not Started') {
        const { body, headers: h } = simulator.webhookFor(id, s.status);
        const r = await fetch(`${service.base}/v1/webhooks/didit`, { method: 'POST', headers: h, body });
        count(r.status);
        await r.arrayBuffer();
      }
    }
  } catch {
    counts.errors += 1;
  }
}

const rows: Array<Record<string, number>> = [];
const startedAt = Date.now();
const intervalMs = Math.min(60_000, (minutes * 60_000) / 10);
let nextSample = startedAt + intervalMs;
let nextRestart = restartEvery > 0 ? startedAt + restartEvery * 60_000 : Infinity;
const inFlight = new Set<Promise<void>>();
const timer = setInterval(() => {
  for (let k = 0; k < rate / 20; k++) {
    const p = one(counts.sent++);
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  }
}, 50);
while (Date.now() - startedAt < minutes * 60_000) {
  await new Promise((r) => setTimeout(r, 250));
  if (Date.now() >= nextRestart) {
    inFault = true;
    await redisServer.kill();
    await new Promise((r) => setTimeout(r, 1000));
    await redisServer.restart();
    await waitForReady(redis, 10_000).catch(() => undefined);
    await seedAll().catch(() => undefined);
    // The fault window ends once the service is ready again (it reconnects on its own).
    for (let k = 0; k < 100 && (await fetch(`${service.base}/readyz`)).status !== 200; k++)
      await new Promise((r) => setTimeout(r, 100));
    inFault = false;
    nextRestart += restartEvery * 60_000;
  }
  if (Date.now() >= nextSample) {
    const sorted = decideLatencies.sort((a, b) => a - b);
    decideLatencies = [];
    const m = await serviceMetrics();
    rows.push({
      minute: Math.round((Date.now() - startedAt) / 6000) / 10,
      service_rss_mb: m.rssMb,
      service_eld_p99_ms: m.eldP99Ms,
      decide_p99_ms: Math.round(sorted[Math.floor(sorted.length * 0.99)] ?? 0),
      decides: sorted.length,
      redis_keys: Number(await redis.dbsize().catch(() => -1)),
      generator_eld_p99_ms: Math.round(generatorEld.percentile(99) / 1e6),
      status_5xx: counts.status5xx,
      status_5xx_in_fault: counts.status5xxInFault,
      errors: counts.errors,
    });
    generatorEld.reset();
    process.stdout.write(`${JSON.stringify(rows[rows.length - 1])}\n`);
    nextSample += intervalMs;
  }
}
clearInterval(timer);
await Promise.all(inFlight);

/** Least-squares slope of y over x. */
function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  const sxx = points.reduce((a, [x]) => a + (x - mx) ** 2, 0);
  return sxx === 0 ? NaN : points.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0) / sxx;
}
// The first interval is warm-up (JIT, caches, Redis connection pools).
const warm = rows.slice(1);
const half = Math.floor(warm.length / 2);
const p99Of = (list: typeof rows) => list.reduce((a, r) => Math.max(a, r.decide_p99_ms!), 0);
const summary = {
  minutes,
  offered_rps: rate,
  sent: counts.sent,
  sent_per_s: Math.round(counts.sent / ((Date.now() - startedAt) / 1000)),
  answered_decides_per_s: Math.round(warm.reduce((a, r) => a + r.decides!, 0) / ((warm.length * intervalMs) / 1000)),
  service_rss_mb_first: warm[0]?.service_rss_mb,
  service_rss_mb_last: warm.at(-1)?.service_rss_mb,
  service_rss_slope_mb_per_min: Math.round(slope(warm.map((r) => [r.minute!, r.service_rss_mb!])) * 100) / 100,
  decide_p99_ms_first_half: p99Of(warm.slice(0, half)),
  decide_p99_ms_second_half: p99Of(warm.slice(half)),
  // A key count of -1 is a DBSIZE that failed (a restart, or a busy box): left out of the slope.
  redis_keys_slope_per_min: Math.round(
    slope(warm.filter((r) => r.redis_keys! >= 0).map((r) => [r.minute!, r.redis_keys!])),
  ),
  redis_keys_last: rows.at(-1)?.redis_keys,
  service_eld_p99_max_ms: Math.max(...warm.map((r) => r.service_eld_p99_ms!)),
  status_5xx_outside_faults: counts.status5xx,
  status_5xx_in_faults: counts.status5xxInFault,
  client_errors: counts.errors,
  by_status: byStatus,
  simulator: simulator.stats,
};
process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
service.child.kill('SIGTERM');
await service.exited();
redis.disconnect();
await simulator.app.close();
await redisServer.stop();
process.exit(0);
