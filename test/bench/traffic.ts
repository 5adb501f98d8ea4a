import { readFileSync } from 'node:fs';

/**
 * Users per round. Every round signs in its own users (the servers trust them all before the run),
 * so no user passes the sign-in-burst rule (20 decides an hour) and the 85% stay on the SKIP path:
 * 8,000 users take 160,000 decides a round before that can happen (the runner hands the pool out
 * round-robin across connections).
 */
export const USERS_PER_ROUND = 8000;

/**
 * Client addresses inside networks that the MaxMind test databases locate (city, coordinates, and
 * an ASN for some), so every lookup walks the tree to a record as it would on GeoLite2.
 */
function ipv4Pool(): string[] {
  const pool: string[] = [];
  const range = (a: number, b: number, c0: number, c1: number, d0 = 1, d1 = 254) => {
    for (let c = c0; c <= c1; c++) for (let d = d0; d <= d1; d++) pool.push(`${a}.${b}.${c}.${d}`);
  };
  range(202, 196, 224, 239); // PH
  range(214, 78, 120, 123); // US, AS721
  range(175, 16, 199, 199); // CN
  range(67, 43, 156, 156); // BT, AS35908
  range(89, 160, 20, 20, 129, 254); // SE, AS29518
  return pool;
}

const IPV4 = ipv4Pool();
const hex = (n: number) => n.toString(16);

/**
 * One address per user: 70% IPv4 (about 5,700 addresses shared across users, so each stays far
 * below the ip-burst rule's 120 decides a minute), 30% IPv6, each user in its own /64 in Japan.
 */
export function seedIdentity(i: number): { user: string; device: string; ip: string } {
  const ip = i % 10 < 7 ? IPV4[i % IPV4.length]! : `2001:218:${hex((i >> 16) & 0xffff)}:${hex(i & 0xffff)}::1`;
  return { user: `bench-user-${i}`, device: `bench-device-${i}`, ip };
}

const TOR = ['185.220.101.1', '185.220.100.240', '109.70.100.1', '171.25.193.25', '2a0b:f4c2::1'];
const KNOWN_DEVICE_UA =
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36';

/** Real browser user agents from the ua-parser-js fixtures in data/. */
function userAgents(): string[] {
  const cases = JSON.parse(readFileSync('data/user-agents/ua-parser-js-1.0.41/browser-test.json', 'utf8')) as Array<{
    ua: string;
    expect: { name: string };
  }>;
  return cases
    .filter(
      (c) => ['Chrome', 'Firefox', 'Safari', 'Mobile Safari', 'Edge'].includes(c.expect.name) && c.ua.length < 400,
    )
    .map((c) => c.ua);
}

/**
 * Pre-built request bodies for one round (its own users): 85% returning users on their verified
 * device and address (the SKIP path), 10% the same users on a new device, 5% from Tor exits.
 */
export function trafficMix(round = 0, count = USERS_PER_ROUND): string[] {
  const agents = userAgents();
  const bodies: string[] = [];
  for (let n = 0; n < count; n++) {
    const i = round * USERS_PER_ROUND + (n % USERS_PER_ROUND);
    const seed = seedIdentity(i);
    const roll = (n * 7919) % 100;
    if (roll < 85)
      bodies.push(
        JSON.stringify({ user_id: seed.user, device_id: seed.device, ip: seed.ip, user_agent: KNOWN_DEVICE_UA }),
      );
    else if (roll < 95)
      bodies.push(
        JSON.stringify({
          user_id: seed.user,
          device_id: `new-device-${i}`,
          ip: seed.ip,
          user_agent: agents[n % agents.length]!,
        }),
      );
    else
      bodies.push(
        JSON.stringify({
          user_id: seed.user,
          device_id: `tor-device-${i}`,
          ip: TOR[n % TOR.length],
          user_agent: agents[n % agents.length]!,
        }),
      );
  }
  return bodies;
}
