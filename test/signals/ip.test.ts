import t from 'tap';
import ipaddr from 'ipaddr.js';
import { isValidClientIp, parseClientIp } from '../../src/signals/ip.js';
import { buildRangeTable } from '../../src/signals/ip-ranges.js';

t.test('client IP syntax is strict', async (t) => {
  for (const good of ['1.2.3.4', '::1', '2001:db8::1', '::ffff:1.2.3.4', '2001:0bf0:0666:0000:0000:0000:0000:0666'])
    t.ok(isValidClientIp(good), good);
  for (const bad of ['01.02.03.04', '300.1.1.1', 'fe80::1%eth0', '1.2.3', '', 'localhost', '1.2.3.4/24', ' 1.2.3.4'])
    t.notOk(isValidClientIp(bad), JSON.stringify(bad));
});

t.test('IPs are normalised: IPv4-mapped to IPv4, IPv6 compressed; IPv6 trust is per /64', async (t) => {
  t.match(parseClientIp('::ffff:89.160.20.112'), {
    address: '89.160.20.112',
    version: 4,
    prefix: '89.160.20.112',
    travelNet: '89.160.20.0/24',
  });
  const v6 = parseClientIp('2001:0bf0:0666:0000:0000:0000:0000:0666');
  t.equal(v6.address, '2001:bf0:666::666');
  t.equal(v6.prefix, '2001:bf0:666::/64');
  t.equal(parseClientIp('2001:bf0:666:0:ffff::1').prefix, v6.prefix, 'same /64, same network');
});

t.test('private, loopback, link-local, CGNAT and ULA addresses are flagged private', async (t) => {
  for (const ip of [
    '10.1.2.3',
    '192.168.1.1',
    '172.16.0.1',
    '127.0.0.1',
    '169.254.1.1',
    '100.64.0.1',
    '::1',
    'fe80::1',
    'fd00::1',
  ])
    t.equal(parseClientIp(ip).private, true, ip);
  for (const ip of ['89.160.20.112', '8.8.8.8', '2001:4860::1']) t.equal(parseClientIp(ip).private, false, ip);
});

t.test('range tables merge overlaps and answer IPv4 and IPv6 by binary search', async (t) => {
  const { table, rejected } = buildRangeTable([
    '10.0.0.0/8',
    '10.1.0.0/16',
    '192.0.2.7',
    '2001:db8::/32',
    '2001:0db8:0000:0000:0000:0000:0000:0001',
    'garbage',
    '# comment',
    '',
    '1.2.3.4/24',
  ]);
  t.equal(rejected, 1);
  const has = (ip: string) => table.has(parseClientIp(ip).bytes);
  t.ok(has('10.255.255.255'));
  t.notOk(has('11.0.0.0'));
  t.ok(has('192.0.2.7'));
  t.notOk(has('192.0.2.8'));
  t.ok(has('2001:db8:ffff::1'));
  t.notOk(has('2001:db9::1'));
  t.ok(has('1.2.3.200'), 'host bits in a CIDR are masked');
  t.ok(has('0:0:0:0:0:ffff:0a00:0001'), 'IPv4-mapped input finds the IPv4 range');
});

