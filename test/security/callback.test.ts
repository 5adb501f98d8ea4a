import t from 'tap';
import { ConfigError, loadConfig } from '../../src/config.js';
import { callbackProblem, type CallbackPolicy } from '../../src/lib/callback-url.js';
import { createSimulator, simulatorCredentials } from '../../src/didit/simulator.js';
import { startDiditStack } from '../helpers/didit.js';
import { CHROME_WINDOWS, startTestService, testClock } from '../helpers/service.js';

/**
 * The callback is where a step-up sends the user's browser after the selfie: every URL class an
 * attacker could use to turn it into a script, a phishing redirect or a pointer at internal hosts.
 */
const HOSTILE_EVERYWHERE: readonly string[] = [
  // Script and local schemes, in the spellings browsers forgive.
  'javascript:alert(1)',
  'JavaScript:alert(document.cookie)',
  ' javascript:alert(1)',
  'java\tscript:alert(1)',
  'javascript://app.example.com/%0aalert(1)',
  'vbscript:msgbox(1)',
  'data:text/html,<script>alert(1)</script>',
  'data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==',
  'file:///etc/passwd',
  'blob:https://app.example.com/0b1f4b2e-3c4d-4e5f-8a9b-0c1d2e3f4a5b',
  'ftp://app.example.com/cb',
  'ws://app.example.com/cb',
  'about:blank',
  // Not absolute, or scheme-relative.
  '//evil.example.com/cb',
  '/after-login',
  'app.example.com/cb',
  '',
  // Plain http to a public or internal host.
  'http://app.example.com/cb',
  'http://169.254.169.254/latest/meta-data/iam/security-credentials/',
  'http://10.0.0.1/admin',
  // IP-literal hosts in every spelling the URL parser normalises.
  'https://169.254.169.254/latest/meta-data/',
  'https://2852039166/',
  'https://0xA9FEA9FE/',
  'https://0251.0376.0251.0376/',
  'https://169.254.43518/',
  'https://10.0.0.1/',
  'https://[fd00::1]/',
  'https://[::ffff:169.254.169.254]/',
  'https://[fe80::1]/',
  // User information: the browser goes to the host after the @.
  'https://app.example.com@evil.example.com/',
  'https://user:pass@app.example.com/',
  'https://app.example.com:@evil.example.com/',
  'https://app.example.com%40evil.example.com/',
  // Backslashes read as slashes by browsers.
  'https://app.example.com\\@evil.example.com/',
  'https:\\\\evil.example.com/cb',
  'https://evil.example.com\\app.example.com/',
  // Whitespace and control characters, which parsers strip or reinterpret.
  'https://app.example.com /cb',
  'https://app.example.com/\ncb',
  'https://app.exa\tmple.com/cb',
  '\u0000https://app.example.com/',
  'https://app.example.com/\u0000',
  'https://app.example.com/\u007f',
  'https://app.example.com/\u00a0',
  'https://app.example.com/\u2028',
  // Raw Unicode (homographs: Cyrillic а in "аpple"), and fullwidth dots.
  'https://аpple.com/login',
  'https://app\u3002example.com/',
  'https://ｅｘａｍｐｌｅ.com/',
  // Too long.
  `https://app.example.com/${'a'.repeat(2048)}`,
];

/** Refused when no allowed-origins list is set (the list is the operator's explicit decision on these). */
const HOSTILE_WITHOUT_LIST: readonly string[] = [
  'https://xn--pple-43d.com/login',
  'https://app.xn--80ak6aa92e.com/',
  'https://app.example.com:8443/cb',
  'https://intranet/cb',
  'https://app.example.com./cb',
];

const LOOPBACK_HTTP: readonly string[] = [
  'http://127.0.0.1:3000/cb',
  'http://127.1.2.3/cb',
  'http://localhost:5173/after?x=1',
  'http://LOCALHOST/cb',
  'http://[::1]:8080/cb',
  'http://app.localhost/cb',
];
const LOOPBACK_HTTPS: readonly string[] = ['https://localhost/cb', 'https://127.0.0.1:8443/cb'];

