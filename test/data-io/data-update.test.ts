import { execSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { updateData } from '../../src/data-io/data-update.js';
import { openDatabase } from '../../src/data-io/geoip-files.js';

const work = mkdtempSync(path.join(tmpdir(), 'risk-update-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const dataDir = path.join(work, 'data');
cpSync('data', dataDir, { recursive: true });

// A GeoLite2-style tar.gz made from a MaxMind test database, as MaxMind serves them.
const stage = path.join(work, 'GeoLite2-City_20261125');
mkdirSync(stage);
cpSync('data/maxmind-test/GeoLite2-City-Test.mmdb', path.join(stage, 'GeoLite2-City.mmdb'));
execSync(`tar czf ${path.join(work, 'city.tar.gz')} -C ${work} GeoLite2-City_20261125`);
const archive = readFileSync(path.join(work, 'city.tar.gz'));

let torBody = `185.220.101.1\n185.220.101.2\n2a0b:f4c2::1\n${Array.from({ length: 20 }, (_, i) => `198.51.100.${i}`).join('\n')}`;
const requests: Array<{ url: string; auth?: string; ifNoneMatch?: string }> = [];
const server: Server = createServer((request, response) => {
  requests.push({
    url: request.url ?? '',
    ...(request.headers.authorization ? { auth: request.headers.authorization } : {}),
    ...(request.headers['if-none-match'] ? { ifNoneMatch: String(request.headers['if-none-match']) } : {}),
  });
  if (request.url?.startsWith('/geoip/databases/GeoLite2-City/download')) {
    if (request.headers.authorization !== `Basic ${Buffer.from('12345:test-license').toString('base64')}`)
      return void response.writeHead(401).end();
    return void response.writeHead(200, { 'content-type': 'application/gzip' }).end(archive);
  }
  if (request.url?.startsWith('/geoip/databases/GeoLite2-ASN/download'))
    return void response.writeHead(200).end(Buffer.from('not a tarball'));
  if (request.url === '/tor.txt') {
    if (request.headers['if-none-match'] === '"v1"') return void response.writeHead(304).end();
    return void response.writeHead(200, { etag: '"v1"' }).end(torBody);
  }
  if (request.url === '/truncated.txt') return void response.writeHead(200).end('185.220.101.1\n');
  response.writeHead(404).end();
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
t.teardown(() => server.close());
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const cityTarget = path.join(work, 'geo/GeoLite2-City.mmdb');
const asnTarget = path.join(work, 'geo/GeoLite2-ASN.mmdb');

t.test(
  'GeoLite2 databases are downloaded with the licence key, proven, and renamed into place; a bad one changes nothing',
  async (t) => {
    const report = await updateData({
      dataDir,
      maxmindBaseUrl: base,
      accountId: '12345',
      licenseKey: 'test-license',
      editions: { 'GeoLite2-City': cityTarget, 'GeoLite2-ASN': asnTarget },
      listUrls: {},
    });
    t.same(report.updated, ['GeoLite2-City']);
    t.match(report.failed, [{ name: 'GeoLite2-ASN' }]);
    const loaded = await openDatabase(cityTarget);
    t.match(loaded.reader.get('81.2.69.142'), { country: { iso_code: 'GB' } });
    t.throws(() => statSync(asnTarget), 'no half-written ASN file');
    t.ok(
      requests.some((r) => r.auth?.startsWith('Basic ')),
      'basic auth with account id and licence key',
    );
  },
);

t.test('lists: conditional GET, validation, atomic replace and the manifest date', async (t) => {
  const report = await updateData({
    dataDir,
    maxmindBaseUrl: base,
    editions: {},
    listUrls: { tor: `${base}/tor.txt` },
    now: () => Date.parse('2026-11-25T12:00:00Z'),
  });
  t.same(report.updated, ['tor']);
  const manifest = JSON.parse(readFileSync(path.join(dataDir, 'lists.json'), 'utf8')) as {
    tor: { as_of: string; etag: string; files: string[] };
  };
  t.equal(manifest.tor.as_of, '2026-11-25T12:00:00.000Z');
  t.equal(manifest.tor.etag, '"v1"');
  t.equal(readFileSync(path.join(dataDir, manifest.tor.files[0]!), 'utf8'), torBody);
  const again = await updateData({ dataDir, maxmindBaseUrl: base, editions: {}, listUrls: { tor: `${base}/tor.txt` } });
  t.same(again.unchanged, ['tor'], '304 Not Modified');
  t.equal(requests.at(-1)?.ifNoneMatch, '"v1"');
  torBody = 'changed';
  const truncated = await updateData({
    dataDir,
    maxmindBaseUrl: base,
    editions: {},
    listUrls: { vpn: `${base}/truncated.txt`, hosting: `${base}/missing.txt` },
  });
  t.same(truncated.updated, []);
  t.equal(truncated.failed.length, 2);
  t.ok(
    readFileSync(path.join(dataDir, 'vpn-datacenter/x4bnet-vpn-ipv4.txt'), 'utf8').length > 10_000,
    'the last good VPN list stays',
  );
});
