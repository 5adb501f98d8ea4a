/**
 * One server under the bench's load, for profiling: `tsx test/bench/probe.ts <mode> [seconds]`
 * (mode: bare | bare-lua | memory | redis; bare-lua is the bare route plus a decide's one Lua round trip,
 * the store's script through production's client: the floor Redis sets), NODE_ARGS adds node flags (`--cpu-prof`), PROBE_PERF=<file>
 * records a perf profile of the measured window (the cpu-clock event: a VM may count no cycles;
 * add `--perf-basic-prof` to NODE_ARGS for JavaScript names). Prints requests/s and the server's CPU µs per request.
 * PROBE_RATE=<req/s> measures at that paced rate instead of saturation and prints the slowest answers
 * with their times (and, on Redis, its slow log of the window: commands that ran over 1 ms; Redis
 * kept off its core by other work does not show there);
 * PROBE_STDOUT=<file> keeps the server's stdout (its log, and `--trace-gc` lines). PROBE_WARM=<seconds>
 * runs that long at saturation before the window, PROBE_IDLE=<seconds> then waits that long.
 * PROBE_NO_FLAGS=1 starts the server without `npm start`'s node flags (src/node-flags.ts).
 * PROBE_PERF_STAT=<file> counts the window's context switches, task clock and system calls with `perf stat`
 * (from half a second before the window to its end, the paced mode's metrics and slow-log reads included).
 */
import { spawn, spawnSync } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import { fixedRate } from './paced.js';
import { startRedis } from '../helpers/redis.js';
import { trafficMix, USERS_PER_ROUND } from './traffic.js';
import { COMMAND_LINE_FLAGS } from '../../src/node-flags.js';

/**
 * The servers' stdout (their log: the decision lines, written by pino's asynchronous default
 * destination as in production) goes to /dev/null: every write is still made, but no reader's cost
 * lands on the load generator's core (a pipe drained there backed up and cost the server ~10% in
 * partial rewrites of a growing buffer).
 */
const DEV_NULL = openSync(process.env.PROBE_STDOUT ?? '/dev/null', 'w');

const TOKEN = 'bench-token-0123456789abcdef';
const mode = process.argv[2] ?? 'memory';
const seconds = Number(process.argv[3] ?? 10);
spawnSync('taskset', ['-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim()) || 100;
const cpuSeconds = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
};
/** The kernel's share of that CPU (stime), to tell the reply's socket work from JavaScript's. */
const systemSeconds = (pid: number) =>
  Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[12]) / CLOCK_TICKS;

const redis = mode === 'redis' || mode === 'bare-lua' ? await startRedis() : undefined;
if (redis?.pid) spawnSync('taskset', ['-p', '-c', '1', String(redis.pid)], { stdio: 'ignore' });
const pools = [trafficMix(0), trafficMix(1)];
const env: Record<string, string> = {
  API_TOKENS: `bench:${TOKEN}`,
  ID_HASH_KEY: 'bench:bench-hash-key-0123456789abcdefgh',
  LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
  TOR_LIST_MAX_AGE_HOURS: '0',
  BENCH_SEED_USERS: String(2 * USERS_PER_ROUND),
  BENCH_MODE: mode === 'bare' || mode === 'bare-lua' ? mode : 'decide',
  ...(redis ? { REDIS_URL: redis.url } : {}),
  ...(process.env.PROBE_ALLOC ? { BENCH_ALLOC_PROFILE: process.env.PROBE_ALLOC } : {}),
};
if (mode === 'bare' || mode === 'bare-lua') env.BENCH_CANNED_REPLY = JSON.stringify({ pad: 'x'.repeat(1400) });
const nodeArgs = (process.env.NODE_ARGS ?? '').split(' ').filter(Boolean);
// The server starts as `npm start` starts it; PROBE_NO_FLAGS=1 leaves its node flags out (to measure what they change).
const flags = process.env.PROBE_NO_FLAGS ? [] : COMMAND_LINE_FLAGS;
const argv = ['taskset', '-c', '0', process.execPath, ...flags, ...nodeArgs, 'dist/bench/test/bench/servers.js'];
const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', DEV_NULL, 'pipe'] });
let metricsPort: number | undefined;
const port = await new Promise<number>((resolve) => {
  let out = '';
  const onData = (c: Buffer) => {
    out += c.toString();
    const m = /ready (\d+)(?: (\d+))?/.exec(out);
    if (!m) return;
    child.stderr!.off('data', onData);
    child.stderr!.pipe(process.stderr);
    if (m[2]) metricsPort = Number(m[2]);
    resolve(Number(m[1]));
  };
  child.stderr!.on('data', onData);
});
const serverPid = Number(spawnSync('pgrep', ['-f', '-n', 'dist/bench/test/bench/servers.js']).stdout.toString().trim());
const requests = (bodies: string[]) => {
  let cursor = 0;
  return [
    {
      method: 'POST' as const,
      path: '/v1/decide',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
      body: bodies[0]!,
      setupRequest: (r: object) => ({ ...r, body: bodies[cursor++ % bodies.length] }),
    },
  ];
};
await autocannon({ url: `http://127.0.0.1:${port}`, connections: 8, amount: 4000, requests: requests(pools[0]!) });
// PROBE_WARM=<seconds>: saturated load first, so the window sees a long-running server's heap and caches (as the bench's paced runs do).
if (process.env.PROBE_WARM)
  await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: 32,
    duration: Number(process.env.PROBE_WARM),
    requests: requests(pools[0]!),
  });
