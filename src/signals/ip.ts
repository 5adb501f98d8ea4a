import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

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
}

/** Strict syntax first (node:net rejects `01.02.03.04` and `300.1.1.1`); zone ids are meaningless for a client. */
export function isValidClientIp(text: string): boolean {
  return text.length <= 45 && !text.includes('%') && isIP(text) !== 0;
}

function prefixOf(bytes: readonly number[], keepBytes: number): string {
  const kept = [...bytes.slice(0, keepBytes), ...new Array<number>(bytes.length - keepBytes).fill(0)];
  return ipaddr.fromByteArray(kept).toString();
}

/**
 * IPv4 ranges that ipaddr.js does not call unicast, taken from its own table (so `private` means the
 * same on both paths), as sorted [first, last] pairs of unsigned 32-bit values.
 */
const IPV4_NOT_UNICAST: ReadonlyArray<readonly [number, number]> = (() => {
  const special = (ipaddr.IPv4.prototype as unknown as { SpecialRanges: Record<string, Array<[ipaddr.IPv4, number]> | [ipaddr.IPv4, number]> }).SpecialRanges;
  const ranges: Array<[number, number]> = [];
  for (const entry of Object.values(special)) {
    const list = Array.isArray(entry[0]) ? (entry as Array<[ipaddr.IPv4, number]>) : [entry as [ipaddr.IPv4, number]];
    for (const [address, bits] of list) {
      const first = uint32(address.octets);
      ranges.push([first, first + 2 ** (32 - bits) - 1]);
    }
  }
  return ranges.sort((a, b) => a[0] - b[0]);
})();

/** Four octets as one unsigned 32-bit number. */
export function uint32(octets: readonly number[]): number {
  return ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
}

/** Sixteen bytes as one bigint. */
export function bigintOf(bytes: readonly number[]): bigint {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return value;
}

/** `a.b.c.d` with no leading zeros and every part ≤ 255, else undefined (the general path decides). */
export function dottedQuad(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const octets: number[] = [];
  for (const part of parts) {
    if (part.length === 0 || part.length > 3 || (part.length > 1 && part.charCodeAt(0) === 48)) return undefined;
    let value = 0;
    for (let i = 0; i < part.length; i++) {
      const digit = part.charCodeAt(i) - 48;
      if (digit < 0 || digit > 9) return undefined;
      value = value * 10 + digit;
    }
    if (value > 255) return undefined;
    octets.push(value);
  }
  return octets;
}

function ipv4(octets: number[], address: string): ClientIp {
  const key = uint32(octets);
  let isPrivate = false;
  for (const [first, last] of IPV4_NOT_UNICAST) if (key >= first && key <= last) isPrivate = true;
  return { address, version: 4, prefix: address, travelNet: `${octets[0]}.${octets[1]}.${octets[2]}.0/24`, private: isPrivate, bytes: octets, key };
}

/** Parses an already validated IP; IPv4-mapped IPv6 (`::ffff:1.2.3.4`) becomes IPv4. */
export function parseClientIp(text: string): ClientIp {
  // Most sign-ins arrive over IPv4 in canonical dotted form: no parser object, no string rebuild.
  const quad = dottedQuad(text);
  if (quad) return ipv4(quad, text);
  const parsed = ipaddr.process(text);
  const bytes = parsed.toByteArray();
  const address = parsed.toString();
  if (parsed.kind() === 'ipv4') return ipv4(bytes, address);
  const net64 = `${prefixOf(bytes, 8)}/64`;
  return { address, version: 6, prefix: net64, travelNet: net64, private: parsed.range() !== 'unicast', bytes, key: bigintOf(bytes) };
}
