import { createServer, type AddressInfo } from 'node:net';
import t from 'tap';
import { ConfigError, loadConfig } from '../src/config.js';
import { DIDIT_ENV } from './helpers/config-env.js';
import { runUntilExit } from './helpers/process.js';

const TOKEN = 'config-test-token-0123456789';
const HASH_KEY = 'ct:config-test-hash-key-0123456789';
const BASE = { API_TOKENS: `tests:${TOKEN}`, ID_HASH_KEY: HASH_KEY };

/** The problems loadConfig reports for env, or [] when it accepts it. */
function problemsOf(env: Record<string, string>, server = true): string[] {
  try {
    loadConfig(env, { server });
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return [...error.problems];
  }
}

t.test('ID_HASH_KEY: kid:secret with a 1-8 character kid and a secret of at least 22 characters', async (t) => {
  for (const value of ['short', 'no-colon-but-long-enough-to-be-a-secret', ':0123456789abcdefghijklmn', 'toolongkid:0123456789abcdefghijklmn', 'k!:0123456789abcdefghijklmn', 'k:0123456789abcdefghijk'.slice(0, 20), 'k: ']) {
    const problems = problemsOf({ ...BASE, ID_HASH_KEY: value });
    t.equal(problems.length, 1, `${JSON.stringify(value)} refused`);
    t.match(problems[0], /^ID_HASH_KEY: /);
    if (value.length > 6) t.notOk(problems.join('\n').includes(value.slice(value.indexOf(':') + 1)), 'the secret is not echoed');
  }
  for (const value of ['k:0123456789abcdefghijkl', 'kid_2-AB:0123456789abcdefghijklmnopqrstuvwxyz']) t.same(problemsOf({ ...BASE, ID_HASH_KEY: value }), [], `${value} accepted`);
});

t.test('ID_HASH_KEY_PREVIOUS: the same strength rules, needs ID_HASH_KEY, differs from it in key id and secret', async (t) => {
  for (const value of ['short', 'no-colon-but-long-enough-to-be-a-secret', 'toolongkid:0123456789abcdefghijklmn', 'k!:0123456789abcdefghijklmn', 'k:0123456789abcdefghi']) {
    const problems = problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: value });
    t.equal(problems.length, 1, `${JSON.stringify(value)} refused`);
    t.match(problems[0], /^ID_HASH_KEY_PREVIOUS: /);
    if (value.includes(':')) t.notOk(problems.join('\n').includes(value.slice(value.indexOf(':') + 1)), 'the secret is not echoed');
  }
  const secret = HASH_KEY.slice(HASH_KEY.indexOf(':') + 1);
  t.match(problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: `ct:another-secret-0123456789abcdef` }), [/^ID_HASH_KEY_PREVIOUS: its key id must differ/], 'the same key id is refused');
  t.match(problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: `old:${secret}` }), [/^ID_HASH_KEY_PREVIOUS: its secret must differ/], 'the same secret under another key id is refused');
  t.equal(problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: HASH_KEY }).length, 2, 'the current key itself is refused on both counts');
  t.notOk(problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: `old:${secret}` }).join('\n').includes(secret), 'no secret echoed');
  t.match(problemsOf({ API_TOKENS: BASE.API_TOKENS, ID_HASH_KEY_PREVIOUS: 'old:0123456789abcdefghijklmnop' }), [/^ID_HASH_KEY_PREVIOUS: requires ID_HASH_KEY/]);
  t.same(problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: 'old:0123456789abcdefghijklmnop' }), [], 'a well-formed different key is accepted');
  t.same(problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: '' }), [], 'empty means no rotation');
});