const GOOD_PUBLIC: readonly string[] = [
  'https://app.example.com/after-login?state=abc',
  'https://app.example.com',
  'https://APP.Example.com/cb#done',
  'https://app.example.com:443/cb',
  'https://login.bank.example.co.uk/return',
];

/** TAP names are lines: U+2028 and friends inside one would end it, so everything non-ASCII is escaped. */
function show(url: string): string {
  return JSON.stringify(url.slice(0, 80)).replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

const STRICT: CallbackPolicy = { allowLoopbackHttp: false };
const EMBEDDED: CallbackPolicy = { allowLoopbackHttp: true };

t.test('the rule itself: hostile URLs are refused in every mode, good ones accepted', async (t) => {
  for (const url of HOSTILE_EVERYWHERE) {
    t.ok(callbackProblem(url, STRICT), `strict refuses ${show(url)}`);
    t.ok(callbackProblem(url, EMBEDDED), `embedded refuses ${show(url)}`);
  }
  for (const url of HOSTILE_WITHOUT_LIST) t.ok(callbackProblem(url, STRICT), `refused without a list: ${url}`);
  for (const url of [...LOOPBACK_HTTP, ...LOOPBACK_HTTPS]) {
    t.ok(callbackProblem(url, STRICT), `loopback refused outside embedded mode: ${url}`);
    t.equal(callbackProblem(url, EMBEDDED), undefined, `loopback accepted in embedded mode: ${url}`);
  }
  for (const url of GOOD_PUBLIC) {
    t.equal(callbackProblem(url, STRICT), undefined, `accepted: ${url}`);
    t.equal(callbackProblem(url, EMBEDDED), undefined, `accepted in embedded mode: ${url}`);
  }
});

t.test('with CALLBACK_ALLOWED_ORIGINS only the listed origins pass, port and all', async (t) => {
  const policy = loadConfig({
    CALLBACK_ALLOWED_ORIGINS: 'https://app.example.com, https://xn--bcher-kva.example:8443',
  }).callbacks;
  const accepted = [
    'https://app.example.com/cb',
    'https://APP.example.com/cb?x=1',
    'https://app.example.com:443/cb',
    'https://xn--bcher-kva.example:8443/return',
    'https://bücher.example:8443/return'.normalize(),
  ];
  const refused = [
    ...HOSTILE_EVERYWHERE,
    'https://evil.example.com/cb',
    'https://app.example.com.evil.example.com/cb',
    'https://evilapp.example.com/cb',
    'https://sub.app.example.com/cb',
    'https://app.example.com:444/cb',
    'https://xn--bcher-kva.example/return',
    'http://app.example.com/cb',
    'https://evil.example.com/?next=https://app.example.com',
    'https://evil.example.com/#@app.example.com',
    'https://app.example.com@evil.example.com/',
    // A list also closes loopback, even in embedded mode, unless loopback is listed.
    'http://127.0.0.1:3000/cb',
    'http://localhost/cb',
  ];
  // Raw Unicode is refused: the caller sends punycode, so the listed origin is what is compared.
  t.ok(callbackProblem(accepted.pop()!, policy), 'raw Unicode host refused even when its punycode origin is listed');
  for (const url of accepted) t.equal(callbackProblem(url, policy), undefined, `accepted: ${url}`);
  for (const url of refused) t.ok(callbackProblem(url, policy), `refused: ${show(url)}`);
});

t.test('the configuration: CALLBACK_ALLOWED_ORIGINS and DIDIT_CALLBACK_URL obey the same rule, at load', async (t) => {
  const problemsOf = (env: Record<string, string>): string[] => {
    try {
      loadConfig(env);
      return [];
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return [...error.problems];
    }
  };
  const badOrigins = [
    '*',
    'https://app.example.com/',
    'https://app.example.com/path',
    'https://App.example.com',
    'https://app.example.com:443',
    'http://app.example.com',
    'https://user@app.example.com',
    'javascript:alert(1)',
    'https://169.254.169.254',
    'app.example.com',
    'https://localhost',
    'https://ok.example.com,',
  ];
  for (const origin of badOrigins) {
    const problems = problemsOf({ CALLBACK_ALLOWED_ORIGINS: origin, ...productionDidit });
    t.ok(
      problems.some((p) => p.startsWith('CALLBACK_ALLOWED_ORIGINS:')),
      `refused origin ${show(origin)}`,
    );
    t.notOk(
      problems.join('\n').includes('169.254') || problems.join('\n').includes('user@'),
      'the problem does not echo the value',
    );
  }
  t.same(
    problemsOf({ CALLBACK_ALLOWED_ORIGINS: 'https://app.example.com,https://id.example.com:8443', ...productionDidit }),
    [],
  );
  t.same(
    problemsOf({ CALLBACK_ALLOWED_ORIGINS: 'http://127.0.0.1:3000' }),
    [],
    'loopback http origin is fine with the embedded simulator',
  );
  t.ok(
    problemsOf({ CALLBACK_ALLOWED_ORIGINS: 'http://127.0.0.1:3000', ...productionDidit }).length > 0,
    'but not with a real Didit',
  );

  for (const url of [
    'javascript:alert(1)//',
    'http://169.254.169.254/latest/',
    'https://user@app.example.com/cb',
    'https://2852039166/',
    'file:///etc/passwd',
    'data:text/html,x',
  ]) {
    t.ok(
      problemsOf({ DIDIT_CALLBACK_URL: url }).some((p) => p.startsWith('DIDIT_CALLBACK_URL:')),
      `DIDIT_CALLBACK_URL refuses ${url}`,
    );
  }
  t.ok(
    problemsOf({
      DIDIT_CALLBACK_URL: 'https://evil.example.com/cb',
      CALLBACK_ALLOWED_ORIGINS: 'https://app.example.com',
    }).some((p) => p.startsWith('DIDIT_CALLBACK_URL:')),
    'DIDIT_CALLBACK_URL outside the list',
  );
  t.same(
    problemsOf({
      DIDIT_CALLBACK_URL: 'https://app.example.com/cb',
      CALLBACK_ALLOWED_ORIGINS: 'https://app.example.com',
    }),
    [],
  );
  t.same(
    problemsOf({ DIDIT_CALLBACK_URL: 'http://localhost:3000/cb' }),
    [],
    'loopback default callback with the simulator',
  );
  t.ok(
    problemsOf({ DIDIT_CALLBACK_URL: 'http://localhost:3000/cb', ...productionDidit }).length > 0,
    'loopback default callback refused with a real Didit',
  );
});

const productionDidit = {
  DIDIT_API_KEY: 'key',
  DIDIT_BASE_URL: 'https://verification.didit.me',
  DIDIT_WEBHOOK_SECRET: 'whsec-0123456789abcdef',
  DIDIT_WORKFLOW_PASSIVE: '00000000-0000-4000-8000-000000000001',
  DIDIT_WORKFLOW_FLASHING: '00000000-0000-4000-8000-000000000002',
  DIDIT_WORKFLOW_ACTIVE_3D: '00000000-0000-4000-8000-000000000003',
};

t.test('POST /v1/decide: every hostile callback is a 400 on field callback that echoes nothing', async (t) => {
  const embedded = await startTestService();
  // A real Didit configured (never called: validation comes first), so loopback http is refused too.
  const production = await startTestService(productionDidit);
  t.teardown(async () => {
    await embedded.close();
    await production.close();
  });
  const decide = async (service: typeof embedded, callback: string) => {
    const response = await service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': 'application/json', ...service.auth },
      payload: JSON.stringify({
        user_id: 'cb-user',
        device_id: 'cb-device',
        ip: '89.160.20.112',
        user_agent: CHROME_WINDOWS,
        callback,
      }),
    });
    return {
      status: response.statusCode,
      body: response.json() as { code?: string; field?: string; message?: string },
      text: response.body,
    };
  };
  for (const [service, hostile] of [
    [embedded, [...HOSTILE_EVERYWHERE, ...HOSTILE_WITHOUT_LIST]],
    [production, [...HOSTILE_EVERYWHERE, ...HOSTILE_WITHOUT_LIST, ...LOOPBACK_HTTP, ...LOOPBACK_HTTPS]],
  ] as const) {
    for (const url of hostile) {
      const { status, body, text } = await decide(service, url);
      const label = `${service === embedded ? 'embedded' : 'production'} ${show(url)}`;
      t.equal(status, 400, label);
      t.equal(body.code, 'RISK_ERR_VALIDATION', label);
      t.equal(body.field, 'callback', label);
      if (url.length > 12) t.notOk(text.includes(url.slice(8, 40)), `the reply does not echo ${label}`);
    }
  }
  for (const url of GOOD_PUBLIC) {
    t.equal((await decide(embedded, url)).status, 200, `embedded accepts ${url}`);
    t.equal((await decide(production, url)).status, 200, `production accepts ${url}`);
  }
  for (const url of LOOPBACK_HTTP) t.equal((await decide(embedded, url)).status, 200, `embedded accepts ${url}`);
});

