import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import path from 'node:path';
import { COMMAND_LINE_FLAGS } from '../../src/node-flags.js';
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
export async function startServerProcess(
  env: Record<string, string>,
  entry: string[] = ['--import', 'tsx', 'src/server.ts'],
  cwd = process.cwd(),
  options: { requireReady?: boolean } = {},
): Promise<ServerProcess> {
  const port = await freePort();
  const metricsPort = await freePort();
  const simulatorPort = await freePort();
  let output = '';
  const child = spawn(process.execPath, entry, {
    cwd,
    env: {
      ...process.env,
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      SIMULATOR_PORT: String(simulatorPort),
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 45_000;
  for (;;) {
    if (Date.now() > deadline) {
      child.kill('SIGKILL'); // never leave an orphan listening behind a failed test
      throw new Error(`server not ready after 45 s:\n${output}`);
    }
    if (child.exitCode !== null) throw new Error(`server exited early:\n${output}`);
    try {
      const status = (await fetch(`${base}/readyz`)).status;
      // Listening is enough when the test starts it before its dependencies (readiness is then the subject).
      if (status === 200 || options.requireReady === false) break;
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
export async function runUntilExit(
  env: Record<string, string>,
  entry: string[] = ['--import', 'tsx', 'src/server.ts'],
): Promise<FailedStart> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const base = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !/^(API_TOKENS|ID_HASH_KEY|TRUST_PROXY.*|REDIS_URL|DIDIT_.*|NODE_ENV)$/.test(k),
    ),
  );
  const child = spawn(process.execPath, entry, {
    env: {
      ...base,
      PORT: String(ports[0]),
      METRICS_PORT: String(ports[1]),
      SIMULATOR_PORT: String(ports[2]),
      LOG_LEVEL: 'info',
      ...env,
    },
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
            socket.once('connect', () => {
              listened.add(port);
              socket.destroy();
              resolve();
            });
            socket.once('error', () => resolve());
          }),
      ),
    );
    await new Promise((r) => setTimeout(r, 20));
  }
  clearTimeout(killer);
  return { code: await exited, stderr, stdout, listened: [...listened] };
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const file = path.join(dir, name);
    return statSync(file).isDirectory() ? sourceFiles(file) : [file];
  });
}

/**
 * `node <COMMAND_LINE_FLAGS> dist/server.js` as production runs it (`npm start`, the image): src/ compiled by tsc (src/tsconfig.json) into
 * dist/test-<hash of the sources>/, once per source state. Test files running in parallel may both
 * compile; each writes its own folder and renames it into place, so none sees a half-written build.
 * Inside the work tree, so the compiled files resolve node_modules and package.json's "type".
 */
export function productionEntry(cwd = process.cwd()): string[] {
  const hash = createHash('sha256');
  for (const file of sourceFiles(path.join(cwd, 'src')).sort()) hash.update(file).update(readFileSync(file));
  hash.update(readFileSync(path.join(cwd, 'tsconfig.json')));
  const target = path.join(cwd, 'dist', `test-${hash.digest('hex').slice(0, 16)}`);
  if (!existsSync(path.join(target, 'server.js'))) {
    mkdirSync(path.join(cwd, 'dist'), { recursive: true });
    const building = `${target}.${process.pid}`;
    const tsc = spawnSync(
      process.execPath,
      [
        path.join(cwd, 'node_modules/typescript/bin/tsc'),
        '-p',
        path.join(cwd, 'src/tsconfig.json'),
        '--outDir',
        building,
        '--sourceMap',
        'false',
      ],
      { cwd, encoding: 'utf8' },
    );
    if (tsc.status !== 0) throw new Error(`tsc failed:\n${tsc.stdout}${tsc.stderr}`);
    try {
      renameSync(building, target);
    } catch {
      rmSync(building, { recursive: true, force: true }); // another test file built the same sources first
    }
  }
  return [...COMMAND_LINE_FLAGS, path.join(target, 'server.js')];
}
