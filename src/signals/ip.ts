import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Pseudonymiser } from '../store/pseudonymise.js';
import { dottedQuad, ipv4Mapped, ipv6Bytes, ipv6Text } from './ip-text.js';

export interface ClientIp {
  /** Canonical text: dotted quad, or compressed lowercase IPv6 (RFC 5952 style). */
  readonly address: string;
  readonly version: 4 | 6;
  /** The unit of network trust: the IPv6 /64 (privacy addresses rotate inside it), else the address. */
  readonly prefix: string;
  /** The unit below which GeoIP movement is not travel: IPv4 /24 or IPv6 /64. */
  readonly travelNet: string;
  readonly private: boolean;
  readonly bytes: readonly number[];
  /** The address as one number (IPv4, unsigned 32-bit) or bigint (IPv6): what range tables search. */
  readonly key: number | bigint;
  /** The IPv6 form the IPv4 client arrived in, when it came embedded in one. */
  readonly embeddedIn?: Ipv4Embedding;
}

/**
 * IPv6 forms that carry the client's IPv4 address. The IPv4 is the real client (the IPv6 address
 * is the translator's or tunnel's doing), so lists, GeoIP, privacy, velocity and trust all use it.
 * The local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) is left out on purpose: its operator picks
 * the prefix length, so where the IPv4 sits inside it cannot be known from the address.
 */
export type Ipv4Embedding = 'nat64' | '6to4' | 'teredo' | 'ipv4-compatible';

/** The embedded IPv4 of a 16-byte address, or undefined when it is a plain IPv6 address. */
export function embeddedIpv4(bytes: readonly number[]): { octets: number[]; form: Ipv4Embedding } | undefined {
  const zeroes = (from: number, to: number) => {
    for (let i = from; i < to; i++) if (bytes[i] !== 0) return false;
    return true;
  };
  // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052): the last 32 bits.
  if (bytes[0] === 0x00 && bytes[1] === 0x64 && bytes[2] === 0xff && bytes[3] === 0x9b && zeroes(4, 12))
    return { octets: bytes.slice(12, 16), form: 'nat64' };
  // 6to4 2002::/16 (RFC 3056): bits 16-47 are the site's public IPv4.
  if (bytes[0] === 0x20 && bytes[1] === 0x02) return { octets: bytes.slice(2, 6), form: '6to4' };
  // Teredo 2001:0000::/32 (RFC 4380): the client's public IPv4 is the last 32 bits, inverted.
  if (bytes[0] === 0x20 && bytes[1] === 0x01 && bytes[2] === 0x00 && bytes[3] === 0x00)
    return { octets: bytes.slice(12, 16).map((b) => b ^ 0xff), form: 'teredo' };
  // Deprecated IPv4-compatible ::a.b.c.d (RFC 4291); :: and ::1 (and all of ::/104) stay IPv6.
  if (zeroes(0, 12) && bytes[12] !== 0) return { octets: bytes.slice(12, 16), form: 'ipv4-compatible' };
  return undefined;
}

/** Strict syntax first (node:net rejects `01.02.03.04` and `300.1.1.1`); zone ids are meaningless for a client. */
export function isValidClientIp(text: string): boolean {
  return text.length <= 45 && !text.includes('%') && isIP(text) !== 0;
}

function prefixOf(bytes: readonly number[], keepBytes: number): string {
  const kept = [...bytes.slice(0, keepBytes), ...new Array<number>(bytes.length - keepBytes).fill(0)];
  return ipaddr.fromByteArray(kept).toString();
}

type SpecialRange = [ipaddr.IPv4 | ipaddr.IPv6, number];

/**
 * The ranges ipaddr.js does not call unicast, taken from its own table (so `private` means the same
 * on every path), as sorted [first, last] pairs of the addresses as numbers.
 */
