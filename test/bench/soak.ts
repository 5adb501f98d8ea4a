/**
 * `npm run soak -- --minutes N`: mixed traffic against the real service on Redis with the Didit
 * simulator: 70% known-device decides, 20% step-ups completed through the simulator, 10% webhook
 * re-deliveries (duplicates), a Redis restart every few minutes. Reports RSS slope, p99 drift,
 * Redis key count and event-loop delay per interval.
 */
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { createSimulator, simulatorCredentials } from '../../src/didit/simulator.js';
import { loginPathOptions } from '../../src/store/redis-client.js';
import { createRedisStore } from '../../src/store/redis-store.js';
import { startRedis } from '../helpers/redis.js';
import { CHROME_WINDOWS, startTestService } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

const { values } = parseArgs({ options: { minutes: { type: 'string', default: '2' }, rate: { type: 'string', default: '200' }, 'restart-every': { type: 'string', default: '3' } } });
const minutes = Number(values.minutes);
/** Known users spread over 100 located addresses (89.160.20.128/25), so no address passes the ip-burst rule at the default rate. */
const knownIp = (i: number) => `89.160.20.${129 + (i % 100)}`;
const rate = Number(values.rate);
const server = await startRedis();
const redis = new Redis(server.url, loginPathOptions(100));
redis.on('error', () => undefined);
await new Promise((r) => redis.once('ready', r));
const credentials = simulatorCredentials();
const simulator = createSimulator({ ...credentials, publicBaseUrl: 'http://127.0.0.1:1', retryDelaysMs: [200, 800] });
await simulator.app.listen({ port: 0, host: '127.0.0.1' });
const service = await startTestService(
  { RATE_LIMIT_USER_PER_MIN: '100000000', LOG_LEVEL: 'silent', STEPUP_USER_MAX_PER_15M: '1000' },
  { store: createRedisStore({ redis, keyPrefix: 'soak:' }), redis, didit: { baseUrl: `http://127.0.0.1:${(simulator.app.server.address() as AddressInfo).port}`, apiKey: credentials.apiKey, webhookSecrets: [credentials.webhookSecret], workflows: credentials.workflows } },
);
await service.app.listen({ port: 0, host: '127.0.0.1' });
const base = `http://127.0.0.1:${(service.app.server.address() as AddressInfo).port}`;
simulator.webhookUrl = `${base}/v1/webhooks/didit`;
const seedAll = async () => {
  for (let i = 0; i < 500; i++) await trustDirectly(service, { user: `soak-${i}`, device: 'phone', ip: knownIp(i), country: 'SE', asn: 29518 }, Date.now());
};
await seedAll();

const eld = monitorEventLoopDelay({ resolution: 10 });
eld.enable();
const latencies: number[] = [];
let errors5xx = 0;
let sent = 0;
const sessions: string[] = [];
const headers = { 'content-type': 'application/json', authorization: service.auth.authorization };
async function one(i: number) {
  const roll = i % 10;
  const started = performance.now();
  try {
    if (roll < 7) {
      const r = await fetch(`${base}/v1/decide`, { method: 'POST', headers, body: JSON.stringify({ user_id: `soak-${i % 500}`, device_id: 'phone', ip: knownIp(i % 500), user_agent: CHROME_WINDOWS }) });
      if (r.status >= 500) errors5xx += 1;
      await r.arrayBuffer();
    } else if (roll < 9) {
      const r = await fetch(`${base}/v1/decide`, { method: 'POST', headers, body: JSON.stringify({ user_id: `step-${i}`, device_id: `d-${i}`, ip: '89.160.20.112' }) });
      if (r.status >= 500) errors5xx += 1;
      const reply = (await r.json()) as { verification?: { session_id?: string } };
      const id = reply.verification?.session_id;
      if (id) {
        sessions.push(id);
        void simulator.complete(id, i % 3 === 0 ? 'Declined' : 'Approved').catch(() => undefined);
      }
    } else if (sessions.length) {
      const id = sessions[Math.floor((i * 7919) % sessions.length)]!;
      const s = simulator.sessions.get(id);
      if (s && s.status !== 'Not Started') {
        const { body, headers: h } = simulator.webhookFor(id, s.status);
        const r = await fetch(`${base}/v1/webhooks/didit`, { method: 'POST', headers: h, body });
        if (r.status >= 500 && r.status !== 503) errors5xx += 1;
        await r.arrayBuffer();
      }
    }
  } catch {
    errors5xx += 1;
  }
  latencies.push(performance.now() - started);
}

const rows: Array<Record<string, number>> = [];
const startedAt = Date.now();
const intervalMs = Math.min(60_000, (minutes * 60_000) / 10);
let nextSample = startedAt + intervalMs;
let nextRestart = startedAt + Number(values['restart-every']) * 60_000;
const timer = setInterval(() => {
  for (let k = 0; k < rate / 20; k++) void one(sent++);
}, 50);
while (Date.now() - startedAt < minutes * 60_000) {
  await new Promise((r) => setTimeout(r, 500));
  if (Date.now() >= nextRestart) {
    await server.kill();
    await new Promise((r) => setTimeout(r, 1000));
    await server.restart();
    await seedAll().catch(() => undefined);
    nextRestart += Number(values['restart-every']) * 60_000;
  }
  if (Date.now() >= nextSample) {
    const sorted = latencies.splice(0).sort((a, b) => a - b);
    rows.push({
      minute: Math.round((Date.now() - startedAt) / 6000) / 10,
      rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
      p99_ms: Math.round(sorted[Math.floor(sorted.length * 0.99)] ?? 0),
      requests: sorted.length,
      redis_keys: Number(await redis.dbsize().catch(() => -1)),
      eld_p99_ms: Math.round(eld.percentile(99) / 1e6),
      errors_5xx: errors5xx,
    });
    eld.reset();
    process.stdout.write(`${JSON.stringify(rows[rows.length - 1])}\n`);
    nextSample += intervalMs;
  }
}
clearInterval(timer);
const half = Math.floor(rows.length / 2);
const slope = rows.length > 2 ? (rows[rows.length - 1]!.rss_mb! - rows[1]!.rss_mb!) / ((rows[rows.length - 1]!.minute! - rows[1]!.minute!) / 10) : 0;
const p99First = rows.slice(0, half).reduce((a, r) => Math.max(a, r.p99_ms!), 0);
const p99Last = rows.slice(half).reduce((a, r) => Math.max(a, r.p99_ms!), 0);
process.stdout.write(`${JSON.stringify({ minutes, rate, sent, rss_slope_mb_per_10min: Math.round(slope * 10) / 10, p99_first_half_ms: p99First, p99_second_half_ms: p99Last, redis_keys_last: rows.at(-1)?.redis_keys, eld_p99_max_ms: Math.max(...rows.map((r) => r.eld_p99_ms!)), errors_5xx: errors5xx }, null, 2)}\n`);
await service.close();
await simulator.app.close();
await server.stop();
process.exit(0);