t.test('API_TOKENS: name:token[:scopes], known scopes only, no repeated names or tokens, no token echoed', async (t) => {
  const T = '0123456789abcdefXYZ';
  const bad: Array<[string, RegExp]> = [
    ['a:b', /entry 1: expected/],
    ['justaname', /entry 1/],
    ['a:short', /at least 16/],
    [`a b:${T}`, /entry 1/],
    [`:${T}`, /entry 1/],
    [`a:${T} x`, /entry 1/],
    [`a:${T}:admin`, /unknown scope "admin"/],
    [`a:${T}:`, /unknown scope ""/],
    [`a:${T}:decide+`, /unknown scope ""/],
    [`a:${T}:DECIDE`, /unknown scope "DECIDE"/],
    [`a:${T}:decide+users+root`, /unknown scope "root"/],
    [`a:${T}:decide:users`, /unknown scope "decide:users"/],
    [`a:${T},a:${T}X`, /a: the name is used twice/],
    [`a:${T},b:${T}`, /b: the same token as a/],
    [`a:${T},`, /entry 2/],
  ];
  for (const [value, expected] of bad) {
    const problems = problemsOf({ ...BASE, API_TOKENS: value });
    t.ok(problems.length >= 1 && problems.every((p) => p.startsWith('API_TOKENS: ')), `${value.replace(T, '<token>')} refused`);
    t.match(problems.join('\n'), expected);
    t.notOk(problems.join('\n').includes(T), 'no token in the message');
  }
  for (const value of [`a:${T}`, `a:${T}:decide`, `a:${T}:rules+users+decide`, `login:${T}:decide,ops:${T}X:users,play:${T}Y:rules`]) {
    t.same(problemsOf({ ...BASE, API_TOKENS: value }), [], `${value.replaceAll(T, '<token>')} accepted`);
  }
});

t.test('TRUST_PROXY: IP addresses and CIDRs only', async (t) => {
  for (const value of ['garbage', 'loopback', 'uniquelocal', '10.0.0.0/255.0.0.0', '127.1', '0x7f.0.0.1', '1.2.3.4/33', '::/129', '1.2.3.4/08', '1.2.3.4/', '/8', '1.2.3.4/8/8', 'fe80::1%eth0', '10.0.0.1,', ' , ', '10.0.0.1 10.0.0.2', 'true', '*', '2']) {
    const problems = problemsOf({ ...BASE, TRUST_PROXY: value });
    t.ok(problems.length >= 1 && problems.every((p) => p.startsWith('TRUST_PROXY: ')), `${JSON.stringify(value)} refused: ${problems[0]}`);
  }
  for (const value of ['127.0.0.1', '::1', '10.0.0.0/8', '192.168.0.0/16, 172.16.0.0/12', '2001:db8::/32', '::ffff:10.0.0.0/104', '0:0:0:0:0:0:0:1']) {
    t.same(problemsOf({ ...BASE, TRUST_PROXY: value }), [], `${value} accepted`);
  }
});

t.test('TRUST_PROXY: no range wider than /8 (IPv4) or /32 (IPv6), however spelled, unless TRUST_PROXY_ALLOW_WIDE=true', async (t) => {
  const wide = ['0.0.0.0/0', '::/0', '0.0.0.0/0,::/0', '0.0.0.0/1,128.0.0.0/1', '10.0.0.0/7', '2000::/3', '2001:db8::/31', 'fd00::/8', '::ffff:0:0/96', '::ffff:0.0.0.0/96', '0:0:0:0:0:ffff:0:0/100', '::FFFF:0.0.0.0/103'];
  for (const value of wide) {
    const problems = problemsOf({ ...BASE, TRUST_PROXY: value });
    t.equal(problems.length, value.split(',').length, `${value}: one problem per wide entry`);
    t.match(problems.join('\n'), /spans more than a \/(8|32)/);
    t.same(problemsOf({ ...BASE, TRUST_PROXY: value, TRUST_PROXY_ALLOW_WIDE: 'true' }), [], `${value} accepted when wide ranges are allowed`);
  }
  t.match(problemsOf({ ...BASE, TRUST_PROXY: '10.0.0.0/8', TRUST_PROXY_ALLOW_WIDE: 'yes' }).join('\n'), /TRUST_PROXY_ALLOW_WIDE/, 'the switch itself is validated');
  t.same(problemsOf({ ...BASE, TRUST_PROXY: '0.0.0.0/0', TRUST_PROXY_ALLOW_WIDE: 'false' }).length, 1);
});

