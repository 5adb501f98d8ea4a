import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
  /** SIGSTOP: a hung server (connections stay open, nothing answers) until `resume`. */
  pause(): void;
  resume(): void;
  /** The folder holding its AOF/RDB files (kept across `restart`). */
  readonly dir: string;
}

async function waitForPing(port: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (
      spawnSync('redis-cli', ['-p', String(port), 'ping'])
        .stdout?.toString()
        .trim() === 'PONG'
    )
      return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`redis-server on ${port} did not answer`);
}

/**
 * A throwaway redis-server on a free loopback port, owned by this test: it may be killed, paused
 * and restarted. The machine's own server on 6379 is never touched.
 */
export async function startRedis(extraArgs: string[] = [], atPort?: number): Promise<RedisProcess> {
  if (!redisServerAvailable())
    throw new Error(
      'redis-server is not installed: apt-get install redis-server (or set REDIS_URL); .ci/run installs it',
    );
  // A port chosen earlier lets a test point a service at Redis before Redis exists.
  const port = atPort ?? (await freePort());
  const dir = mkdtempSync(path.join(tmpdir(), 'risk-redis-'));
  let child: ChildProcess | undefined;
  const launch = async () => {
    child = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs],
      { stdio: 'ignore' },
    );
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
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
    dir,
  };
}

export interface RedisClusterProcess {
  readonly nodes: Array<{ host: string; port: number }>;
  /** The six servers, for faults (pause, kill) on one of them. */
  readonly servers: readonly RedisProcess[];
  stop(): Promise<void>;
}

/** Six redis-server processes on loopback made into a 3-master Cluster with redis-cli. */
export async function startRedisCluster(): Promise<RedisClusterProcess> {
  const servers: RedisProcess[] = [];
  for (let i = 0; i < 6; i++)
    servers.push(
      await startRedis([
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${i}.conf`,
        '--cluster-node-timeout',
        '2000',
      ]),
    );
  const created = spawnSync(
    'redis-cli',
    ['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', '1', '--cluster-yes'],
    { timeout: 30_000 },
  );
  if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stderr.toString()}`);
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (servers.every((s) => s.cli('cluster', 'info').includes('cluster_state:ok'))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    nodes: servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
    servers,
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}

export interface RedisSentinelProcess {
  /** `redis+sentinel://127.0.0.1:p,127.0.0.1:p,127.0.0.1:p/<name>`, as production's REDIS_URL. */
  readonly url: string;
  readonly name: string;
  readonly master: RedisProcess;
  readonly replica: RedisProcess;
  readonly sentinelPorts: readonly number[];
  /** The address the sentinels currently give for the master. */
  masterPort(): number | undefined;
  stop(): Promise<void>;
}

/**
 * A master, one replica and three `redis-server --sentinel` processes (quorum 2) on free loopback
 * ports. `downAfterMs` is how long the master must be silent before the sentinels fail it over.
 */
export async function startRedisSentinel(name = 'risk', downAfterMs = 1000): Promise<RedisSentinelProcess> {
  const master = await startRedis();
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)]);
  const deadline = Date.now() + 10_000;
  while (!replica.cli('info', 'replication').includes('master_link_status:up')) {
    if (Date.now() > deadline) throw new Error('replica did not sync');
    await new Promise((r) => setTimeout(r, 50));
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'risk-sentinel-'));
  const sentinels: ChildProcess[] = [];
  const sentinelPorts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const file = path.join(dir, `sentinel-${i}.conf`);
    writeFileSync(
      file,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${master.port} 2`,
        `sentinel down-after-milliseconds ${name} ${downAfterMs}`,
        `sentinel failover-timeout ${name} 10000`,
        `sentinel parallel-syncs ${name} 1`,
        '',
      ].join('\n'),
    );
    sentinels.push(spawn('redis-server', [file, '--sentinel'], { stdio: 'ignore' }));
    sentinelPorts.push(port);
    await waitForPing(port);
  }
  // Every sentinel must know the replica and the other sentinels before a failover can be agreed.
  const settled = Date.now() + 15_000;
  const sentinelCli = (port: number, ...args: string[]) =>
    spawnSync('redis-cli', ['-p', String(port), ...args]).stdout.toString();
  while (
    !sentinelPorts.every((p) => {
      const info = sentinelCli(p, 'sentinel', 'master', name);
      return /num-slaves\n1\n/.test(info) && /num-other-sentinels\n2\n/.test(info);
    })
  ) {
    if (Date.now() > settled) throw new Error('sentinels did not discover each other and the replica');
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url: `redis+sentinel://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/${name}`,
    name,
    master,
    replica,
    sentinelPorts,
    masterPort() {
      for (const p of sentinelPorts) {
        const lines = sentinelCli(p, 'sentinel', 'get-master-addr-by-name', name).trim().split('\n');
        if (lines.length === 2) return Number(lines[1]);
      }
      return undefined;
    },
    async stop() {
      await Promise.all(
        sentinels.map(
          (child) =>
            new Promise<void>((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              child.once('exit', () => resolve());
              child.kill('SIGKILL');
            }),
        ),
      );
      await Promise.all([master.stop(), replica.stop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