function notUnicast<K extends number | bigint>(
  prototype: object,
  range: (bytes: number[], bits: number) => [K, K],
): ReadonlyArray<readonly [K, K]> {
  const special = (prototype as { SpecialRanges: Record<string, SpecialRange[] | SpecialRange> }).SpecialRanges;
  const ranges: Array<[K, K]> = [];
  for (const entry of Object.values(special)) {
    const list = Array.isArray(entry[0]) ? (entry as SpecialRange[]) : [entry as SpecialRange];
    for (const [address, bits] of list) ranges.push(range(address.toByteArray(), bits));
  }
  return ranges.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** IPv4's, as unsigned 32-bit values. */
const IPV4_NOT_UNICAST = notUnicast(ipaddr.IPv4.prototype, (bytes, bits) => {
  const first = uint32(bytes);
  return [first, first + 2 ** (32 - bits) - 1];
});

/** IPv6's, as 128-bit values. */
const IPV6_NOT_UNICAST = notUnicast(ipaddr.IPv6.prototype, (bytes, bits) => {
  const first = bigintOf(bytes);
  return [first, first + (1n << BigInt(128 - bits)) - 1n];
});

/** Those ranges by the first byte they cover: an address is compared with the few that can hold it. */
const IPV6_NOT_UNICAST_BY_FIRST_BYTE: ReadonlyArray<ReadonlyArray<readonly [bigint, bigint]>> = (() => {
  const table = Array.from({ length: 256 }, () => [] as Array<readonly [bigint, bigint]>);
  for (const range of IPV6_NOT_UNICAST)
    for (let byte = Number(range[0] >> 120n); byte <= Number(range[1] >> 120n); byte++) table[byte]!.push(range);
  return table;
})();

/** Four octets as one unsigned 32-bit number. */
export function uint32(octets: readonly number[]): number {
  return ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
}

/** Sixteen bytes as one bigint (four 32-bit words: a BigInt operation a word, not a byte). */
export function bigintOf(bytes: readonly number[]): bigint {
  let value = 0n;
  let i = 0;
  for (; i + 4 <= bytes.length; i += 4)
    value =
      (value << 32n) | BigInt(((bytes[i]! << 24) | (bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) | bytes[i + 3]!) >>> 0);
  for (; i < bytes.length; i++) value = (value << 8n) | BigInt(bytes[i]!);
  return value;
}

function ipv4(octets: number[], address: string, embeddedIn?: Ipv4Embedding): ClientIp {
  const key = uint32(octets);
  let isPrivate = false;
  for (const [first, last] of IPV4_NOT_UNICAST) if (key >= first && key <= last) isPrivate = true;
  const ip = {
    address,
    version: 4 as const,
    prefix: address,
    travelNet: `${octets[0]}.${octets[1]}.${octets[2]}.0/24`,
    private: isPrivate,
    bytes: octets,
    key,
  };
  return embeddedIn ? { ...ip, embeddedIn } : ip;
}

function ipv6(bytes: number[]): ClientIp {
  // IPv4-mapped (::ffff:a.b.c.d) is the IPv4 client itself, as ipaddr.process has it.
  if (ipv4Mapped(bytes)) {
    const octets = bytes.slice(12, 16);
    return ipv4(octets, octets.join('.'));
  }
  const embedded = embeddedIpv4(bytes);
  if (embedded) return ipv4(embedded.octets, embedded.octets.join('.'), embedded.form);
  const key = bigintOf(bytes);
  let isPrivate = false;
  for (const [first, last] of IPV6_NOT_UNICAST_BY_FIRST_BYTE[bytes[0]!]!)
    if (key >= first && key <= last) isPrivate = true;
  const net64 = `${ipv6Text([...bytes.slice(0, 8), 0, 0, 0, 0, 0, 0, 0, 0])}/64`;
  return { address: ipv6Text(bytes), version: 6, prefix: net64, travelNet: net64, private: isPrivate, bytes, key };
}

/**
 * Parses an already validated IP; IPv4-mapped IPv6 (`::ffff:1.2.3.4`) and the forms that embed an
 * IPv4 client (NAT64, 6to4, Teredo, IPv4-compatible) become that IPv4.
 */
export function parseClientIp(text: string): ClientIp {
  // Most sign-ins arrive over IPv4 in canonical dotted form: no parser object, no string rebuild.
  const quad = dottedQuad(text);
  if (quad) return ipv4(quad, text);
  const bytes6 = ipv6Bytes(text);
  if (bytes6) return ipv6(bytes6);
  // What the fast paths leave (other IPv4 spellings a caller might pass, zone ids): ipaddr.js.
  const parsed = ipaddr.process(text);
  const bytes = parsed.toByteArray();
  const address = parsed.toString();
  if (parsed.kind() === 'ipv4') return ipv4(bytes, address);
  const embedded = embeddedIpv4(bytes);
  if (embedded) return ipv4(embedded.octets, embedded.octets.join('.'), embedded.form);
  const net64 = `${prefixOf(bytes, 8)}/64`;
  return {
    address,
    version: 6,
    prefix: net64,
    travelNet: net64,
    private: parsed.range() !== 'unicast',
    bytes,
    key: bigintOf(bytes),
  };
}

/**
 * Whether an address reported by someone else (Didit's IP analysis) lies in the network a grant's
 * `prefix` names, under the current ID_HASH_KEY or, during a rotation, the previous one; false for
 * text that is not an IP.
 */
export function onTrustNetwork(ids: Pick<Pseudonymiser, 'matches'>): (text: string, prefix: string) => boolean {
  return (text, prefix) => {
    // A zone id names an interface of the reporting machine, not a network.
    if (isIP(text) === 0 || text.includes('%')) return false;
    const ip = parseClientIp(text);
    // A /64 that many unrelated clients share (SIIT and other forms left in ::/64, local-use NAT64)
    // says nothing about who took the selfie.
    if (ip.version === 6 && SHARED_V6_PREFIX.test(ip.prefix)) return false;
    return ids.matches('net', ip.prefix, prefix);
  };
}

/** IPv6 /64s behind which unrelated clients sit: the all-zero /64 and the local-use NAT64 prefix 64:ff9b:1::/48. */
const SHARED_V6_PREFIX = /^(::|64:ff9b:1:[0-9a-f:]*)\/64$/;

/** The pseudonymised unit of network trust (see `ClientIp.prefix`): one definition for decide and the webhook. */
export function trustNetworkId(ids: Pick<Pseudonymiser, 'id'>, ip: ClientIp): string {
  return ids.id('net', ip.prefix);
}