t.test('the simulator never redirects the browser to a refused callback', async (t) => {
  const credentials = simulatorCredentials();
  const simulator = createSimulator({ ...credentials, publicBaseUrl: 'http://127.0.0.1:1' });
  t.teardown(() => simulator.app.close());
  const finish = async (callback: string) => {
    // Straight at the simulator's session API: the decide route's check is not in the way.
    const created = await simulator.app.inject({
      method: 'POST',
      url: '/v3/session/',
      headers: { 'x-api-key': credentials.apiKey, 'content-type': 'application/json' },
      payload: JSON.stringify({ workflow_id: credentials.workflows.PASSIVE, callback }),
    });
    const token = (created.json() as { session_token: string }).session_token;
    return simulator.app.inject({ method: 'POST', url: `/session/${token}/approve` });
  };
  for (const url of HOSTILE_EVERYWHERE.filter((u) => u !== '')) {
    const response = await finish(url);
    t.equal(response.headers.location, undefined, `no redirect to ${show(url)}`);
    t.equal(response.statusCode, 200);
  }
  const good = await finish('http://127.0.0.1:3000/after');
  t.equal(good.statusCode, 303);
  t.match(
    String(good.headers.location),
    /^http:\/\/127\.0\.0\.1:3000\/after\?verificationSessionId=[0-9a-f-]{36}&status=Approved$/,
  );
});

