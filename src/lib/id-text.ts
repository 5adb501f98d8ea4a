import { z } from 'zod';

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