t.test('the offline simulator only when nothing production-like is configured', async (t) => {
  const productionLike: Array<[string, Record<string, string>]> = [
    ['REDIS_URL', { REDIS_URL: 'redis://127.0.0.1:6379' }],
    ['DIDIT_WEBHOOK_SECRET', { DIDIT_WEBHOOK_SECRET: 'whsec-0123456789abcdef' }],
    ['DIDIT_WEBHOOK_SECRET_PREVIOUS', { DIDIT_WEBHOOK_SECRET_PREVIOUS: 'whsec-0123456789abcdef' }],
    ['NODE_ENV=production', { NODE_ENV: 'production' }],
  ];
  for (const [name, env] of productionLike) {
    const problems = problemsOf({ ...BASE, ...env });
    t.equal(problems.length, 1, `${name} without DIDIT_API_KEY refused`);
    t.match(problems[0], new RegExp(`^DIDIT_API_KEY: required with ${name}; the offline Didit simulator runs only when nothing production-like is configured`));
    t.same(problemsOf({ ...BASE, ...DIDIT_ENV, ...env }), [], `${name} with a real Didit configuration accepted`);
  }
  t.match(problemsOf({ ...BASE, REDIS_URL: 'redis://x:1', NODE_ENV: 'production' })[0], /required with REDIS_URL, NODE_ENV=production/, 'every reason named');
  for (const value of ['development', 'test', '']) t.same(problemsOf({ ...BASE, NODE_ENV: value }), [], `NODE_ENV=${value} keeps the simulator`);
  t.same(problemsOf({}), [], 'nothing set: the quick start (simulator, generated token) still runs');
  t.match(problemsOf({ ...DIDIT_ENV, NODE_ENV: 'production' }).join('\n'), /API_TOKENS: required with NODE_ENV=production/, 'production needs chosen tokens');
  t.match(problemsOf({ ...BASE, DIDIT_API_KEY: 'k-0123456789' }).join('\n'), /DIDIT_BASE_URL: required when DIDIT_API_KEY is set/);
  // The CLI and the benchmarks load the same config but never start a simulator or print a token.
  t.same(problemsOf({ ...BASE, REDIS_URL: 'redis://127.0.0.1:6379', NODE_ENV: 'production' }, false), [], 'not a server: no simulator to refuse');
  t.match(problemsOf({ ...BASE, REDIS_URL: 'redis://127.0.0.1:6379', TRUST_PROXY: '0.0.0.0/0' }, false).join('\n'), /TRUST_PROXY/, 'every other check still applies');
});

const ALL_BAD = {
  ID_HASH_KEY: 'short',
  TRUST_PROXY: 'garbage,0.0.0.0/0',
  API_TOKENS: `svc:${TOKEN}:admin`,
  REDIS_URL: 'http://127.0.0.1',
  PORT: 'eighty',
  LOG_LEVEL: 'loud',
  DIDIT_WEBHOOK_SECRET: 'whsec-0123456789abcdef',
  NODE_ENV: 'production',
};

t.test('every problem at once, one line each, no secret echoed', async (t) => {
  const problems = problemsOf(ALL_BAD);
  for (const name of ['ID_HASH_KEY', 'TRUST_PROXY', 'API_TOKENS', 'REDIS_URL', 'PORT', 'LOG_LEVEL', 'DIDIT_API_KEY']) {
    t.ok(problems.some((p) => p.startsWith(`${name}: `)), `${name} reported`);
  }
  t.equal(problems.filter((p) => p.startsWith('TRUST_PROXY: ')).length, 2, 'both TRUST_PROXY entries');
  t.ok(problems.length >= 8, `${problems.length} problems`);
  t.notOk(problems.join('\n').includes(TOKEN) || problems.join('\n').includes('whsec-0123456789abcdef'), 'no token or secret in the report');
});

