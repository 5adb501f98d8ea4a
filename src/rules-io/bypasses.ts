import ipaddr from 'ipaddr.js';
import { z } from 'zod';
import { RUNGS } from '../engine/ladder.js';
import type { BypassContext, CompiledBypass, LoadError } from '../engine/ruleset.js';
import { idText } from '../lib/id-text.js';

/** At most this far ahead: an exception that outlives a quarter is a policy change, not an exception. */
export const MAX_BYPASS_DAYS = 90;

const bypassSchema = z.strictObject({
  id: z
    .string()
    .regex(/^[a-z0-9]+(?:-[a-z0-9]+)*$/)
    .max(64),
  reason: z.string().min(5).max(300),
  owner: z.string().max(100).optional(),
  lowest: z.enum(RUNGS),
  expires: z.string().regex(/^\d{4}-\d{2}-\d{2}$/),
  match: z
    .strictObject({
      user: idText(128).optional(),
      device: idText(256).optional(),
      ip_prefix: z.string().max(64).optional(),
      asn: z.number().int().positive().optional(),
      country: z
        .string()
        .regex(/^[A-Z]{2}$/)
        .optional(),
    })
    .refine((m) => Object.keys(m).length > 0, 'match needs at least one of user, device, ip_prefix, asn, country'),
});

export const bypassFileSchema = z.strictObject({ bypasses: z.array(bypassSchema) });

export interface BypassIds {
  id(kind: 'user' | 'device', value: string): string;
}

/**
 * Compiles the bypass file: user and device are pseudonymised at load (the running service only
 * ever compares pseudonyms), CIDRs are parsed once; every listed condition must hold.
 */
export function compileBypasses(
  file: string,
  content: unknown,
  ids: BypassIds | undefined,
  now: number,
): { bypasses: CompiledBypass[]; errors: LoadError[] } {
  const parsed = bypassFileSchema.safeParse(content);
  if (!parsed.success)
    return {
      bypasses: [],
      errors: parsed.error.issues.map((i) => ({ file, reason: `${i.path.join('.')}: ${i.message}` })),
    };
  const errors: LoadError[] = [];
  const bypasses: CompiledBypass[] = [];
  for (const doc of parsed.data.bypasses) {
    const expiresAt = Date.parse(`${doc.expires}T23:59:59.999Z`);
    if (!Number.isFinite(expiresAt) || expiresAt > now + MAX_BYPASS_DAYS * 86_400_000) {
      errors.push({ file, rule: doc.id, reason: `expires must be a date at most ${MAX_BYPASS_DAYS} days ahead` });
      continue;
    }
    let cidr: [ipaddr.IPv4 | ipaddr.IPv6, number] | undefined;
    if (doc.match.ip_prefix) {
      try {
        cidr = ipaddr.parseCIDR(doc.match.ip_prefix);
      } catch {
        errors.push({ file, rule: doc.id, reason: `ip_prefix ${JSON.stringify(doc.match.ip_prefix)} is not a CIDR` });
        continue;
      }
    }
    const user = doc.match.user !== undefined && ids ? ids.id('user', doc.match.user) : doc.match.user;
    const device = doc.match.device !== undefined && ids ? ids.id('device', doc.match.device) : doc.match.device;
    const { asn, country } = doc.match;
    bypasses.push({
      id: doc.id,
      reason: doc.reason,
      lowest: doc.lowest,
      expiresAt,
      matches(context: BypassContext) {
        if (user !== undefined && context.user !== user) return false;
        if (device !== undefined && context.device !== device) return false;
        if (asn !== undefined && context.asn !== asn) return false;
        if (country !== undefined && context.country !== country) return false;
        if (cidr) {
          const address = ipaddr.fromByteArray([...context.ip]);
          if (address.kind() !== cidr[0].kind() || !address.match(cidr)) return false;
        }
        return true;
      },
    });
  }
  return { bypasses, errors };
}
