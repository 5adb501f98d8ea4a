import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { freePort } from './redis.js';

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly metricsPort: number;
  readonly base: string;
  readonly output: () => string;
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs the real entry point (src/server.ts through tsx, or dist/server.js) as its own process. */
export async function startServerProcess(env: Record<string, string>, entry: string[] = ['--import', 'tsx', 'src/server.ts'], cwd = process.cwd()): Promise<ServerProcess> {
  const port = await freePort();
  const metricsPort = await freePort();
  const simulatorPort = await freePort();
  let output = '';
  const child = spawn(process.execPath, entry, {
    cwd,
    env: { ...process.env, PORT: String(port), METRICS_PORT: String(metricsPort), SIMULATOR_PORT: String(simulatorPort), LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 45_000;
  for (;;) {
    if (Date.now() > deadline) {
      child.kill('SIGKILL'); // never leave an orphan listening behind a failed test
      throw new Error(`server not ready after 45 s:\n${output}`);
    }
    if (child.exitCode !== null) throw new Error(`server exited early:\n${output}`);
    try {
      if ((await fetch(`${base}/readyz`)).status === 200) break;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, port, metricsPort, base, output: () => output, exited: () => exit };
}

export interface FailedStart {
  readonly code: number | null;
  readonly stderr: string;
  readonly stdout: string;
  /** Ports (of PORT, METRICS_PORT, SIMULATOR_PORT) that accepted a connection while the process ran. */
  readonly listened: number[];
}

/**
 * Runs the real entry point with an environment expected to stop it, probing its three ports every
 * 20 ms until it exits (or 30 s pass): what was printed, the exit code, and whether anything listened.
 */
export async function runUntilExit(env: Record<string, string>, entry: string[] = ['--import', 'tsx', 'src/server.ts']): Promise<FailedStart> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(API_TOKENS|ID_HASH_KEY|TRUST_PROXY.*|REDIS_URL|DIDIT_.*|NODE_ENV)$/.test(k)));
  const child = spawn(process.execPath, entry, {
    env: { ...base, PORT: String(ports[0]), METRICS_PORT: String(ports[1]), SIMULATOR_PORT: String(ports[2]), LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const listened = new Set<number>();
  let running = true;
  void exited.then(() => (running = false));
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  while (running) {
    await Promise.all(
      ports.map(
        (port) =>
          new Promise<void>((resolve) => {
            const socket = connect(port, '127.0.0.1');
            socket.once('connect', () => (listened.add(port), socket.destroy(), resolve()));
            socket.once('error', () => resolve());
          }),
      ),
    );
    await new Promise((r) => setTimeout(r, 20));
  }
  clearTimeout(killer);
  return { code: await exited, stderr, stdout, listened: [...listened] };
}