t.test('end to end: an allowed callback reaches the simulator and comes back as the redirect', async (t) => {
  // A generous Didit deadline: this tests where the browser goes, not timeouts, on a shared machine.
  const stack = await startDiditStack(testClock(), {
    CALLBACK_ALLOWED_ORIGINS: 'http://127.0.0.1:3000',
    DIDIT_TIMEOUT_MS: '5000',
  });
  t.teardown(() => stack.close());
  const decide = (callback: string) =>
    stack.service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': 'application/json', ...stack.service.auth },
      payload: JSON.stringify({
        user_id: 'e2e',
        device_id: 'new',
        ip: '89.160.20.112',
        user_agent: CHROME_WINDOWS,
        callback,
      }),
    });
  const refused = await decide('http://localhost:3000/after');
  t.equal(refused.statusCode, 400, 'loopback but not the listed origin');
  t.equal(stack.simulator.stats.createCalls, 0, 'a refused callback never reaches Didit');
  const ok = await decide('http://127.0.0.1:3000/after');
  const verification = (ok.json() as { verification: { status: string; url: string } }).verification;
  t.equal(verification.status, 'created');
  const session = [...stack.simulator.sessions.values()][0]!;
  t.equal(session.callback, 'http://127.0.0.1:3000/after');
  const page = await stack.simulator.app.inject({ method: 'POST', url: `/session/${session.token}/approve` });
  t.equal(page.statusCode, 303);
  t.match(String(page.headers.location), /^http:\/\/127\.0\.0\.1:3000\/after\?/);
});
