import t from 'tap';
import { parseClientIp } from '../../src/signals/ip.js';
import { createIpLists } from '../../src/signals/ip-lists.js';
import { loadListsFromManifest, parseAsnLines, snapshotFromText } from '../../src/data-io/list-files.js';

const { snapshots, failures } = await loadListsFromManifest('data');
const NOW = Date.parse('2026-11-25T12:00:00Z');
const lists = createIpLists({ snapshots });
const check = (ip: string, asn?: number) => lists.check(parseClientIp(ip), asn, NOW);

t.test('every shipped list loads', async (t) => {
  t.same(failures, []);
  t.same(snapshots.map((s) => s.name).sort(), ['hosting', 'hosting_asn', 'relay', 'tor', 'vpn']);
  for (const s of snapshots) t.ok(s.entries > 10, `${s.name}: ${s.entries} entries`);
});

t.test('Tor exits from the 2026 list are flagged, IPv4 and IPv6', async (t) => {
  for (const ip of [
    '185.220.101.1',
    '185.220.100.240',
    '109.70.100.1',
    '171.25.193.25',
    '185.220.101.33',
    '192.42.116.16',
    '2a0b:f4c2::1',
    '2001:bf0:666::666',
    '2001:0bf0:0666:0000:0000:0000:0000:0666',
  ])
    t.equal(check(ip).tor, true, ip);
  for (const ip of ['8.8.8.8', '1.1.1.1', '89.160.20.112']) t.equal(check(ip).tor, false, ip);
});

t.test('VPN, relay and hosting ranges match the documented examples', async (t) => {
  t.match(check('8.8.8.8'), { hosting: true, vpn: false });
  t.match(check('3.5.140.1'), { hosting: true });
  t.match(check('20.42.0.1'), { hosting: true });
  t.match(check('51.15.15.81'), { hosting: true });
  t.match(check('185.220.101.1'), { hosting: true, vpn: true });
  t.match(check('104.28.139.250'), { relay: true, vpn: false }, 'iCloud Private Relay is a relay, not a VPN');
  t.match(check('23.144.160.67'), { vpn: true, relay: false }, 'Mullvad');
  t.match(check('2.58.241.67'), { vpn: true }, 'ProtonVPN');
  for (const ip of ['1.1.1.1', '104.16.0.1', '73.0.0.1', '24.5.0.1', '89.160.20.112', '192.168.1.1', '100.64.0.1']) {
    t.match(check(ip), { vpn: false, hosting: false, tor: false }, ip);
  }
});

t.test('hosting ASNs flag an address the range list misses', async (t) => {
  t.equal(check('89.160.20.112', 16509).hosting, true, 'Amazon');
  t.equal(check('89.160.20.112', 7922).hosting, false, 'Comcast is residential');
  t.equal(check('89.160.20.112', 29518).hosting, false);
  const asns = parseAsnLines('ASN,Entity\n51447, "RootLayer Web Services Ltd, NL"\nAS45090 # Tencent\njunk\n');
  t.same([...asns].sort(), [45090, 51447]);
});

t.test('a stale or empty list makes its signal unknown', async (t) => {
  const stale = createIpLists({ snapshots, maxAgeMs: { tor: 48 * 3600_000 } });
  const verdict = stale.check(parseClientIp('185.220.101.1'), undefined, NOW);
  t.equal(verdict.tor, undefined, 'the 2026-08-22 Tor list is older than 48 h on 2026-11-25');
  t.same(verdict.unavailable, ['tor']);
  t.same(stale.stale(NOW), ['tor']);
  const empty = createIpLists({ snapshots: [snapshotFromText('vpn', 'cidrs', [''], NOW, 'test')] });
  t.equal(empty.check(parseClientIp('23.144.160.67'), undefined, NOW).vpn, undefined);
});

t.test('a list can be replaced atomically', async (t) => {
  const own = createIpLists({ snapshots });
  own.replace(snapshotFromText('tor', 'ips', ['8.8.8.8'], NOW, 'test'));
  t.equal(own.check(parseClientIp('8.8.8.8'), undefined, NOW).tor, true);
  t.equal(own.check(parseClientIp('185.220.101.1'), undefined, NOW).tor, false);
});
