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
}

/** Strict syntax first (node:net rejects `01.02.03.04` and `300.1.1.1`); zone ids are meaningless for a client. */
export function isValidClientIp(text: string): boolean {
  return text.length <= 45 && !text.includes('%') && isIP(text) !== 0;
}

function prefixOf(bytes: readonly number[], keepBytes: number): string {
  const kept = [...bytes.slice(0, keepBytes), ...new Array<number>(bytes.length - keepBytes).fill(0)];
  return ipaddr.fromByteArray(kept).toString();
}

/** Parses an already validated IP; IPv4-mapped IPv6 (`::ffff:1.2.3.4`) becomes IPv4. */
export function parseClientIp(text: string): ClientIp {
  const parsed = ipaddr.process(text);
  const bytes = parsed.toByteArray();
  const address = parsed.toString();
  if (parsed.kind() === 'ipv4') {
    return {
      address,
      version: 4,
      prefix: address,
      travelNet: `${prefixOf(bytes, 3)}/24`,
      private: parsed.range() !== 'unicast',
      bytes,
    };
  }
  const net64 = `${prefixOf(bytes, 8)}/64`;
  return { address, version: 6, prefix: net64, travelNet: net64, private: parsed.range() !== 'unicast', bytes };
}
