import { readFileSync } from 'node:fs';

/** Users the decide servers trust before the run: one per body, so a 5 × 10 s run stays under the sign-in-burst rule (20 an hour per user). A larger body pool makes autocannon itself the bottleneck (it keeps a copy per connection). */
export const SEED_USERS = 4000;

export function seedIdentity(i: number): { user: string; device: string; ip: string } {
  return { user: `bench-user-${i}`, device: `bench-device-${i}`, ip: '89.160.20.112' };
}

const TOR = ['185.220.101.1', '185.220.100.240', '109.70.100.1', '171.25.193.25', '2a0b:f4c2::1'];

/** Real browser user agents from the ua-parser-js fixtures in data/. */
function userAgents(): string[] {
  const cases = JSON.parse(readFileSync('data/user-agents/ua-parser-js-1.0.41/browser-test.json', 'utf8')) as Array<{ ua: string; expect: { name: string } }>;
  return cases.filter((c) => ['Chrome', 'Firefox', 'Safari', 'Mobile Safari', 'Edge'].includes(c.expect.name) && c.ua.length < 400).map((c) => c.ua);
}

/**
 * Pre-built request bodies: 85% returning users on their verified device and IP (the SKIP path),
 * 10% the same users on a new device, 5% from Tor exits.
 */
export function trafficMix(count = 4000): string[] {
  const agents = userAgents();
  const bodies: string[] = [];
  for (let i = 0; i < count; i++) {
    const seed = seedIdentity(i % SEED_USERS);
    const roll = (i * 7919) % 100;
    const ua = roll < 85 ? 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36' : agents[i % agents.length]!;
    if (roll < 85) bodies.push(JSON.stringify({ user_id: seed.user, device_id: seed.device, ip: seed.ip, user_agent: ua }));
    else if (roll < 95) bodies.push(JSON.stringify({ user_id: seed.user, device_id: `new-device-${i}`, ip: seed.ip, user_agent: ua }));
    else bodies.push(JSON.stringify({ user_id: seed.user, device_id: `tor-device-${i}`, ip: TOR[i % TOR.length], user_agent: ua }));
  }
  return bodies;
}
