/**
 * Issue #16 §2b: a list's age is the age of its data (its own dates, else `Last-Modified`), never
 * the time we fetched it; outside the embedded demo the Tor list is stale after 48 h by default;
 * /readyz names stale data as a warning.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { sourceDate, updateData } from '../../src/data-io/data-update.js';
import { DIDIT_ENV } from '../helpers/config-env.js';
import { productionEntry, startServerProcess } from '../helpers/process.js';
import { startRedis } from '../helpers/redis.js';

t.test('sourceDate: the newest date the list states, else Last-Modified, else unknown', async (t) => {
  const cases: Array<[string, string, string | null, { at: string; from: string } | undefined]> = [
    [
      'TorDNSEL exit list: the newest ExitAddress',
      'ExitNode 0011\nPublished 2026-11-20 10:00:00\nExitAddress 185.220.101.1 2026-11-24 09:10:11\nExitNode 0022\nExitAddress 185.220.101.2 2026-11-25 08:00:00\n',
      'Wed, 26 Nov 2026 12:00:00 GMT',
      { at: '2026-11-25T08:00:00.000Z', from: 'list' },
    ],
    [
      'a dated header comment',
      '# generated 2026-08-22T04:05:06Z\n185.220.101.1\n',
      null,
      { at: '2026-08-22T04:05:06.000Z', from: 'list' },
    ],
    [
      'bare addresses: Last-Modified',
      '185.220.101.1\n185.220.101.2\n',
      'Sat, 22 Aug 2026 10:00:00 GMT',
      { at: '2026-08-22T10:00:00.000Z', from: 'last_modified' },
    ],
    ['bare addresses, no Last-Modified: unknown', '185.220.101.1\n', null, undefined],
    ['an unparseable Last-Modified: unknown', '185.220.101.1\n', 'yesterday', undefined],
    ['a date inside an address line is not a list date', '185.220.101.1 2026-01-01 00:00:00\n', null, undefined],
  ];
  for (const [title, text, lastModified, expected] of cases) {
    const got = sourceDate(text, lastModified);
    t.same(got ? { at: new Date(got.at).toISOString(), from: got.from } : undefined, expected, title);
  }
});

t.test(
  'data:update stamps as_of with the source date: a stuck mirror serving a 100-day-old list looks 100 days old',
  async (t) => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'risk-stale-'));
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
    cpSync('data/lists.json', path.join(dataDir, 'lists.json'));
    const oldDate = new Date(Date.now() - 100 * 86_400_000);
    const body = Array.from({ length: 30 }, (_, i) => `185.220.101.${i + 1}`).join('\n');
    const mirror = createServer((_request, response) =>
      response.writeHead(200, { 'last-modified': oldDate.toUTCString() }).end(body),
    );
    await new Promise<void>((r) => mirror.listen(0, '127.0.0.1', r));
    t.teardown(() => mirror.close());
    const url = `http://127.0.0.1:${(mirror.address() as AddressInfo).port}/tor.txt`;
    const report = await updateData({ dataDir, maxmindBaseUrl: '', editions: {}, listUrls: { tor: url } });
    t.same(report.updated, ['tor']);
    const manifest = JSON.parse(readFileSync(path.join(dataDir, 'lists.json'), 'utf8')) as {
      tor: { as_of: string; as_of_from: string };
    };
    t.equal(
      manifest.tor.as_of,
      new Date(Math.floor(oldDate.getTime() / 1000) * 1000).toISOString(),
      'as_of is the list date, not the fetch time',
    );
    t.equal(manifest.tor.as_of_from, 'last_modified');
  },
);

t.test(
  'outside the embedded demo the shipped (old) Tor list is stale by default: /readyz warns, stays ready, decides are degraded',
  async (t) => {
    const shippedAge =
      (Date.now() -
        Date.parse((JSON.parse(readFileSync('data/lists.json', 'utf8')) as { tor: { as_of: string } }).tor.as_of)) /
      3600_000;
    t.ok(shippedAge > 48, `the shipped Tor list is ${Math.round(shippedAge / 24)} days old`);
    const redis = await startRedis();
    t.teardown(() => redis.stop());
    // Production-like: with REDIS_URL the simulator is refused, so a (never contacted) Didit is configured.
    const env = {
      REDIS_URL: redis.url,
      ID_HASH_KEY: 'st:staleness-hash-key-0123456789abcdef',
      API_TOKENS: 'tests:staleness-token-0123456789',
      LOG_LEVEL: 'warn',
      ...DIDIT_ENV,
    };
    const entry = productionEntry();
    const cases: Array<[string, Record<string, string>, string[]]> = [
      ['production, nothing set: 48 h', env, ['stale_data:list_tor']],
      ['production, TOR_LIST_MAX_AGE_HOURS=0: off', { ...env, TOR_LIST_MAX_AGE_HOURS: '0' }, []],
      ['the embedded demo (no REDIS_URL)', { LOG_LEVEL: 'warn', API_TOKENS: env.API_TOKENS }, []],
    ];
    for (const [title, vars, warnings] of cases) {
      const server = await startServerProcess(vars, entry);
      const ready = await fetch(`${server.base}/readyz`);
      const body = (await ready.json()) as { warnings: string[] };
      t.equal(ready.status, 200, `${title}: ready`);
      t.same(body.warnings, warnings, `${title}: warnings ${JSON.stringify(body.warnings)}`);
      const decide = await fetch(`${server.base}/v1/decide`, {
        method: 'POST',
        headers: { authorization: 'Bearer staleness-token-0123456789', 'content-type': 'application/json' },
        body: JSON.stringify({ user_id: 'u', device_id: 'd', ip: '89.160.20.112' }),
      });
      const answer = (await decide.json()) as { degraded: string[]; action: string };
      t.equal(
        answer.degraded.includes('lists'),
        warnings.length > 0,
        `${title}: degraded ${JSON.stringify(answer.degraded)}`,
      );
      server.child.kill('SIGKILL');
      await server.exited();
    }
  },
);
