import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

export function redisServerAvailable(): boolean {
  return spawnSync('redis-server', ['--version']).status === 0;
}

export interface RedisProcess {
  readonly port: number;
  readonly url: string;
  readonly pid: number | undefined;
  /** SIGKILL, as an outage. */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: nothing is persisted). */
  restart(): Promise<void>;
  stop(): Promise<void>;
  cli(...args: string[]): string;
}

async function waitForPing(port: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (spawnSync('redis-cli', ['-p', String(port), 'ping']).stdout?.toString().trim() === 'PONG') return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`redis-server on ${port} did not answer`);
}

/**
 * A throwaway redis-server on a free loopback port, owned by this test: it may be killed, paused
 * and restarted. The machine's own server on 6379 is never touched.
 */
export async function startRedis(extraArgs: string[] = []): Promise<RedisProcess> {
  if (!redisServerAvailable()) throw new Error('redis-server is not installed: apt-get install redis-server (or set REDIS_URL); .ci/run installs it');
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'risk-redis-'));
  let child: ChildProcess | undefined;
  const launch = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs], { stdio: 'ignore' });
    await waitForPing(port);
  };
  await launch();
  const exited = () =>
    new Promise<void>((resolve) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
    });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return child?.pid;
    },
    async kill() {
      child?.kill('SIGKILL');
      await exited();
    },
    async restart() {
      await launch();
    },
    async stop() {
      child?.kill('SIGKILL');
      await exited();
      rmSync(dir, { recursive: true, force: true });
    },
    cli(...args) {
      return spawnSync('redis-cli', ['-p', String(port), ...args]).stdout.toString();
    },
  };
}

export interface RedisClusterProcess {
  readonly nodes: Array<{ host: string; port: number }>;
  stop(): Promise<void>;
}

/** Six redis-server processes on loopback made into a 3-master Cluster with redis-cli. */
export async function startRedisCluster(): Promise<RedisClusterProcess> {
  const servers: RedisProcess[] = [];
  for (let i = 0; i < 6; i++) servers.push(await startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${i}.conf`, '--cluster-node-timeout', '2000']));
  const created = spawnSync('redis-cli', ['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', '1', '--cluster-yes'], { timeout: 30_000 });
  if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stderr.toString()}`);
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (servers.every((s) => s.cli('cluster', 'info').includes('cluster_state:ok'))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    nodes: servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}
