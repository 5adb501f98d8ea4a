import { parseClientIp } from '../../src/signals/ip.js';
import type { Service } from '../../src/compose.js';

/** What an Approved step-up does, done directly through the store (the Didit tests do it for real). */
export async function trustDirectly(
  service: Service,
  input: { user: string; device: string; ip: string; country?: string; asn?: number },
  now: number,
  ttlMs = 90 * 86_400_000,
): Promise<void> {
  const ip = parseClientIp(input.ip);
  await service.store.trust(
    {
      user: service.ids.id('user', input.user),
      device: service.ids.id('device', input.device),
      ip: service.ids.id('ip', ip.address),
      prefix: service.ids.id('net', ip.prefix),
      ...(input.country ? { country: input.country } : {}),
      ...(input.asn ? { asn: input.asn } : {}),
      grantedBy: 'test-grant',
      ttlMs,
    },
    now,
  );
}
