import { spawn, type ChildProcess } from 'node:child_process';
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
