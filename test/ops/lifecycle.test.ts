import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { startServerProcess } from '../helpers/process.js';

const TOKEN = 'lifecycle-token-0123456789';
const rulesDir = mkdtempSync(path.join(tmpdir(), 'risk-rules-'));
cpSync('rules', rulesDir, { recursive: true });
t.teardown(() => rmSync(rulesDir, { recursive: true, force: true }));

const server = await startServerProcess({ API_TOKENS: `tests:${TOKEN}`, RULES_DIR: rulesDir, ID_HASH_KEY: 'lc:lifecycle-hash-key-0123456789abcdef' });
t.teardown(() => server.child.kill('SIGKILL'));
const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
const decide = (i: number) => fetch(`${server.base}/v1/decide`, { method: 'POST', headers, body: JSON.stringify({ user_id: `u${i}`, device_id: 'd', ip: '89.160.20.112' }) });
const ready = async () => (await (await fetch(`${server.base}/readyz`)).json()) as { ruleset: string; embedded_defaults: string[] };

t.test('the embedded defaults are announced loudly and listed by /readyz', async (t) => {
  const out = server.output();
  t.match(out, /EMBEDDED DEFAULTS IN USE/);
  t.match(out, /MaxMind TEST databases/);
  t.match(out, /offline SIMULATOR/);
  t.same((await ready()).embedded_defaults.sort(), ['didit-simulator', 'maxmind-test-databases', 'memory-store']);
  t.equal((await fetch(`${server.base}/metrics`)).status, 404, 'no metrics on the public port');
  t.equal((await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).status, 200);
});

t.test('a valid rules change applies within 2 s; a broken one keeps the last good ruleset; SIGHUP reloads without stopping', async (t) => {
  const before = (await ready()).ruleset;
  const file = path.join(rulesDir, 'purpose.yaml');
  const original = readFileSync(file, 'utf8');
  const changedAt = Date.now();
  writeFileSync(file, original.replace('"disable_mfa"]', '"disable_mfa", "close_account"]'));
  let after = before;
  while (after === before && Date.now() - changedAt < 5000) {
    await new Promise((r) => setTimeout(r, 50));
    after = (await ready()).ruleset;
  }
  t.not(after, before, `applied after ${Date.now() - changedAt} ms`);
  t.ok(Date.now() - changedAt <= 2000);

  writeFileSync(file, 'rules:\n  - id: broken\n    when: "ip.nope"\n');
  await new Promise((r) => setTimeout(r, 600));
  t.equal((await ready()).ruleset, after, 'the last good ruleset keeps serving');
  const metrics = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
  t.match(metrics, /risk_rules_last_reload_success 0/);
  t.equal((await decide(1)).status, 200);

  writeFileSync(file, original);
  server.child.kill('SIGHUP');
  await new Promise((r) => setTimeout(r, 600));
  t.equal(server.child.exitCode, null, 'SIGHUP did not stop the process');
  t.equal((await ready()).ruleset, before, 'SIGHUP (and the watcher) reloaded the original rules');
});

t.test('SIGTERM under load: in-flight requests finish, later ones get 503 or a refused connection, exit 0 within 5 s', async (t) => {
  let sent = 0;
  const results: Array<number | string> = [];
  let stop = false;
  const loop = async () => {
    while (!stop) {
      sent += 1;
      try {
        results.push((await decide(sent)).status);
      } catch (error) {
        results.push((error as { cause?: { code?: string } }).cause?.code ?? 'error');
      }
    }
  };
  const workers = Array.from({ length: 16 }, loop);
  await new Promise((r) => setTimeout(r, 500));
  const signalledAt = Date.now();
  server.child.kill('SIGTERM');
  const exit = await server.exited();
  const exitMs = Date.now() - signalledAt;
  stop = true;
  await Promise.all(workers);
  t.equal(exit.code, 0, 'exit code 0');
  t.ok(exitMs < 5000, `exited ${exitMs} ms after SIGTERM`);
  const counts = results.reduce<Record<string, number>>((acc, r) => ({ ...acc, [String(r)]: (acc[String(r)] ?? 0) + 1 }), {});
  t.ok((counts['200'] ?? 0) > 50, `drained: ${JSON.stringify(counts)}`);
  const unexpected = Object.keys(counts).filter((k) => !['200', '503', 'ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET'].includes(k));
  t.same(unexpected, []);
  t.notOk(counts['500'], 'no 5xx other than 503');
  t.match(server.output(), /shutting down: draining/);
});
