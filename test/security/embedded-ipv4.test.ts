import t from 'tap';
import { embeddedIpv4, isValidClientIp, parseClientIp } from '../../src/signals/ip.js';
import { CHROME_WINDOWS, startTestService, testClock } from '../helpers/service.js';
import { trustDirectly } from '../helpers/trust.js';

const hex = (octets: readonly number[]) =>
  `${((octets[0]! << 8) | octets[1]!).toString(16)}:${((octets[2]! << 8) | octets[3]!).toString(16)}`;
const octetsOf = (v4: string) => v4.split('.').map(Number);

/** Every IPv6 spelling of an IPv4 client that the service must see through. */
function spellings(v4: string): Array<{ form: string; ip: string }> {
  const o = octetsOf(v4);
  const inverted = o.map((b) => b ^ 0xff);
  return [
    { form: 'nat64', ip: `64:ff9b::${v4}` },
    { form: 'nat64', ip: `64:ff9b::${hex(o)}` },
    { form: 'nat64', ip: `0064:FF9B:0000:0000:0000:0000:${hex(o).toUpperCase()}` },
    { form: '6to4', ip: `2002:${hex(o)}::1` },
    { form: '6to4', ip: `2002:${hex(o)}:abcd:1234:5678:9abc:def0` },
    // Teredo: server IPv4 in bits 32-63 (here 65.54.227.120), flags, obfuscated port, inverted client IPv4.
    { form: 'teredo', ip: `2001:0:4136:e378:8000:63bf:${hex(inverted)}` },
    { form: 'teredo', ip: `2001:0000:4136:e378:0000:f227:${hex(inverted)}` },
    { form: 'ipv4-compatible', ip: `::${hex(o)}` },
  ];
}

const TOR_EXIT = '185.220.101.1';
const GEO = { ip: '89.160.20.112', country: 'SE', asn: 29518 };

t.test('parsing: each form becomes the IPv4 it carries; lookalikes stay IPv6', async (t) => {
  for (const v4 of [TOR_EXIT, GEO.ip, '10.1.2.3', '192.0.2.45']) {
    for (const { form, ip } of spellings(v4)) {
      t.ok(isValidClientIp(ip), `${ip} is accepted by the decide schema`);
      const parsed = parseClientIp(ip);
      t.match(parsed, { address: v4, version: 4, prefix: v4, embeddedIn: form, bytes: octetsOf(v4) }, `${form} ${ip}`);
      t.same(parsed.private, parseClientIp(v4).private, `${ip}: private as its IPv4`);
      t.equal(parsed.travelNet, parseClientIp(v4).travelNet);
      t.equal(parsed.key, parseClientIp(v4).key);
    }
  }
  // RFC 4380's own example: client 192.0.2.45 behind server 65.54.227.120.
  t.equal(parseClientIp('2001:0000:4136:e378:8000:63bf:3fff:fdd2').address, '192.0.2.45');
  // ipaddr.js already reads the dotted IPv4-compatible spelling as IPv4 (unlabelled).
  t.match(parseClientIp(`::${TOR_EXIT}`), { address: TOR_EXIT, version: 4 });
  t.equal(parseClientIp('64:ff9b::10.0.0.1').private, true, 'a private IPv4 behind NAT64 is private');
  t.equal(parseClientIp('2002:c0a8:0101::1').private, true, '6to4 of 192.168.1.1 is private');
  for (const ip of [
    '::1',
    '::',
    '64:ff9b:1::b9dc:6501',
    '64:ff9b:0:0:1::b9dc:6501',
    '2001:db8::b9dc:6501',
    '2001:1::1',
    '2003::1',
    '2001:bf0:666::666',
    '::ffff:0:b9dc:6501',
    '::1:1',
  ]) {
    const parsed = parseClientIp(ip);
    t.equal(parsed.version, 6, `${ip} stays IPv6`);
    t.equal(parsed.embeddedIn, undefined);
  }
  t.equal(embeddedIpv4(parseClientIp('2001:db8::1').bytes), undefined);
});

t.test(
  'decide: each form is looked up as its IPv4 in the Tor list and GeoIP, and shares its velocity and trust',
  async (t) => {
    const clock = testClock();
    const service = await startTestService({}, { clock });
    t.teardown(() => service.close());
    const decide = async (userId: string, ip: string) => {
      const response = await service.app.inject({
        method: 'POST',
        url: '/v1/decide',
        headers: { 'content-type': 'application/json', ...service.auth },
        payload: JSON.stringify({ user_id: userId, device_id: 'laptop', ip, user_agent: CHROME_WINDOWS }),
      });
      t.equal(response.statusCode, 200, ip);
      return response.json() as { action: string; signals: Record<string, unknown> };
    };

    const torPlain = await decide('tor-plain', TOR_EXIT);
    t.equal(torPlain.signals['ip.tor'], true, 'the plain Tor exit is flagged');
    const geoPlain = await decide('geo-plain', GEO.ip);
    await trustDirectly(
      service,
      { user: 'trusted', device: 'laptop', ip: GEO.ip, country: GEO.country, asn: GEO.asn },
      clock(),
    );

    for (const { form, ip } of spellings(TOR_EXIT)) {
      const reply = await decide(`tor-${form}`, ip);
      t.equal(reply.signals['ip.tor'], true, `${form} ${ip}: Tor exit`);
      t.equal(reply.signals['ip.version'], 4);
      t.equal(reply.signals['geo.country'], torPlain.signals['geo.country']);
      t.not(reply.action, 'SKIP');
    }
    let lastVelocity = Number(geoPlain.signals['velocity.ip_decides_1m']);
    for (const { form, ip } of spellings(GEO.ip)) {
      const reply = await decide(`geo-${form}`, ip);
      t.equal(reply.signals['geo.country'], GEO.country, `${form} ${ip}: GeoIP country`);
      t.equal(reply.signals['ip.asn'], GEO.asn, `${form} ${ip}: ASN`);
      t.equal(reply.signals['ip.private'], false);
      const velocity = Number(reply.signals['velocity.ip_decides_1m']);
      t.equal(velocity, lastVelocity + 1, `${form}: counted with the same address`);
      lastVelocity = velocity;
      const trusted = await decide('trusted', ip);
      lastVelocity += 1;
      t.equal(trusted.signals['ip.known'], true, `${form}: trust granted on the IPv4 covers its ${form} form`);
      t.equal(trusted.action, 'SKIP');
    }
    const privateNat64 = await decide('private', '64:ff9b::10.0.0.1');
    t.equal(privateNat64.signals['ip.private'], true);
    t.equal(privateNat64.signals['geo.country'], '');
  },
);