// PROBE_IDLE=<seconds>: then that long without load (the bench's servers wait while the others run).
if (process.env.PROBE_IDLE) await new Promise((resolve) => setTimeout(resolve, Number(process.env.PROBE_IDLE) * 1000));
// PROBE_PERF=<file>: samples the server during the measured window only (not start-up or seeding).
const perf = process.env.PROBE_PERF
  ? spawn(
      'perf',
      ['record', '-e', 'cpu-clock', '-F', '1999', '-g', '-o', process.env.PROBE_PERF, '-p', String(serverPid)],
      {
        stdio: 'ignore',
      },
    )
  : undefined;
/** What the window's requests cost in wake-ups and system calls (tracepoints; a VM without cycle counters has them). */
const PERF_STAT_EVENTS = [
  'context-switches',
  'task-clock',
  ...['epoll_wait', 'epoll_pwait', 'read', 'readv', 'write', 'writev', 'futex', 'getpid', 'clock_gettime'].map(
    (call) => `syscalls:sys_enter_${call}`,
  ),
];
const perfStat = process.env.PROBE_PERF_STAT
  ? spawn(
      'perf',
      ['stat', '-e', PERF_STAT_EVENTS.join(','), '-o', process.env.PROBE_PERF_STAT, '-p', String(serverPid)],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    )
  : undefined;
// A perf that cannot start (not installed, an event this kernel lacks) says so and the window runs without it.
for (const p of [perf, perfStat]) p?.on('error', (error) => process.stderr.write(`perf: ${error.message}\n`));
if (perf || perfStat) await new Promise((resolve) => setTimeout(resolve, 500));
const stopPerf = async () => {
  for (const p of [perf, perfStat]) {
    // One that already exited (or never started) has nothing to write and no 'exit' left to wait for.
    if (!p || p.pid === undefined || p.exitCode !== null || p.signalCode !== null) continue;
    const exited = new Promise((resolve) => p.once('exit', resolve));
    p.kill('SIGINT');
    await exited;
  }
};
// PROBE_ALLOC=<file> (passed on as BENCH_ALLOC_PROFILE): allocation sampling of the measured window.
if (process.env.PROBE_ALLOC) process.kill(serverPid, 'SIGUSR2');
// Redis's slow log of the measured window only, and of every command over 1 ms (the default is 10 ms).
redis?.cli('CONFIG', 'SET', 'slowlog-log-slower-than', '1000');
redis?.cli('SLOWLOG', 'RESET');
const before = cpuSeconds(serverPid);
const systemBefore = systemSeconds(serverPid);
if (process.env.PROBE_RATE) {
  const rate = Number(process.env.PROBE_RATE);
  const answers: [number, number, number][] = [];
  const startedAt = Date.now();
  const figures = await fixedRate({
    port,
    token: TOKEN,
    bodies: pools[1]!,
    rate,
    seconds,
    cpuSeconds: () => cpuSeconds(serverPid),
    onAnswer: (due, ms, status) => answers.push([due, ms, status]),
  });
  process.stdout.write(`${mode} at ${rate}/s (start ${startedAt}): ${JSON.stringify(figures)}\n`);
  if (metricsPort) {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    process.stdout.write(`  ${text.match(/^risk_shed_total\{.*$/gm)?.join(', ') ?? 'no sheds counted'}\n`);
  }
  if (redis) process.stdout.write(slowLogSummary(redis.cli('--json', 'SLOWLOG', 'GET', '20'), startedAt));
  await stopPerf();
  for (const [due, ms, status] of answers.sort((a, b) => b[1] - a[1]).slice(0, 40))
    process.stdout.write(`  due ${due.toFixed(1)} ms: ${ms.toFixed(2)} ms (${status})\n`);
  child.kill('SIGINT');
  await new Promise((resolve) => child.once('exit', resolve));
  await redis?.stop();
  process.exit(0);
}
const r = await autocannon({
  url: `http://127.0.0.1:${port}`,
  connections: 32,
  duration: seconds,
  requests: requests(pools[1]!),
});
const cpu = cpuSeconds(serverPid) - before;
const system = systemSeconds(serverPid) - systemBefore;
await stopPerf();
const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${serverPid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
process.stdout.write(
  `${mode}: RSS ${Math.round(rss)} MB, ${Math.round(r.requests.average)} req/s, ${Math.round((cpu * 1e6) / r.requests.total)} µs CPU/request (${Math.round((system * 1e6) / r.requests.total)} of it in the kernel), non2xx ${r.non2xx}\n`,
);
child.kill('SIGINT');
await new Promise((resolve) => child.once('exit', resolve));
await redis?.stop();
process.exit(0);

/** One line per slow command: when in the window, how long Redis ran it, and its name and first key (the arguments are pseudonyms and counts). */
function slowLogSummary(json: string, startedAt: number): string {
  const entries = JSON.parse(json) as [number, number, number, string[]][];
  const lines = entries.map(
    ([, unixSeconds, micros, args]) =>
      `    at ~${(unixSeconds * 1000 - startedAt).toFixed(0)} ms: ${micros} µs ${args[0]} ${args.length} args, ${args.slice(1, 3).join(' ').slice(0, 80)}`,
  );
  return `  redis slow log, commands over 1 ms in the window (${entries.length}):\n${lines.join('\n')}\n`;
}
