import { isIP } from 'node:net';
import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import t from 'tap';
import { bigintOf, embeddedIpv4, parseClientIp, type ClientIp } from '../../src/signals/ip.js';
import { buildRangeTable } from '../../src/signals/ip-ranges.js';
import { ipv6Bytes, ipv6Text } from '../../src/signals/ip-text.js';

// The decide path and the address lists parse IPv6 without ipaddr.js's objects; ipaddr.js stays the
// oracle. Every pseudonym of an IPv6 network is an HMAC of the /64's text, so that text must not
// change by one character.

/** parseClientIp as it was, all through ipaddr.js: the reference the fast path must equal. */
function reference(text: string): ClientIp {
  const ipv4 = (octets: number[], address: string, embeddedIn?: string): ClientIp => {
    const parsed = ipaddr.IPv4.parse(octets.join('.'));
    const ip = {
      address,
      version: 4 as const,
      prefix: address,
      travelNet: `${octets[0]}.${octets[1]}.${octets[2]}.0/24`,
      private: parsed.range() !== 'unicast',
      bytes: octets,
      key: ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0,
    };
    return (embeddedIn ? { ...ip, embeddedIn } : ip) as ClientIp;
  };
  const parsed = ipaddr.process(text);
  const bytes = parsed.toByteArray();
  if (parsed.kind() === 'ipv4') return ipv4(bytes, parsed.toString());
  const embedded = embeddedIpv4(bytes);
  if (embedded) return ipv4(embedded.octets, embedded.octets.join('.'), embedded.form);
  const net64 = `${ipaddr.fromByteArray([...bytes.slice(0, 8), 0, 0, 0, 0, 0, 0, 0, 0]).toString()}/64`;
  return {
    address: parsed.toString(),
    version: 6,
    prefix: net64,
    travelNet: net64,
    private: parsed.range() !== 'unicast',
    bytes,
    key: bigintOf(bytes),
  };
}

/** Prefixes that steer addresses into every special range and embedding, and plain unicast. */
const PREFIXES: number[][] = [
  [],
  [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
  [0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0],
  [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0],
  [0, 0x64, 0xff, 0x9b, 0, 1],
  [0x20, 0x02],
  [0x20, 0x01, 0, 0],
  [0x20, 0x01, 0, 2, 0, 0],
  [0x20, 0x01, 0, 3],
  [0x20, 0x01, 0, 4, 1, 0x12],
  [0x20, 0x01, 0, 0x10],
  [0x20, 0x01, 0, 0x20],
  [0x20, 0x01, 0x0d, 0xb8],
  [0x26, 0x20, 0, 0x4f, 0x80, 0],
  [0xfe, 0x80],
  [0xfe, 0xc0],
  [0xfc],
  [0xfd],
  [0xff],
  [1, 0, 0, 0, 0, 0, 0, 0],
];

/** Sixteen bytes under one of those prefixes, with zero runs of every length and position. */
const addressBytes = fc
  .tuple(
    fc.constantFrom(...PREFIXES),
    fc.array(fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 255 })), {
      minLength: 16,
      maxLength: 16,
    }),
    fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
  )
  .map(([prefix, rest, zeroGroups]) => {
    const bytes = [...prefix, ...rest.slice(prefix.length)];
    // Whole zero groups, so runs of every length and position come up.
    for (let g = 0; g < 8; g++) if (zeroGroups[g] && 2 * g >= prefix.length) bytes[2 * g] = bytes[2 * g + 1] = 0;
    return bytes;
  });

/** The spellings a caller may send for one address: compressed, expanded, upper case, leading zeros, a dotted tail. */
const spellings = (bytes: number[]): string[] => {
  const groups = Array.from({ length: 8 }, (_, g) => (bytes[2 * g]! << 8) | bytes[2 * g + 1]!);
  const canonical = ipaddr.fromByteArray(bytes).toString();
  const full = groups.map((g) => g.toString(16).padStart(4, '0')).join(':');
  const dotted = `${groups
    .slice(0, 6)
    .map((g) => g.toString(16))
    .join(':')}:${bytes.slice(12).join('.')}`;
  return [canonical, canonical.toUpperCase(), full, groups.map((g) => g.toString(16)).join(':'), dotted];
};

t.test('IPv6 text to bytes and back: equal to ipaddr.js for every spelling', async (t) => {
  let checked = 0;
  fc.assert(
    fc.property(addressBytes, (bytes) => {
      for (const text of spellings(bytes)) {
        const fast = ipv6Bytes(text);
        if (!fast || fast.join() !== ipaddr.parse(text).toByteArray().join()) return false;
        checked += 1;
      }
      return ipv6Text(bytes) === ipaddr.fromByteArray(bytes).toString();
    }),
    { numRuns: 5000 },
  );
  t.ok(checked >= 25_000, `${checked} spellings parsed as ipaddr.js parses them, and written as it writes them`);
});

