import path from 'node:path';
import { z } from 'zod';
import { PURPOSE_CLASSES, PURPOSE_NAME, type DeclaredPurposeClass } from '../engine/purposes.js';
import type { LoadError } from '../engine/ruleset.js';

/** Enough for any product; a vocabulary larger than this is a generated list, not a policy. */
export const MAX_PURPOSES = 500;

export function isPurposesFile(name: string): boolean {
  return /^purposes\.ya?ml$/.test(path.basename(name));
}

const purposesFileSchema = z.strictObject({
  purposes: z
    .record(
      z
        .string()
        .regex(
          PURPOSE_NAME,
          'a purpose is a lowercase word such as login or change_password (what the decide API accepts)',
        ),
      z.enum(PURPOSE_CLASSES),
    )
    .refine((p) => Object.keys(p).length >= 1, 'declare at least one purpose')
    .refine((p) => Object.keys(p).length <= MAX_PURPOSES, `at most ${MAX_PURPOSES} purposes`),
});

/** purposes.yaml → name → class; errors are load errors, so a bad file rejects the whole ruleset. */
export function compilePurposes(
  file: string,
  content: unknown,
): { purposes: ReadonlyMap<string, DeclaredPurposeClass>; errors: LoadError[] } {
  const parsed = purposesFileSchema.safeParse(content);
  if (!parsed.success)
    return {
      purposes: new Map(),
      errors: parsed.error.issues.map((i) => ({
        file,
        reason: i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message,
      })),
    };
  return { purposes: new Map(Object.entries(parsed.data.purposes)), errors: [] };
}
