import { z } from 'zod';
import { RiskError } from '../errors.js';

/** zod → RiskError with the first offending field; the message never echoes the input value. */
export function parseBody<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.map(String).join('.') : undefined;
  const message =
    issue.code === 'unrecognized_keys'
      ? `unknown field(s): ${issue.keys.map((k) => k.slice(0, 64)).join(', ')}`
      : issue.message;
  throw new RiskError(
    'RISK_ERR_VALIDATION',
    message,
    issue.code === 'unrecognized_keys' ? issue.keys[0]?.slice(0, 64) : field,
  );
}

/**
 * An id as callers send it: 1 to `max` characters of well-formed UTF-16. A lone surrogate is encoded
 * as U+FFFD on its way into the HMAC, so ids differing only there (`a\ud800`, `a\udfff`, `a\ufffd`)
 * would share one pseudonym, and with it a history and its trusted devices.
 */
export const idText = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .refine((text) => !LONE_SURROGATE.test(text), 'ids must be well-formed Unicode (no lone surrogates)');

// With the u flag a surrogate pair is one code point, so only a lone half matches.
const LONE_SURROGATE = /\p{Surrogate}/u;
