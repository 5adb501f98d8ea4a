import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { parseSigningSecret, signEvent } from '../../src/events/signing.js';
import { newSecret, verifyStandardWebhook } from './receiver.js';

t.test('the Standard Webhooks reference vector signs to the published signature', async (t) => {
  // From the Standard Webhooks reference libraries' tests (and the Svix docs).
  const key = parseSigningSecret('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
  const headers = signEvent([key], 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}');
  t.equal(headers['webhook-signature'], 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  t.equal(headers['webhook-id'], 'msg_p5jXN8AQM9LWM0D4loKWxJek');
  t.equal(headers['webhook-timestamp'], '1614265330');
});

t.test('the independent verifier accepts our signature and refuses every tampering', async (t) => {
  const secret = newSecret();
  const body = JSON.stringify({ id: 'evt_1', type: 'device.trusted', data: { user: 'k.x' } });
  const h = signEvent([parseSigningSecret(secret)], 'evt_1', 1_800_000_000, body);
  t.same(verifyStandardWebhook(secret, h, body, 1_800_000_000), { ok: true });
  t.notOk(verifyStandardWebhook(secret, h, `${body} `, 1_800_000_000).ok, 'body changed');
  t.notOk(verifyStandardWebhook(secret, { ...h, 'webhook-id': 'evt_2' }, body, 1_800_000_000).ok, 'id changed');
  t.notOk(
    verifyStandardWebhook(secret, { ...h, 'webhook-timestamp': '1800000001' }, body, 1_800_000_000).ok,
    'timestamp changed',
  );
  t.notOk(verifyStandardWebhook(newSecret(), h, body, 1_800_000_000).ok, 'another secret');
  t.notOk(verifyStandardWebhook(secret, h, body, 1_800_000_000 + 301).ok, 'too old');
  t.notOk(verifyStandardWebhook(secret, h, body, 1_800_000_000 - 301).ok, 'too new');
});

t.test(
  'with two secrets each attempt carries both signatures: a receiver on either one verifies (rotation)',
  async (t) => {
    const current = newSecret();
    const previous = newSecret();
    const h = signEvent([parseSigningSecret(current), parseSigningSecret(previous)], 'evt_r', 1_800_000_000, '{}');
    t.equal(h['webhook-signature'].split(' ').length, 2);
    t.ok(verifyStandardWebhook(current, h, '{}', 1_800_000_000).ok, 'receiver already on the new secret');
    t.ok(verifyStandardWebhook(previous, h, '{}', 1_800_000_000).ok, 'receiver still on the old secret');
    t.notOk(verifyStandardWebhook(newSecret(), h, '{}', 1_800_000_000).ok, 'a third secret');
  },
);

t.test('a signing secret is whsec_ and 24-64 bytes of base64, nothing else', async (t) => {
  const b64 = (n: number) => Buffer.alloc(n, 7).toString('base64');
  for (const good of [`whsec_${b64(24)}`, `whsec_${b64(32)}`, `whsec_${b64(64)}`])
    t.equal(parseSigningSecret(good).length > 0, true, good.slice(0, 12));
  for (const bad of [
    b64(32),
    `whsec_${b64(23)}`,
    `whsec_${b64(65)}`,
    'whsec_',
    'whsec_not base64!',
    `WHSEC_${b64(32)}`,
    `whsec_${b64(32).replace(/=+$/, '')}===`,
  ])
    t.throws(() => parseSigningSecret(bad), bad.slice(0, 16));
});

t.test('EVENTS_URL: https anywhere, http only to loopback, a secret required; checked at start', async (t) => {
  const secret = `whsec_${Buffer.alloc(32, 1).toString('base64')}`;
  const base = { ID_HASH_KEY: 't1:test-hash-key-0123456789abcdefghij' };
  const accepted = [
    'https://events.example.com/hooks',
    'https://10.0.0.5:8443/x',
    'http://127.0.0.1:9000/hooks',
    'http://127.3.4.5/x',
    'http://localhost:8080/x',
    'http://[::1]:9000/x',
  ];
  for (const url of accepted)
    t.equal(loadConfig({ ...base, EVENTS_URL: url, EVENTS_SECRET: secret }).events?.url, url, url);
  const refused: Array<[Record<string, string>, RegExp]> = [
    [{ EVENTS_URL: 'http://events.example.com/hooks', EVENTS_SECRET: secret }, /EVENTS_URL: must be https/],
    [{ EVENTS_URL: 'http://10.0.0.5/hooks', EVENTS_SECRET: secret }, /EVENTS_URL: must be https/],
    [{ EVENTS_URL: 'http://127.0.0.1.example.com/x', EVENTS_SECRET: secret }, /EVENTS_URL: must be https/],
    [{ EVENTS_URL: 'http://[::ffff:10.0.0.1]/x', EVENTS_SECRET: secret }, /EVENTS_URL: must be https/],
    [{ EVENTS_URL: 'ftp://127.0.0.1/x', EVENTS_SECRET: secret }, /EVENTS_URL: must be https/],
    [{ EVENTS_URL: 'https://user:pw@events.example.com/', EVENTS_SECRET: secret }, /no credentials/],
    [{ EVENTS_URL: 'not a url', EVENTS_SECRET: secret }, /EVENTS_URL/],
    [{ EVENTS_URL: 'https://events.example.com/' }, /EVENTS_SECRET: required/],
    [
      { EVENTS_URL: 'https://events.example.com/', EVENTS_SECRET: 'shared-password-123456789' },
      /EVENTS_SECRET: expected whsec_/,
    ],
    [
      { EVENTS_URL: 'https://events.example.com/', EVENTS_SECRET: secret, EVENTS_SECRET_PREVIOUS: 'whsec_AAAA' },
      /EVENTS_SECRET_PREVIOUS: expected whsec_/,
    ],
    [{ EVENTS_SECRET: secret }, /EVENTS_SECRET: set without EVENTS_URL/],
    [
      { EVENTS_URL: 'https://events.example.com/', EVENTS_SECRET: secret, EVENTS_RETRY_HOURS: '12' },
      /EVENTS_RETRY_HOURS/,
    ],
  ];
  for (const [env, problem] of refused)
    t.throws(() => loadConfig({ ...base, ...env }), problem, `${env.EVENTS_URL ?? '(no url)'} ${problem}`);
  t.equal(loadConfig(base).events, undefined, 'no EVENTS_URL: no events');
  const defaults = loadConfig({ ...base, EVENTS_URL: 'https://events.example.com/', EVENTS_SECRET: secret }).events;
  t.equal(defaults?.decisions, false, 'every-decision events are off by default');
  t.equal(defaults?.includeUserId, false, 'raw user ids are off by default');
});

t.test("the API page's ten-line receiver verifies our events, refuses forgeries and dedupes", async (t) => {
  const readme = readFileSync('src/routes/README.md', 'utf8');
  const code = /A receiver in ten lines[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1];
  t.ok(code, 'the API page has the receiver');
  t.ok(code!.trim().split('\n').length <= 10, `${code!.trim().split('\n').length} lines`);
  const dir = mkdtempSync(path.join(tmpdir(), 'readme-receiver-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'verify.mjs'), code!);
  const { verify } = (await import(pathToFileURL(path.join(dir, 'verify.mjs')).href)) as {
    verify: (s: string, h: Record<string, string>, b: string, seen: Set<string>) => string;
  };
  const secret = newSecret();
  const seen = new Set<string>();
  const body = '{"id":"evt_a","type":"device.trusted","data":{}}';
  const headers = signEvent(
    [parseSigningSecret(newSecret()), parseSigningSecret(secret)],
    'evt_a',
    Math.floor(Date.now() / 1000),
    body,
  );
  t.equal(verify(secret, headers, body, seen), 'new', 'authentic (second of two signatures)');
  t.equal(verify(secret, headers, body, seen), 'duplicate', 'the same id again');
  t.equal(verify(secret, headers, body.replace('trusted', 'revoked'), new Set()), 'refuse', 'tampered body');
  t.equal(verify(newSecret(), headers, body, new Set()), 'refuse', 'another secret');
  const old = Math.floor(Date.now() / 1000) - 600;
  t.equal(
    verify(secret, signEvent([parseSigningSecret(secret)], 'evt_a', old, body), body, new Set()),
    'refuse',
    'old timestamp, validly signed',
  );
  t.equal(
    verify(secret, { 'webhook-id': 'evt_a', 'webhook-timestamp': headers['webhook-timestamp'] }, body, new Set()),
    'refuse',
    'no signature',
  );
});