t.test('the real entry point: exit 2, the problems on stderr, no stack trace, no port opened', async (t) => {
  const cases: Array<[string, Record<string, string>, RegExp[]]> = [
    ['ID_HASH_KEY=short', { ID_HASH_KEY: 'short' }, [/ID_HASH_KEY: /]],
    ['TRUST_PROXY=garbage', { TRUST_PROXY: 'garbage' }, [/TRUST_PROXY: "garbage" is not an IP address or CIDR/]],
    ['TRUST_PROXY=0.0.0.0/0,::/0', { TRUST_PROXY: '0.0.0.0/0,::/0' }, [/"0\.0\.0\.0\/0" spans/, /"::\/0" spans/]],
    ['TRUST_PROXY=0.0.0.0/1,128.0.0.0/1', { TRUST_PROXY: '0.0.0.0/1,128.0.0.0/1' }, [/"0\.0\.0\.0\/1" spans/, /"128\.0\.0\.0\/1" spans/]],
    ['NODE_ENV=production without Didit', { NODE_ENV: 'production', API_TOKENS: `tests:${TOKEN}` }, [/DIDIT_API_KEY: required with NODE_ENV=production/]],
    ['everything at once', ALL_BAD, [/ID_HASH_KEY: /, /TRUST_PROXY: /, /API_TOKENS: /, /REDIS_URL: /, /PORT: /, /DIDIT_API_KEY: /]],
  ];
  for (const [label, env, expected] of cases) {
    const run = await runUntilExit(env);
    t.equal(run.code, 2, `${label}: exit 2`);
    t.match(run.stderr, /^invalid configuration:\n/, `${label}: the report opens stderr`);
    for (const pattern of expected) t.match(run.stderr, pattern, `${label}: ${pattern}`);
    t.notMatch(run.stderr, /\n\s+at |Error:/, `${label}: no stack trace`);
    t.same(run.listened, [], `${label}: nothing listened (service, metrics, simulator)`);
    t.notOk(run.stderr.includes(TOKEN), `${label}: no token echoed`);
  }
});

t.test('a start that fails after the config (the port is taken): one line on stderr, exit 1, no stack trace', async (t) => {
  // Missing GeoIP files, rules or lists degrade by design; a taken port is what still stops a start.
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => taken.close());
  const run = await runUntilExit({ ...BASE, PORT: String((taken.address() as AddressInfo).port) });
  t.equal(run.code, 1);
  t.match(run.stderr, /^startup failed: .*EADDRINUSE/m);
  t.notMatch(run.stderr, /\n\s+at /, 'no stack trace');
});

t.test('found by an outside review: the same bounds hold however the values are spelled', async (t) => {
  const everyone = Array.from({ length: 256 }, (_, i) => `${i}.0.0.0/8`).join(',');
  t.match(problemsOf({ ...BASE, TRUST_PROXY: everyone }).join('\n'), /the IPv4 entries together span more than a \/8/, '256 × /8 is "trust everyone"');
  t.match(problemsOf({ ...BASE, TRUST_PROXY: '10.0.0.0/8,11.0.0.0/9' }).join('\n'), /together span more than a \/8/, 'a /8 and a /9 add up past a /8');
  t.same(problemsOf({ ...BASE, TRUST_PROXY: '10.0.0.0/9,11.0.0.0/9' }), [], 'two /9s are a /8: accepted');
  t.match(problemsOf({ ...BASE, TRUST_PROXY: Array.from({ length: 3 }, (_, i) => `2001:db8:${i}::/32`).join(',') }).join('\n'), /IPv6 entries together span more than a \/32/);
  t.same(problemsOf({ ...BASE, TRUST_PROXY: everyone, TRUST_PROXY_ALLOW_WIDE: 'true' }), [], 'allowed deliberately');

  for (const spelling of ['Production', 'PRODUCTION', ' production ']) {
    t.match(problemsOf({ ...BASE, NODE_ENV: spelling }).join('\n'), /DIDIT_API_KEY: required with NODE_ENV=production/, `NODE_ENV=${JSON.stringify(spelling)} is production`);
  }

  for (const url of ['http://didit.example.com', 'http://169.254.169.254/latest', 'file:///etc/passwd', 'ftp://127.0.0.1/', 'http://10.0.0.5/']) {
    t.match(problemsOf({ ...BASE, ...DIDIT_ENV, DIDIT_BASE_URL: url }).join('\n'), /DIDIT_BASE_URL: must be https/, `${url} refused: the API key would travel in clear`);
  }
  t.match(problemsOf({ ...BASE, ...DIDIT_ENV, DIDIT_BASE_URL: 'https://user:pw@verification.didit.me' }).join('\n'), /DIDIT_BASE_URL: no credentials/);
  for (const url of ['https://verification.didit.me', 'http://127.0.0.1:8090', 'http://localhost:8090', 'http://[::1]:8090']) {
    t.same(problemsOf({ ...BASE, ...DIDIT_ENV, DIDIT_BASE_URL: url }), [], `${url} accepted`);
  }
});
