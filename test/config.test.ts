import { createServer, type AddressInfo } from 'node:net';
import t from 'tap';
import { z } from 'zod';
import { CONFIG_VARIABLES, ConfigError, envSchema, loadConfig, type Config } from '../src/config.js';
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
  for (const value of [
    'short',
    'no-colon-but-long-enough-to-be-a-secret',
    ':0123456789abcdefghijklmn',
    'toolongkid:0123456789abcdefghijklmn',
    'k!:0123456789abcdefghijklmn',
    'k:0123456789abcdefghijk'.slice(0, 20),
    'k: ',
  ]) {
    const problems = problemsOf({ ...BASE, ID_HASH_KEY: value });
    t.equal(problems.length, 1, `${JSON.stringify(value)} refused`);
    t.match(problems[0], /^ID_HASH_KEY: /);
    if (value.length > 6)
      t.notOk(problems.join('\n').includes(value.slice(value.indexOf(':') + 1)), 'the secret is not echoed');
  }
  for (const value of ['k:0123456789abcdefghijkl', 'kid_2-AB:0123456789abcdefghijklmnopqrstuvwxyz'])
    t.same(problemsOf({ ...BASE, ID_HASH_KEY: value }), [], `${value} accepted`);
});

t.test(
  'ID_HASH_KEY_PREVIOUS: the same strength rules, needs ID_HASH_KEY, differs from it in key id and secret',
  async (t) => {
    for (const value of [
      'short',
      'no-colon-but-long-enough-to-be-a-secret',
      'toolongkid:0123456789abcdefghijklmn',
      'k!:0123456789abcdefghijklmn',
      'k:0123456789abcdefghi',
    ]) {
      const problems = problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: value });
      t.equal(problems.length, 1, `${JSON.stringify(value)} refused`);
      t.match(problems[0], /^ID_HASH_KEY_PREVIOUS: /);
      if (value.includes(':'))
        t.notOk(problems.join('\n').includes(value.slice(value.indexOf(':') + 1)), 'the secret is not echoed');
    }
    const secret = HASH_KEY.slice(HASH_KEY.indexOf(':') + 1);
    t.match(
      problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: `ct:another-secret-0123456789abcdef` }),
      [/^ID_HASH_KEY_PREVIOUS: its key id must differ/],
      'the same key id is refused',
    );
    t.match(
      problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: `old:${secret}` }),
      [/^ID_HASH_KEY_PREVIOUS: its secret must differ/],
      'the same secret under another key id is refused',
    );
    t.equal(
      problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: HASH_KEY }).length,
      2,
      'the current key itself is refused on both counts',
    );
    t.notOk(
      problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: `old:${secret}` })
        .join('\n')
        .includes(secret),
      'no secret echoed',
    );
    t.match(problemsOf({ API_TOKENS: BASE.API_TOKENS, ID_HASH_KEY_PREVIOUS: 'old:0123456789abcdefghijklmnop' }), [
      /^ID_HASH_KEY_PREVIOUS: requires ID_HASH_KEY/,
    ]);
    t.same(
      problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: 'old:0123456789abcdefghijklmnop' }),
      [],
      'a well-formed different key is accepted',
    );
    t.same(problemsOf({ ...BASE, ID_HASH_KEY_PREVIOUS: '' }), [], 'empty means no rotation');
  },
);

t.test(
  'API_TOKENS: name:token[:scopes], known scopes only, no repeated names or tokens, no token echoed',
  async (t) => {
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
      t.ok(
        problems.length >= 1 && problems.every((p) => p.startsWith('API_TOKENS: ')),
        `${value.replace(T, '<token>')} refused`,
      );
      t.match(problems.join('\n'), expected);
      t.notOk(problems.join('\n').includes(T), 'no token in the message');
    }
    for (const value of [
      `a:${T}`,
      `a:${T}:decide`,
      `a:${T}:rules+users+decide`,
      `login:${T}:decide,ops:${T}X:users,play:${T}Y:rules`,
    ]) {
      t.same(problemsOf({ ...BASE, API_TOKENS: value }), [], `${value.replaceAll(T, '<token>')} accepted`);
    }
  },
);

