import type { z } from 'zod';
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