t.test('a client IPv6 address: every field equal to the ipaddr.js reference', async (t) => {
  let checked = 0;
  fc.assert(
    fc.property(addressBytes, (bytes) => {
      for (const text of spellings(bytes)) {
        if (isIP(text) !== 6) return false;
        const fast = parseClientIp(text);
        const slow = reference(text);
        if (
          JSON.stringify(fast, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v)) !==
          JSON.stringify(slow, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))
        )
          throw new Error(
            `${text}: ${JSON.stringify({ fast, slow }, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}`,
          );
        checked += 1;
      }
      return true;
    }),
    { numRuns: 5000 },
  );
  t.ok(checked >= 25_000, `${checked} addresses`);
  // A few by name: the /64 text is what network pseudonyms are made of.
  t.same(parseClientIp('2001:DB8:0:0:1:0:0:1'), reference('2001:db8::1:0:0:1'));
  t.equal(parseClientIp('2001:db8:0:0:1:0:0:1').address, '2001:db8::1:0:0:1', 'the first of equal runs');
  t.equal(parseClientIp('2001:db8:1:2:3::').prefix, '2001:db8:1:2::/64', 'the /64 pseudonyms are made of');
  // ipaddr.js reads `::` + a dotted quad as IPv4-mapped, not as the IPv4-compatible address it spells.
  for (const text of [
    '::1.2.3.4',
    '::0.1.2.3',
    '::0.0.1.0',
    '::0.255.255.255',
    '::0.0.0.1',
    '::0.0.0.0',
    '::FFFF:1.2.3.4',
  ])
    t.same(parseClientIp(text), reference(text), `${text}: as ipaddr.js reads it`);
});

t.test('what the fast parser accepts, ipaddr.js accepts as the same address; junk is left to it', async (t) => {
  const alphabet = fc.constantFrom(...'0123456789abcdefABCDEF:.:::.%g'.split(''));
  let accepted = 0;
  fc.assert(
    fc.property(fc.array(alphabet, { minLength: 0, maxLength: 45 }), (chars) => {
      const text = chars.join('');
      const fast = ipv6Bytes(text);
      if (!fast) return true;
      accepted += 1;
      return ipaddr.IPv6.isValid(text) && ipaddr.IPv6.parse(text).toByteArray().join() === fast.join();
    }),
    { numRuns: 50_000 },
  );
  for (const junk of [
    '',
    ':',
    ':::',
    '1:::2',
    '1:2',
    '1:2:3:4:5:6:7:8:',
    ':1:2:3:4:5:6:7:8',
    '1:2:3:4:5:6:7:8:9',
    '1::2::3',
    '12345::',
    'g::1',
    '::1.2.3',
    '::1.2.3.256',
    '::01.2.3.4',
    'fe80::1%eth0',
    '1::2:1.2.3.4:5',
  ])
    t.equal(ipv6Bytes(junk), undefined, `refused: ${JSON.stringify(junk)}`);
  t.ok(accepted > 0, `${accepted} random strings accepted, each as ipaddr.js reads it`);
});

t.test('list entries spelled `::` + a dotted quad stay the IPv4 ranges ipaddr.js makes of them', async (t) => {
  const { table } = buildRangeTable(['::1.2.3.0/120', '::9.9.9.9']);
  for (const [address, inside] of [
    ['1.2.3.4', true],
    ['1.2.3.255', true],
    ['1.2.4.0', false],
    ['9.9.9.9', true],
  ] as const)
    t.equal(table.has(ipaddr.parse(address).toByteArray()), inside, `${address} ${inside ? 'inside' : 'outside'}`);
});

t.test('IPv6 ranges of the address lists: membership equal to ipaddr.js', async (t) => {
  let compared = 0;
  fc.assert(
    fc.property(addressBytes, fc.integer({ min: 0, max: 128 }), addressBytes, (base, bits, probe) => {
      const cidr = `${ipaddr.fromByteArray(base).toString()}/${bits}`;
      const [range, prefix] = ipaddr.parseCIDR(cidr);
      // IPv4-mapped ranges take the IPv4 path (ipaddr.js's), unchanged: not what this compares.
      if ((range as ipaddr.IPv6).isIPv4MappedAddress()) return true;
      const { table, rejected } = buildRangeTable([cidr]);
      if (rejected !== 0) return false;
      for (const bytes of [base, probe]) {
        const address = ipaddr.fromByteArray(bytes);
        if (table.has(bytes) !== (address as ipaddr.IPv6).match(range as ipaddr.IPv6, prefix)) return false;
        compared += 1;
      }
      return true;
    }),
    { numRuns: 3000 },
  );
  t.ok(compared > 3000, `${compared} range and address pairs agreed`);
});