t.test('TRUST_PROXY: IP addresses and CIDRs only', async (t) => {
  for (const value of [
    'garbage',
    'loopback',
    'uniquelocal',
    '10.0.0.0/255.0.0.0',
    '127.1',
    '0x7f.0.0.1',
    '1.2.3.4/33',
    '::/129',
    '1.2.3.4/08',
    '1.2.3.4/',
    '/8',
    '1.2.3.4/8/8',
    'fe80::1%eth0',
    '10.0.0.1,',
    ' , ',
    '10.0.0.1 10.0.0.2',
    'true',
    '*',
    '2',
  ]) {
    const problems = problemsOf({ ...BASE, TRUST_PROXY: value });
    t.ok(
      problems.length >= 1 && problems.every((p) => p.startsWith('TRUST_PROXY: ')),
      `${JSON.stringify(value)} refused: ${problems[0]}`,
    );
  }
  for (const value of [
    '127.0.0.1',
    '::1',
    '10.0.0.0/8',
    '192.168.0.0/16, 172.16.0.0/12',
    '2001:db8::/32',
    '::ffff:10.0.0.0/104',
    '0:0:0:0:0:0:0:1',
  ]) {
    t.same(problemsOf({ ...BASE, TRUST_PROXY: value }), [], `${value} accepted`);
  }
});

t.test(
  'TRUST_PROXY: no range wider than /8 (IPv4) or /32 (IPv6), however spelled, unless TRUST_PROXY_ALLOW_WIDE=true',
  async (t) => {
    const wide = [
      '0.0.0.0/0',
      '::/0',
      '0.0.0.0/0,::/0',
      '0.0.0.0/1,128.0.0.0/1',
      '10.0.0.0/7',
      '2000::/3',
      '2001:db8::/31',
      'fd00::/8',
      '::ffff:0:0/96',
      '::ffff:0.0.0.0/96',
      '0:0:0:0:0:ffff:0:0/100',
      '::FFFF:0.0.0.0/103',
    ];
    for (const value of wide) {
      const problems = problemsOf({ ...BASE, TRUST_PROXY: value });
      t.equal(problems.length, value.split(',').length, `${value}: one problem per wide entry`);
      t.match(problems.join('\n'), /spans more than a \/(8|32)/);
      t.same(
        problemsOf({ ...BASE, TRUST_PROXY: value, TRUST_PROXY_ALLOW_WIDE: 'true' }),
        [],
        `${value} accepted when wide ranges are allowed`,
      );
    }
    t.match(
      problemsOf({ ...BASE, TRUST_PROXY: '10.0.0.0/8', TRUST_PROXY_ALLOW_WIDE: 'yes' }).join('\n'),
      /TRUST_PROXY_ALLOW_WIDE/,
      'the switch itself is validated',
    );
    t.same(problemsOf({ ...BASE, TRUST_PROXY: '0.0.0.0/0', TRUST_PROXY_ALLOW_WIDE: 'false' }).length, 1);
  },
);

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
    t.match(
      problems[0],
      new RegExp(
        `^DIDIT_API_KEY: required with ${name}; the offline Didit simulator runs only when nothing production-like is configured`,
      ),
    );
    t.same(problemsOf({ ...BASE, ...DIDIT_ENV, ...env }), [], `${name} with a real Didit configuration accepted`);
  }
  t.match(
    problemsOf({ ...BASE, REDIS_URL: 'redis://x:1', NODE_ENV: 'production' })[0],
    /required with REDIS_URL, NODE_ENV=production/,
    'every reason named',
  );
  for (const value of ['development', 'test', ''])
    t.same(problemsOf({ ...BASE, NODE_ENV: value }), [], `NODE_ENV=${value} keeps the simulator`);
  t.same(problemsOf({}), [], 'nothing set: the quick start (simulator, generated token) still runs');
  t.match(
    problemsOf({ ...DIDIT_ENV, NODE_ENV: 'production' }).join('\n'),
    /API_TOKENS: required with NODE_ENV=production/,
    'production needs chosen tokens',
  );
  t.match(
    problemsOf({ ...BASE, DIDIT_API_KEY: 'k-0123456789' }).join('\n'),
    /DIDIT_BASE_URL: required when DIDIT_API_KEY is set/,
  );
  // The CLI and the benchmarks load the same config but never start a simulator or print a token.
  t.same(
    problemsOf({ ...BASE, REDIS_URL: 'redis://127.0.0.1:6379', NODE_ENV: 'production' }, false),
    [],
    'not a server: no simulator to refuse',
  );
  t.match(
    problemsOf({ ...BASE, REDIS_URL: 'redis://127.0.0.1:6379', TRUST_PROXY: '0.0.0.0/0' }, false).join('\n'),
    /TRUST_PROXY/,
    'every other check still applies',
  );
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
    t.ok(
      problems.some((p) => p.startsWith(`${name}: `)),
      `${name} reported`,
    );
  }
  t.equal(problems.filter((p) => p.startsWith('TRUST_PROXY: ')).length, 2, 'both TRUST_PROXY entries');
  t.ok(problems.length >= 8, `${problems.length} problems`);
  t.notOk(
    problems.join('\n').includes(TOKEN) || problems.join('\n').includes('whsec-0123456789abcdef'),
    'no token or secret in the report',
  );
});

