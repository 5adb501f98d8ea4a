import ipaddr from 'ipaddr.js';
import { bigintOf, uint32 } from './ip.js';
import { dottedQuad, ipv4Mapped, ipv6Bytes } from './ip-text.js';

/**
 * A sorted, merged table of address ranges with binary search: O(log n) per lookup, for IPv4
 * (Uint32 pairs) and IPv6 (bigint pairs). 50,000 CIDRs build in a few milliseconds.
 */
export interface RangeTable {
  readonly size: number;
  has(bytes: readonly number[]): boolean;
  /** The same lookup for an address already converted (ClientIp.key): no conversion per list. */
  hasKey(key: number | bigint): boolean;
}

function ipv4Range(start: number, prefix: number): [number, number] {
  const hostBits = 32 - prefix;
  const mask = hostBits === 32 ? 0 : (0xffffffff << hostBits) >>> 0;
  const first = (start & mask) >>> 0;
  return [first, (first + (hostBits === 32 ? 0xffffffff : 2 ** hostBits - 1)) >>> 0];
}

function merge<T extends number | bigint>(ranges: Array<[T, T]>, one: T): Array<[T, T]> {
  ranges.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const merged: Array<[T, T]> = [];
  for (const [start, end] of ranges) {
    const last = merged[merged.length - 1];
    if (last && ((start <= (last[1] as bigint) + (one as bigint)) as unknown as T)) {
      if (end > last[1]) last[1] = end;
    } else merged.push([start, end]);
  }
  return merged;
}

function search<T extends number | bigint>(starts: ArrayLike<T>, ends: ArrayLike<T>, value: T): boolean {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (starts[mid]! <= value) lo = mid + 1;
    else hi = mid - 1;
  }
  return hi >= 0 && ends[hi]! >= value;
}

export interface ParsedRanges {
  readonly table: RangeTable;
  /** Entries that parsed (before adjacent ranges were merged). */
  readonly accepted: number;
  /** Lines that were neither blank, a comment, an IP nor a CIDR. */
  readonly rejected: number;
}

/** Accepts CIDRs and bare addresses (IPv6 in any spelling, e.g. fully expanded), one per entry. */
export function buildRangeTable(entries: Iterable<string>): ParsedRanges {
  const v4: Array<[number, number]> = [];
  const v6: Array<[bigint, bigint]> = [];
  let rejected = 0;
  for (const raw of entries) {
    const entry = raw.split('#', 1)[0]!.trim();
    if (entry === '') continue;
    // Lists are mostly plain IPv4 CIDRs: those skip ipaddr's objects (startup spent 40% there).
    const slash = entry.indexOf('/');
    const quad = dottedQuad(slash === -1 ? entry : entry.slice(0, slash));
    const bits4 = slash === -1 ? 32 : /^\d{1,2}$/.test(entry.slice(slash + 1)) ? Number(entry.slice(slash + 1)) : -1;
    if (quad && bits4 >= 0 && bits4 <= 32) {
      v4.push(ipv4Range(uint32(quad), bits4));
      continue;
    }
    // IPv6 too (a fifth of the hosting list), but for IPv4-mapped entries, which ipaddr.js turns into IPv4 ranges below.
    const bytes6 =
      slash === -1 || /^\d{1,3}$/.test(entry.slice(slash + 1))
        ? ipv6Bytes(slash === -1 ? entry : entry.slice(0, slash))
        : undefined;
    const bits6 = slash === -1 ? 128 : Number(entry.slice(slash + 1));
    if (bytes6 && bits6 <= 128 && !ipv4Mapped(bytes6)) {
      const hostBits = BigInt(128 - bits6);
      const first = (bigintOf(bytes6) >> hostBits) << hostBits;
      v6.push([first, first + (1n << hostBits) - 1n]);
      continue;
    }
    try {
      const [address, bits] = entry.includes('/') ? ipaddr.parseCIDR(entry) : [ipaddr.parse(entry), -1];
      const normal =
        address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress()
          ? (address as ipaddr.IPv6).toIPv4Address()
          : address;
      const width = normal.kind() === 'ipv4' ? 32 : 128;
      const prefix = bits === -1 ? width : normal === address ? bits : bits - 96;
      if (prefix < 0 || prefix > width) throw new Error('bad prefix');
      const bytes = normal.toByteArray();
      if (width === 32) {
        v4.push(ipv4Range(uint32(bytes), prefix));
      } else {
        const hostBits = BigInt(128 - prefix);
        const first = (bigintOf(bytes) >> hostBits) << hostBits;
        v6.push([first, first + (1n << hostBits) - 1n]);
      }
    } catch {
      rejected += 1;
    }
  }
  const m4 = merge(v4, 1);
  const m6 = merge(v6, 1n);
  const starts4 = Uint32Array.from(m4, (r) => r[0]);
  const ends4 = Uint32Array.from(m4, (r) => r[1]);
  const starts6 = m6.map((r) => r[0]);
  const ends6 = m6.map((r) => r[1]);
  const table: RangeTable = {
    size: m4.length + m6.length,
    has(bytes) {
      return bytes.length === 4 ? search(starts4, ends4, uint32(bytes)) : search(starts6, ends6, bigintOf(bytes));
    },
    hasKey(key) {
      return typeof key === 'number' ? search(starts4, ends4, key) : search(starts6, ends6, key);
    },
  };
  return { table, accepted: v4.length + v6.length, rejected };
}
