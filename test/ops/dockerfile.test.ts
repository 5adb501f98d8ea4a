import { execSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { DIDIT_ENV } from '../helpers/config-env.js';
import { startServerProcess } from '../helpers/process.js';
import { COMMAND_LINE_FLAGS } from '../../src/node-flags.js';

/**
 * No Docker engine runs here, so this test performs the Dockerfile's own steps by hand: each stage
 * in its own folder, COPY from the clean build context (git ls-files, as .dockerignore trims it)
 * or from an earlier stage, RUN in WORKDIR, then the final CMD with its ENV, and the HEALTHCHECK.
 */
interface Stage {
  name: string;
  dir: string;
  workdir: string;
  env: Record<string, string>;
}

const dockerfile = readFileSync('Dockerfile', 'utf8')
  .replace(/\\\n\s*/g, ' ')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const ignored = readFileSync('.dockerignore', 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter(Boolean);
const root = mkdtempSync(path.join(tmpdir(), 'risk-docker-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
// The image's `npm cache clean --force` would empty this machine's own npm cache on every run (and the
// next `npm ci` of CI, or of anyone else here, would download everything again). The steps get a cache
// of their own, seeded from the machine's: content files are immutable (hard links; cleaning unlinks
// only the links), index files are appended to (copied).
const npmCache = path.join(root, 'npm-cache', '_cacache');
const machineCache = path.join(execSync('npm config get cache', { encoding: 'utf8' }).trim(), '_cacache');
mkdirSync(npmCache, { recursive: true });
if (existsSync(path.join(machineCache, 'content-v2')))
  spawnSync('cp', ['-al', path.join(machineCache, 'content-v2'), npmCache]);
if (existsSync(path.join(machineCache, 'index-v5')))
  cpSync(path.join(machineCache, 'index-v5'), path.join(npmCache, 'index-v5'), { recursive: true });

const context = path.join(root, 'context');
mkdirSync(context);
for (const file of execSync('git ls-files --cached --others --exclude-standard', { encoding: 'utf8' })
  .split('\n')
  .filter(Boolean)) {
  if (ignored.some((pattern) => file === pattern || file.startsWith(`${pattern}/`))) continue;
  if (!existsSync(file)) continue;
  mkdirSync(path.join(context, path.dirname(file)), { recursive: true });
  cpSync(file, path.join(context, file));
}

const stages: Stage[] = [];
let stage: Stage | undefined;
let cmd: string[] = [];
let healthcheck = '';
for (const line of dockerfile) {
  const [instruction, ...rest] = line.split(/\s+/);
  const args = rest.join(' ');
  switch (instruction) {
    case 'FROM': {
      const name = /\bAS\s+(\S+)/i.exec(args)?.[1] ?? `stage${stages.length}`;
      stage = { name, dir: path.join(root, name), workdir: '/', env: {} };
      mkdirSync(stage.dir);
      stages.push(stage);
      break;
    }
    case 'WORKDIR':
      stage!.workdir = args;
      mkdirSync(path.join(stage!.dir, args), { recursive: true });
      break;
    case 'ENV':
      for (const pair of args.split(/\s+/)) {
        const [k, v] = pair.split('=');
        stage!.env[k!] = v!;
      }
      break;
    case 'COPY': {
      const parts = args.split(/\s+/);
      const from = parts[0]!.startsWith('--from=') ? parts.shift()!.slice(7) : undefined;
      const dest = path.join(stage!.dir, stage!.workdir, parts.pop()!);
      const sourceRoot = from
        ? path.join(stages.find((s) => s.name === from)!.dir, stages.find((s) => s.name === from)!.workdir)
        : context;
      for (const src of parts) {
        const target = parts.length > 1 || dest.endsWith('/') ? path.join(dest, path.basename(src)) : dest;
        cpSync(
          path.join(sourceRoot, from ? path.relative(stages.find((s) => s.name === from)!.workdir, src) : src),
          target,
          { recursive: true },
        );
      }
      break;
    }
    case 'RUN': {
      const run = spawnSync('sh', ['-c', args], {
        cwd: path.join(stage!.dir, stage!.workdir),
        env: { ...process.env, npm_config_cache: path.dirname(npmCache), ...stage!.env },
        encoding: 'utf8',
        timeout: 300_000,
      });
      if (run.status !== 0) throw new Error(`RUN ${args} failed in ${stage!.name}:\n${run.stdout}\n${run.stderr}`);
      break;
    }
    case 'CMD':
      cmd = JSON.parse(args) as string[];
      break;
    case 'HEALTHCHECK':
      healthcheck = /CMD\s+(\[.*\])$/.exec(args)?.[1] ?? '';
      break;
    default:
      break; // USER and EXPOSE need a container runtime; the test runs as the current user.
  }
}

const runtime = stages[stages.length - 1]!;
const appDir = path.join(runtime.dir, runtime.workdir);

t.test('the runtime stage has production dependencies only and the built server', async (t) => {
  t.ok(existsSync(path.join(appDir, 'dist/server.js')));
  t.ok(existsSync(path.join(appDir, 'node_modules/fastify')));
  t.notOk(existsSync(path.join(appDir, 'node_modules/tap')), 'no dev dependencies');
  t.notOk(existsSync(path.join(appDir, 'src')), 'no TypeScript sources');
  t.same(cmd, ['node', ...COMMAND_LINE_FLAGS, 'dist/server.js']);
});

t.test('the container command starts and /readyz answers; the HEALTHCHECK passes', async (t) => {
  // The image's ENV, except that ports are the free ones the helper picked and binds stay on loopback.
  const { PORT: _port, METRICS_PORT: _metricsPort, ...imageEnv } = runtime.env;
  // NODE_ENV=production (the image's) refuses the offline simulator and a generated token: give it a Didit configuration and tokens.
  const env = {
    ...imageEnv,
    HOST: '127.0.0.1',
    METRICS_HOST: '127.0.0.1',
    ...DIDIT_ENV,
    API_TOKENS: 'container:container-token-0123456789',
  };
  const server = await startServerProcess(env, cmd.slice(1), appDir);
  t.teardown(() => server.child.kill('SIGKILL'));
  const ready = await fetch(`${server.base}/readyz`);
  t.equal(ready.status, 200);
  t.match(server.output(), /risk engine listening/, 'the log is read');
  t.notMatch(server.output(), /missing_node_flags/, 'the command passes the node flags the entry point expects');
  const check = JSON.parse(healthcheck) as string[];
  const health = spawnSync(check[0] === 'node' ? process.execPath : check[0]!, check.slice(1), {
    env: { ...process.env, PORT: String(server.port) },
  });
  t.equal(health.status, 0, 'HEALTHCHECK command exits 0');
  server.child.kill('SIGTERM');
  t.equal((await server.exited()).code, 0, 'PID 1 handles SIGTERM and exits 0');
});