t.test('the real entry point: exit 2, the problems on stderr, no stack trace, no port opened', async (t) => {
  const cases: Array<[string, Record<string, string>, RegExp[]]> = [
    ['ID_HASH_KEY=short', { ID_HASH_KEY: 'short' }, [/ID_HASH_KEY: /]],
    ['TRUST_PROXY=garbage', { TRUST_PROXY: 'garbage' }, [/TRUST_PROXY: "garbage" is not an IP address or CIDR/]],
    ['TRUST_PROXY=0.0.0.0/0,::/0', { TRUST_PROXY: '0.0.0.0/0,::/0' }, [/"0\.0\.0\.0\/0" spans/, /"::\/0" spans/]],
    [
      'TRUST_PROXY=0.0.0.0/1,128.0.0.0/1',
      { TRUST_PROXY: '0.0.0.0/1,128.0.0.0/1' },
      [/"0\.0\.0\.0\/1" spans/, /"128\.0\.0\.0\/1" spans/],
    ],
    [
      'NODE_ENV=production without Didit',
      { NODE_ENV: 'production', API_TOKENS: `tests:${TOKEN}` },
      [/DIDIT_API_KEY: required with NODE_ENV=production/],
    ],
    [
      'everything at once',
      ALL_BAD,
      [/ID_HASH_KEY: /, /TRUST_PROXY: /, /API_TOKENS: /, /REDIS_URL: /, /PORT: /, /DIDIT_API_KEY: /],
    ],
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

t.test(
  'a start that fails after the config (the port is taken): one line on stderr, exit 1, no stack trace',
  async (t) => {
    // Missing GeoIP files, rules or lists degrade by design; a taken port is what still stops a start.
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    t.teardown(() => taken.close());
    const run = await runUntilExit({ ...BASE, PORT: String((taken.address() as AddressInfo).port) });
    t.equal(run.code, 1);
    t.match(run.stderr, /^startup failed: .*EADDRINUSE/m);
    t.notMatch(run.stderr, /\n\s+at /, 'no stack trace');
  },
);

t.test('found by an outside review: the same bounds hold however the values are spelled', async (t) => {
  const everyone = Array.from({ length: 256 }, (_, i) => `${i}.0.0.0/8`).join(',');
  t.match(
    problemsOf({ ...BASE, TRUST_PROXY: everyone }).join('\n'),
    /the IPv4 entries together span more than a \/8/,
    '256 × /8 is "trust everyone"',
  );
  t.match(
    problemsOf({ ...BASE, TRUST_PROXY: '10.0.0.0/8,11.0.0.0/9' }).join('\n'),
    /together span more than a \/8/,
    'a /8 and a /9 add up past a /8',
  );
  t.same(problemsOf({ ...BASE, TRUST_PROXY: '10.0.0.0/9,11.0.0.0/9' }), [], 'two /9s are a /8: accepted');
  t.match(
    problemsOf({ ...BASE, TRUST_PROXY: Array.from({ length: 3 }, (_, i) => `2001:db8:${i}::/32`).join(',') }).join(
      '\n',
    ),
    /IPv6 entries together span more than a \/32/,
  );
  t.same(problemsOf({ ...BASE, TRUST_PROXY: everyone, TRUST_PROXY_ALLOW_WIDE: 'true' }), [], 'allowed deliberately');

  for (const spelling of ['Production', 'PRODUCTION', ' production ']) {
    t.match(
      problemsOf({ ...BASE, NODE_ENV: spelling }).join('\n'),
      /DIDIT_API_KEY: required with NODE_ENV=production/,
      `NODE_ENV=${JSON.stringify(spelling)} is production`,
    );
  }

  for (const url of [
    'http://didit.example.com',
    'http://169.254.169.254/latest',
    'file:///etc/passwd',
    'ftp://127.0.0.1/',
    'http://10.0.0.5/',
  ]) {
    t.match(
      problemsOf({ ...BASE, ...DIDIT_ENV, DIDIT_BASE_URL: url }).join('\n'),
      /DIDIT_BASE_URL: must be https/,
      `${url} refused: the API key would travel in clear`,
    );
  }
  t.match(
    problemsOf({ ...BASE, ...DIDIT_ENV, DIDIT_BASE_URL: 'https://user:pw@verification.didit.me' }).join('\n'),
    /DIDIT_BASE_URL: no credentials/,
  );
  for (const url of [
    'https://verification.didit.me',
    'http://127.0.0.1:8090',
    'http://localhost:8090',
    'http://[::1]:8090',
  ]) {
    t.same(problemsOf({ ...BASE, ...DIDIT_ENV, DIDIT_BASE_URL: url }), [], `${url} accepted`);
  }
});

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const EVENTS_SECRET = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
const EVENTS = { EVENTS_URL: 'https://events.example.com/hooks', EVENTS_SECRET };
const REDIS = { REDIS_URL: 'redis://127.0.0.1:6379', ID_HASH_KEY: HASH_KEY };
const load = (env: Record<string, string> = {}): Config => loadConfig(env);

/**
 * What each variable means when unset, read from the shaped settings (in their units). Keyed by
 * variable: a variable added to the schema without a row here fails the first test.
 */
const DEFAULTS: Record<string, () => [unknown, unknown]> = {
  PORT: () => [load().listen.port, 8080],
  HOST: () => [load().listen.host, '127.0.0.1'],
  METRICS_PORT: () => [load().metrics.port, 9464],
  METRICS_HOST: () => [load().metrics.host, '127.0.0.1'],
  LOG_LEVEL: () => [load().log.level, 'info'],
  RULES_DIR: () => [load().rules.dir, 'rules'],
  DATA_DIR: () => [load().data.dir, 'data'],
  GEOIP_CITY_DB: () => [load().data.geoip.city, 'data/maxmind-test/GeoIP2-City-Test.mmdb'],
  GEOIP_ASN_DB: () => [load().data.geoip.asn, 'data/maxmind-test/GeoLite2-ASN-Test.mmdb'],
  GEOIP_ANON_DB: () => [load().data.geoip.anon, 'data/maxmind-test/GeoIP2-Anonymous-IP-Test.mmdb'],
  GEOIP_CONNECTION_DB: () => [load().data.geoip.connection, 'data/maxmind-test/GeoIP2-Connection-Type-Test.mmdb'],
  LIST_REFRESH_MINUTES: () => [load().data.lists.refreshMs, 0],
  TOR_LIST_URL: () => [load().data.lists.urls.tor, undefined],
  VPN_LIST_URL: () => [load().data.lists.urls.vpn, undefined],
  HOSTING_LIST_URL: () => [load().data.lists.urls.hosting, undefined],
  RELAY_LIST_URL: () => [load().data.lists.urls.relay, undefined],
  LIST_MAX_AGE_HOURS: () => [load().data.lists.maxAgeMs, { tor: 0, vpn: 0, relay: 0, hosting: 0, hosting_asn: 0 }],
  // The embedded demo's shipped Tor list is months old; with Redis an unset limit is 48 h.
  TOR_LIST_MAX_AGE_HOURS: () => [
    [load().data.lists.maxAgeMs.tor, load(REDIS).data.lists.maxAgeMs.tor],
    [0, 48 * HOUR],
  ],
  REDIS_URL: () => [load().redis.url, undefined],
  REDIS_KEY_PREFIX: () => [load().redis.keyPrefix, 'risk:'],
  REDIS_COMMAND_TIMEOUT_MS: () => [load().redis.commandTimeoutMs, 100],
  REDIS_ALLOW_EVICTION: () => [load().redis.allowEviction, false],
  ID_HASH_KEY: () => [
    [load().ids.hashKey, load().embedded.includes('ephemeral-id-hash-key')],
    [undefined, true],
  ],
  ID_HASH_KEY_PREVIOUS: () => [load().ids.previousHashKey, undefined],
  DECISION_RECORD_TTL_DAYS: () => [load().retention.decisionRecordMs, 90 * DAY],
  DECISION_JOURNAL_FLUSH_MS: () => [load().journal.flushMs, 20],
  MAX_DECIDES_IN_FLIGHT: () => [load().pressure.maxDecidesInFlight, 32],
  API_TOKENS: () => [
    [load().auth.apiTokens, load().embedded.includes('generated-api-token')],
    [[], true],
  ],
  TRUST_PROXY: () => [load().auth.trustProxy, []],
  TRUST_PROXY_ALLOW_WIDE: () => [problemsOf({ TRUST_PROXY: '0.0.0.0/0' }, false).length, 1],
  NODE_ENV: () => [load().production, false],
  DIDIT_BASE_URL: () => [load().didit, undefined],
  DIDIT_API_KEY: () => [
    [load().didit, load().simulator],
    [undefined, { port: 8090 }],
  ],
  DIDIT_WEBHOOK_SECRET: () => [load().didit?.webhookSecrets, undefined],
  DIDIT_WEBHOOK_SECRET_PREVIOUS: () => [load(DIDIT_ENV).didit?.webhookSecrets, [DIDIT_ENV.DIDIT_WEBHOOK_SECRET]],
  DIDIT_WORKFLOW_PASSIVE: () => [load().didit?.workflows, undefined],
  DIDIT_WORKFLOW_FLASHING: () => [load().didit?.workflows, undefined],
  DIDIT_WORKFLOW_ACTIVE_3D: () => [load().didit?.workflows, undefined],
  DIDIT_CALLBACK_URL: () => [load().stepUp.callbackUrl, undefined],
  // Loopback http only while the simulator stands in for Didit; any https origin otherwise.
  CALLBACK_ALLOWED_ORIGINS: () => [
    [load().callbacks, load(DIDIT_ENV).callbacks],
    [{ allowLoopbackHttp: true }, { allowLoopbackHttp: false }],
  ],
  DIDIT_TIMEOUT_MS: () => [load().stepUp.timeoutMs, 1500],
  SIMULATOR_PORT: () => [load().simulator?.port, 8090],
  PENDING_TTL_MINUTES: () => [load().retention.pendingMs, 10 * MINUTE],
  TRUST_TTL_DAYS: () => [load().retention.trustMs, 90 * DAY],
  HISTORY_TTL_DAYS: () => [load().retention.historyMs, 30 * DAY],
  STEPUP_USER_MAX_PER_15M: () => [load().limits.stepUpsPerUserPer15m, 20],
  STEPUP_DEVICE_MAX_PER_15M: () => [load().limits.stepUpsPerDevicePer15m, 5],
  STEPUP_GLOBAL_MAX_PER_MIN: () => [load().limits.stepUpsPerMinute, 480],
  WEBHOOK_TOLERANCE_S: () => [load().webhook.toleranceS, 300],
  DIDIT_REQUIRE_METHOD_MATCH: () => [load().webhook.requireMethodMatch, true],
  DIDIT_REVIEW_TTL_HOURS: () => [
    [load().retention.reviewMs, load().retention.claimMs],
    [168 * HOUR, 168 * HOUR],
  ],
  PRESSURE_MAX_EVENT_LOOP_DELAY_MS: () => [load().pressure.maxEventLoopDelayMs, 250],
  PRESSURE_SAMPLE_INTERVAL_MS: () => [load().pressure.sampleIntervalMs, 500],
  PRESSURE_MAX_QUEUE_DELAY_MS: () => [load().pressure.maxQueueDelayMs, 5],
  RATE_LIMIT_USER_PER_MIN: () => [load().limits.userPerMinute, 120],
  RATE_LIMIT_CALLER_PER_MIN: () => [load().limits.callerPerMinute, 60_000],
  RATE_LIMIT_WEBHOOK_PER_MIN: () => [load().limits.webhookPerMinute, 120],
  EVENTS_URL: () => [load().events, undefined],
  EVENTS_SECRET: () => [
    problemsOf({ EVENTS_URL: EVENTS.EVENTS_URL }, false),
    ['EVENTS_SECRET: required with EVENTS_URL (whsec_<base64 of 24-64 random bytes>)'],
  ],
  EVENTS_SECRET_PREVIOUS: () => [load(EVENTS).events?.secrets, [EVENTS_SECRET]],
  EVENTS_INCLUDE_USER_ID: () => [load(EVENTS).events?.includeUserId, false],
  EVENTS_DECISIONS: () => [load(EVENTS).events?.decisions, false],
  EVENTS_MAX_CONCURRENCY: () => [load(EVENTS).events?.maxConcurrency, 8],
  EVENTS_TIMEOUT_MS: () => [load(EVENTS).events?.timeoutMs, 10_000],
  EVENTS_RETRY_HOURS: () => [load(EVENTS).events?.retryMs, 24 * HOUR],
  EVENTS_OUTBOX_MAX: () => [load(EVENTS).events?.outbox.maxEntries, 100_000],
  HTTP_MAX_CONNECTIONS: () => [load().http.connections.max, 4096],
  HTTP_MAX_CONNECTIONS_PER_ADDRESS: () => [load().http.connections.perAddress, 256],
};

t.test('every variable has a default, and the shaped settings carry it', async (t) => {
  t.same(Object.keys(DEFAULTS).sort(), [...CONFIG_VARIABLES].sort(), 'one row per variable of the schema');
  for (const [name, read] of Object.entries(DEFAULTS)) {
    const [actual, expected] = read();
    t.same(actual, expected, `${name} unset`);
  }
  t.same(
    load().embedded,
    ['memory-store', 'maxmind-test-databases', 'didit-simulator', 'ephemeral-id-hash-key', 'generated-api-token'],
    'nothing set: every embedded default named',
  );
});

t.test('the settings are in the units their users take', async (t) => {
  const c = load({
    PENDING_TTL_MINUTES: '7',
    TRUST_TTL_DAYS: '3',
    HISTORY_TTL_DAYS: '2',
    DIDIT_REVIEW_TTL_HOURS: '12',
    LIST_REFRESH_MINUTES: '5',
    LIST_MAX_AGE_HOURS: '2',
    TOR_LIST_MAX_AGE_HOURS: '1',
    TOR_LIST_URL: 'https://lists.example.com/tor',
    DIDIT_TIMEOUT_MS: '900',
    ...EVENTS,
    EVENTS_RETRY_HOURS: '30',
    ...REDIS,
    REDIS_COMMAND_TIMEOUT_MS: '200',
    TRUST_PROXY: '10.0.0.0/9 , 192.168.1.1',
    API_TOKENS: `login:${TOKEN}:decide,ops:${TOKEN}X`,
    ...DIDIT_ENV,
    DIDIT_WEBHOOK_SECRET_PREVIOUS: 'previous-webhook-secret-0123',
    DIDIT_CALLBACK_URL: 'https://app.example.com/back',
    GEOIP_CITY_DB: '/geo/city.mmdb',
  });
  t.same(
    c.retention,
    {
      pendingMs: 7 * MINUTE,
      trustMs: 3 * DAY,
      historyMs: 2 * DAY,
      reviewMs: 12 * HOUR,
      claimMs: 24 * HOUR,
      decisionRecordMs: 90 * DAY,
    },
    'retention in ms; claims outlive a day at least',
  );
  t.equal(load({ DIDIT_REVIEW_TTL_HOURS: '48' }).retention.claimMs, 48 * HOUR, 'claims outlive a longer review');
  t.equal(c.data.lists.refreshMs, 5 * MINUTE);
  t.same(c.data.lists.maxAgeMs, {
    tor: HOUR,
    vpn: 2 * HOUR,
    relay: 2 * HOUR,
    hosting: 2 * HOUR,
    hosting_asn: 2 * HOUR,
  });
  t.same(c.data.lists.urls, { tor: 'https://lists.example.com/tor' });
  t.same(
    load({ ...REDIS, LIST_MAX_AGE_HOURS: '0', TOR_LIST_MAX_AGE_HOURS: '0' }).data.lists.maxAgeMs.tor,
    0,
    'an explicit 0 turns the Tor limit off',
  );
  t.same(c.data.geoip, { city: '/geo/city.mmdb' }, 'an operator database: no embedded test database beside it');
  t.equal(c.stepUp.timeoutMs, 900);
  t.equal(c.stepUp.callbackUrl, 'https://app.example.com/back');
  t.equal(c.events?.retryMs, 30 * HOUR);
  t.equal(c.events?.outbox.ttlMs, 31 * HOUR, 'an outbox entry outlives its last retry by an hour');
  t.equal(c.events?.appendDeadlineMs, 450, 'two command deadlines and a margin');
  t.same(c.redis, { url: REDIS.REDIS_URL, keyPrefix: 'risk:', commandTimeoutMs: 200, allowEviction: false });
  t.same(c.auth.trustProxy, ['10.0.0.0/9', '192.168.1.1']);
  t.same(
    c.auth.apiTokens.map((a) => [a.name, a.scopes?.length]),
    [
      ['login', 1],
      ['ops', 4],
    ],
    'tokens parsed once, scopes and all',
  );
  t.same(c.ids.hashKey, { kid: 'ct', secret: 'config-test-hash-key-0123456789' });
  t.same(c.didit, {
    baseUrl: DIDIT_ENV.DIDIT_BASE_URL,
    apiKey: DIDIT_ENV.DIDIT_API_KEY,
    webhookSecrets: [DIDIT_ENV.DIDIT_WEBHOOK_SECRET, 'previous-webhook-secret-0123'],
    workflows: {
      PASSIVE: DIDIT_ENV.DIDIT_WORKFLOW_PASSIVE,
      FLASHING: DIDIT_ENV.DIDIT_WORKFLOW_FLASHING,
      ACTIVE_3D: DIDIT_ENV.DIDIT_WORKFLOW_ACTIVE_3D,
    },
  });
  t.equal(c.simulator, undefined, 'a real Didit: no simulator');
  t.same(c.embedded, [], 'nothing embedded');
  t.equal(load({ NODE_ENV: ' Production ', ...DIDIT_ENV, API_TOKENS: `a:${TOKEN}` }).production, true);
  t.throws(
    () => {
      (c.retention as { trustMs: number }).trustMs = 1;
    },
    TypeError,
    'the settings are frozen, groups included',
  );
  t.throws(
    () => {
      (c.auth.trustProxy as string[]).push('0.0.0.0/0');
    },
    TypeError,
    'and their lists',
  );
});

type JsonField = {
  type?: string;
  enum?: string[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
};

/** Variables whose checks are not in the schema's shape (refinements and cross checks): a bad value of each. */
const REFINED_BAD: Record<string, string[]> = {
  ID_HASH_KEY: ['short', 'k:0123456789abcdefghij'],
  ID_HASH_KEY_PREVIOUS: ['short', 'k:0123456789abcdefghij'],
  API_TOKENS: ['a:b', `a:${TOKEN}:admin`],
  TRUST_PROXY: ['garbage', '0.0.0.0/0'],
  EVENTS_SECRET: ['not-a-whsec-secret'],
  EVENTS_SECRET_PREVIOUS: ['whsec_AAAA'],
};
/** Free text by design: a path (a missing file degrades, test/data-io) and NODE_ENV (anything but production is development). */
const FREE_TEXT = ['GEOIP_CITY_DB', 'GEOIP_ASN_DB', 'GEOIP_ANON_DB', 'GEOIP_CONNECTION_DB', 'NODE_ENV'];
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** Bad values of a variable, generated from its schema: off each bound, the wrong type, outside an enum, a non-URL. */
function badValuesOf(name: string, field: JsonField): string[] {
  const bad: string[] = [...(REFINED_BAD[name] ?? [])];
  if (field.type === 'integer' || field.type === 'number') {
    bad.push('eighty', '1e', '0x');
    if (field.type === 'integer') bad.push(`${(field.minimum ?? 0) + 1}.5`);
    if (field.minimum !== undefined) bad.push(String(field.minimum - 1));
    if (field.maximum !== undefined && field.maximum < MAX_SAFE) bad.push(String(field.maximum + 1));
  }
  if (field.enum)
    bad.push(
      'nope',
      field.enum[0]!.toUpperCase() === field.enum[0] ? ' x' : field.enum[0]!.toUpperCase(),
      `${field.enum[0]} `,
    );
  if (field.format === 'uri') bad.push('not a url', 'example.com/no-scheme');
  if (field.pattern) bad.push('x', ' ');
  if (field.minLength !== undefined && field.minLength >= 1) bad.push('x'.repeat(field.minLength - 1));
  if (field.maxLength !== undefined) bad.push('x'.repeat(field.maxLength + 1));
  return bad;
}

/** Where a variable is judged: some checks need the variable they qualify (a secret needs its URL). */
const CONTEXT: Record<string, Record<string, string>> = {
  EVENTS_SECRET: { EVENTS_URL: EVENTS.EVENTS_URL },
  EVENTS_SECRET_PREVIOUS: EVENTS,
};

const FIELDS = (z.toJSONSchema(envSchema, { io: 'input', unrepresentable: 'any' }).properties ?? {}) as Record<
  string,
  JsonField
>;

t.test('a bad value of every variable is refused, naming the variable (generated from the schema)', async (t) => {
  const withoutBad = CONFIG_VARIABLES.filter((name) => badValuesOf(name, FIELDS[name]!).length === 0);
  t.same(withoutBad.sort(), [...FREE_TEXT].sort(), 'only free-text variables have no bad value');
  let tried = 0;
  for (const name of CONFIG_VARIABLES) {
    for (const value of badValuesOf(name, FIELDS[name]!)) {
      const problems = problemsOf({ ...BASE, ...CONTEXT[name], [name]: value }, false);
      t.ok(
        problems.some((p) => p.startsWith(`${name}: `)),
        `${name}=${JSON.stringify(value)} refused: ${problems[0] ?? '(accepted)'}`,
      );
      tried += 1;
    }
  }
  t.ok(tried > 3 * CONFIG_VARIABLES.length, `${tried} bad values tried`);
});

t.test('the bounds themselves are accepted: the bad values are refused for being past them', async (t) => {
  for (const name of CONFIG_VARIABLES) {
    const field = FIELDS[name]!;
    if (field.type !== 'integer' && field.type !== 'number') continue;
    for (const bound of [field.minimum, field.maximum]) {
      if (bound === undefined || bound >= MAX_SAFE) continue;
      t.same(problemsOf({ ...BASE, ...EVENTS, [name]: String(bound) }, false), [], `${name}=${bound} accepted`);
    }
  }
});

t.test('one bad value of every variable at once: every one reported in one run, no secret echoed', async (t) => {
  const env: Record<string, string> = { ...EVENTS };
  for (const name of CONFIG_VARIABLES) {
    const [value] = badValuesOf(name, FIELDS[name]!);
    if (value !== undefined) env[name] = value;
  }
  const problems = problemsOf(env);
  for (const name of CONFIG_VARIABLES.filter((n) => !FREE_TEXT.includes(n)))
    t.ok(
      problems.some((p) => p.startsWith(`${name}: `)),
      `${name} reported`,
    );
  t.ok(
    problems.every((p) => !p.includes('\n') && CONFIG_VARIABLES.some((name) => p.startsWith(`${name}: `))),
    'one line each, each naming a variable',
  );
  t.notOk(problems.join('\n').includes(TOKEN), 'no token echoed');
});
