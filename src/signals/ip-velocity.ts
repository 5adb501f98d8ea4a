import { growingLru } from '../lib/growing-lru.js';
import { pushWindow, timestamp } from '../lib/sliding-window.js';

/**
 * `velocity.ip_decides_1m`: decides from one address (any user) in about the last minute, this one
 * included. Answered synchronously on the decide path, with no store round trip of its own: the
 * address is not the user, so in a Redis Cluster its counter lives in another slot than the user's
 * history and could only be one more round trip.
 */
export interface IpVelocity {
  hit(ip: string, now: number): number;
  close(): void;
}

/** Exact, in this process: for the single-process memory-store deployment. */
export function localIpVelocity(maxAddresses = 100_000, cap = 10_000): IpVelocity {
  const windows = growingLru<string, number[]>(maxAddresses);
  return {
    hit(ip, now) {
      let times = windows.get(ip);
      if (!times) windows.set(ip, (times = []));
      return pushWindow(times, now, timestamp, 60_000, now, cap).length;
    },
    close() {},
  };
}
