import { copyFileSync, cpSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import t from 'tap';
import { until } from '../helpers/poll.js';
import { startTestService } from '../helpers/service.js';

/** T32: GeoIP databases and lists replaced in place and by rename, good and broken, while serving. */
const work = mkdtempSync(path.join(tmpdir(), 'risk-swap-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const dataDir = path.join(work, 'data');
cpSync('data', dataDir, { recursive: true });
const geoDir = path.join(work, 'geo');
cpSync('data/maxmind-test', geoDir, { recursive: true });
const city = path.join(geoDir, 'city.mmdb');
copyFileSync(path.join(geoDir, 'GeoIP2-City-Test.mmdb'), city);

const service = await startTestService(
  {
    RATE_LIMIT_USER_PER_MIN: '100000000',
    DATA_DIR: dataDir,
    GEOIP_CITY_DB: city,
    GEOIP_ASN_DB: path.join(geoDir, 'GeoLite2-ASN-Test.mmdb'),
  },
  { watch: true },
);
t.teardown(() => service.close());
const country = async (ip: string) =>
  (
    await service.app.inject({
      method: 'POST',
      url: '/v1/decide',
      headers: { 'content-type': 'application/json', ...service.auth },
      payload: JSON.stringify({ user_id: 'swap', device_id: 'd', ip }),
    })
  ).json() as { signals: Record<string, unknown>; degraded: string[] };

t.test('a truncated, empty or garbage database written in place keeps the previous reader serving', async (t) => {
  t.equal((await country('81.2.69.142')).signals['geo.country'], 'GB');
  const rejections = async () =>
    Number(
      /risk_data_reload_failures_total\{dataset="geoip_city"\} (\d+)/.exec(
        await service.metrics.registry.getSingleMetricAsString('risk_data_reload_failures_total'),
      )?.[1] ?? 0,
    );
  const files: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['truncated', readFileSync(path.join(geoDir, 'GeoIP2-City-Test.mmdb')).subarray(0, 1000)],
    ['garbage', Buffer.from('garbage')],
  ];
  for (const [kind, bytes] of files) {
    const before = await rejections();
    writeFileSync(city, bytes);
    // Wait for this file to be read and rejected, so "still the old reader" is not just "not read yet".
    const rejected = await until(async () => (await rejections()) > before);
    t.ok(rejected >= 0, `${kind}: read and rejected after ${rejected} ms`);
    const reply = await country('81.2.69.142');
    t.equal(reply.signals['geo.country'], 'GB', `${kind}: still the old reader`);
    t.notOk(reply.degraded.includes('geoip'));
  }
});

t.test('a good database arriving by atomic rename is swapped in', async (t) => {
  // GeoLite2-City-Test has no record for 149.101.100.0 (GeoIP2-City-Test says US): the swap is visible.
  const next = path.join(geoDir, 'city.mmdb.tmp');
  copyFileSync(path.join(geoDir, 'GeoLite2-City-Test.mmdb'), next);
  renameSync(next, city);
  t.equal((await country('149.101.100.0')).signals['geo.country'], 'US');
  const swappedIn = await until(async () => (await country('149.101.100.0')).signals['geo.country'] === '');
  t.ok(swappedIn >= 0, `swapped in after ${swappedIn} ms`);
});

t.test('a list replaced by rename is reloaded; a garbage list keeps the previous one', async (t) => {
  const tor = path.join(dataDir, 'tor/tor-exit-relays-2026-08-22.lst');
  t.equal((await country('192.0.2.55')).signals['ip.tor'], false);
  writeFileSync(`${tor}.tmp`, '192.0.2.55\n192.0.2.56\n');
  renameSync(`${tor}.tmp`, tor);
  const reloaded = await until(async () => (await country('192.0.2.55')).signals['ip.tor'] === true);
  t.ok(reloaded >= 0, `reloaded after ${reloaded} ms`);
  writeFileSync(tor, '\u0000garbage\n');
  await new Promise((r) => setTimeout(r, 1000));
  t.equal((await country('192.0.2.55')).signals['ip.tor'], true, 'an empty parse never replaces a good list');
});
