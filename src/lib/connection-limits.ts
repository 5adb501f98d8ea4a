import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * Slow clients and connection floods. Node checks header and request deadlines only every
 * `connectionsCheckingInterval` (30 s by default), which is how a body trickled one byte every
 * 2 s held a socket 85 s despite 10 s timeouts; and an http server takes any number of sockets.
 */
export interface ConnectionLimits {
  /** All open sockets; the next is dropped by Node (server.maxConnections). */
  readonly max: number;
  /** Open sockets per source (IPv4 address, IPv6 /64); the next is destroyed before any parsing. */
  readonly perAddress: number;
  /** The request line and headers must arrive within this. */
  readonly headersTimeoutMs: number;
  /** The whole request (headers and body) must arrive within this. */
  readonly requestTimeoutMs: number;
  /** An idle keep-alive socket is closed after this. */
  readonly keepAliveTimeoutMs: number;
  /** How often Node enforces the two deadlines above: their precision. */
  readonly checkIntervalMs: number;
}

export const CONNECTION_LIMITS: ConnectionLimits = {
  max: 4096,
  perAddress: 256,
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  checkIntervalMs: 1_000,
};

/** The http.createServer options that carry the deadlines (fastify passes `http` through). */
export function httpServerOptions(limits: ConnectionLimits): {
  headersTimeout: number;
  requestTimeout: number;
  connectionsCheckingInterval: number;
} {
  // Node requires headersTimeout ≤ requestTimeout.
  return {
    headersTimeout: Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs),
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: limits.checkIntervalMs,
  };
}

/** One key per source: an IPv4 address (also when IPv4-mapped), or the IPv6 /64 a host can vary within. */
export function sourceKey(remoteAddress: string | undefined): string {
  if (!remoteAddress) return '?';
  try {
    let address = ipaddr.parse(remoteAddress);
    if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress())
      address = (address as ipaddr.IPv6).toIPv4Address();
    if (address.kind() === 'ipv4') return address.toString();
    return `${(address as ipaddr.IPv6).parts
      .slice(0, 4)
      .map((p) => p.toString(16))
      .join(':')}::/64`;
  } catch {
    return remoteAddress;
  }
}

/** Sources never capped per address (the trusted proxies: every client arrives through them). */
export function addressMatcher(cidrs: readonly string[]): (remoteAddress: string | undefined) => boolean {
  const ranges = cidrs.map((entry) =>
    entry.includes('/')
      ? ipaddr.parseCIDR(entry)
      : ([ipaddr.parse(entry), ipaddr.parse(entry).kind() === 'ipv4' ? 32 : 128] as [
          ipaddr.IPv4 | ipaddr.IPv6,
          number,
        ]),
  );
  return (remoteAddress) => {
    if (!remoteAddress || ranges.length === 0) return false;
    try {
      let address = ipaddr.parse(remoteAddress);
      if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress())
        address = (address as ipaddr.IPv6).toIPv4Address();
      return ranges.some((range) => range[0].kind() === address.kind() && address.match(range));
    } catch {
      return false;
    }
  };
}

export interface ConnectionGuard {
  /** Open sockets per source, for tests. */
  open(remoteAddress: string): number;
}

/**
 * Caps sockets on the server: all of them (Node drops the excess) and per source, counted on the
 * socket, so a source cannot hold more than `perAddress` whatever it sends or does not send.
 * A refused socket is destroyed at once: no parser, no buffer, no timer.
 */
export function guardConnections(
  server: Server,
  limits: ConnectionLimits,
  options: {
    exempt?: (remoteAddress: string | undefined) => boolean;
    onRefused?: (reason: 'per_address') => void;
  } = {},
): ConnectionGuard {
  server.maxConnections = limits.max;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  const open = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    if (options.exempt?.(socket.remoteAddress)) return;
    const key = sourceKey(socket.remoteAddress);
    const count = (open.get(key) ?? 0) + 1;
    if (count > limits.perAddress) {
      options.onRefused?.('per_address');
      socket.destroy();
      return;
    }
    open.set(key, count);
    socket.once('close', () => {
      const left = (open.get(key) ?? 1) - 1;
      if (left <= 0) open.delete(key);
      else open.set(key, left);
    });
  });
  return { open: (remoteAddress) => open.get(sourceKey(remoteAddress)) ?? 0 };
}