t.test('the IPv4 fast path answers exactly what ipaddr.js answers', async (t) => {
  const reference = (text: string) => {
    const parsed = ipaddr.process(text);
    const bytes = parsed.toByteArray();
    return {
      address: parsed.toString(),
      private: parsed.range() !== 'unicast',
      bytes,
      travelNet: `${bytes.slice(0, 3).join('.')}.0/24`,
    };
  };
  // Every special range's edges, plus random addresses (seeded, so a failure can be replayed).
  const edges: string[] = [];
  for (const [a, b, c, d] of [
    [0, 0, 0, 0],
    [0, 255, 255, 255],
    [1, 0, 0, 0],
    [9, 255, 255, 255],
    [10, 0, 0, 0],
    [10, 255, 255, 255],
    [11, 0, 0, 0],
    [100, 63, 255, 255],
    [100, 64, 0, 0],
    [100, 127, 255, 255],
    [100, 128, 0, 0],
    [126, 255, 255, 255],
    [127, 0, 0, 1],
    [169, 253, 255, 255],
    [169, 254, 0, 1],
    [172, 15, 255, 255],
    [172, 16, 0, 0],
    [172, 31, 255, 255],
    [172, 32, 0, 0],
    [192, 0, 0, 1],
    [192, 0, 2, 1],
    [192, 88, 99, 1],
    [192, 168, 1, 1],
    [198, 17, 255, 255],
    [198, 18, 0, 0],
    [198, 19, 255, 255],
    [198, 20, 0, 0],
    [203, 0, 113, 9],
    [223, 255, 255, 255],
    [224, 0, 0, 0],
    [239, 255, 255, 255],
    [240, 0, 0, 0],
    [255, 255, 255, 254],
    [255, 255, 255, 255],
  ])
    edges.push(`${a}.${b}.${c}.${d}`);
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
  const random = Array.from(
    { length: 20_000 },
    () => `${next() % 256}.${next() % 256}.${next() % 256}.${next() % 256}`,
  );
  let mismatches = 0;
  for (const text of [...edges, ...random]) {
    const ours = parseClientIp(text);
    const expected = reference(text);
    if (
      ours.address !== expected.address ||
      ours.private !== expected.private ||
      ours.travelNet !== expected.travelNet ||
      ours.bytes.join('.') !== expected.bytes.join('.') ||
      ours.key !==
        ((expected.bytes[0]! << 24) | (expected.bytes[1]! << 16) | (expected.bytes[2]! << 8) | expected.bytes[3]!) >>> 0
    ) {
      mismatches += 1;
      if (mismatches < 5) t.fail(`${text}: ${JSON.stringify(ours)} vs ${JSON.stringify(expected)}`);
    }
  }
  t.equal(mismatches, 0, `${edges.length + random.length} addresses agree`);
  t.equal(
    parseClientIp('::ffff:10.1.2.3').address,
    '10.1.2.3',
    'IPv4-mapped IPv6 takes the general path to the same answer',
  );
  t.equal(parseClientIp('::ffff:10.1.2.3').private, true);
  t.equal(parseClientIp('2001:218::1').key, 0x20010218000000000000000000000001n, 'IPv6 keys are bigints');
});

t.test(
  'range tables built on the IPv4 fast path answer as ipaddr.js parsing would (shipped hosting and relay lists)',
  async (t) => {
    const { readFileSync } = await import('node:fs');
    for (const file of [
      'data/vpn-datacenter/x4bnet-datacenter-ipv4.txt',
      'data/vpn-datacenter/vpn-provider-inputs/apple.txt',
    ]) {
      const entries = readFileSync(file, 'utf8').split('\n');
      const { table } = buildRangeTable(entries);
      // The reference: every IPv4 entry through ipaddr.js, as the general path parses it.
      const reference: Array<[number, number]> = [];
      for (const raw of entries) {
        const entry = raw.split('#', 1)[0]!.trim();
        if (!entry || entry.includes(':')) continue;
        const [address, bits] = entry.includes('/') ? ipaddr.parseCIDR(entry) : [ipaddr.parse(entry), 32];
        const first =
          ((address as ipaddr.IPv4).toByteArray().reduce((n, b) => n * 256 + b, 0) >>> 0) &
          (bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0);
        reference.push([first >>> 0, (first >>> 0) + 2 ** (32 - bits) - 1]);
      }
      const inReference = (value: number) => reference.some(([a, b]) => value >= a && value <= b);
      let seed = 99;
      const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
      const probes: number[] = [];
      for (const [a, b] of reference.slice(0, 2000)) probes.push(a, b, (a - 1) >>> 0, (b + 1) >>> 0);
      for (let i = 0; i < 2000; i++) probes.push(((next() << 1) ^ next()) >>> 0);
      let mismatches = 0;
      for (const value of probes) {
        const bytes = [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255];
        if (table.has(bytes) !== inReference(value)) mismatches += 1;
      }
      t.equal(mismatches, 0, `${file}: ${probes.length} probes agree (${reference.length} IPv4 entries)`);
    }
  },
);
