import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * Redaction is the second line of defence: handlers log pseudonyms only. These paths catch
 * secrets and personal data if a future log call passes a request, headers or a body along.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers["x-signature"]',
  'req.headers["x-signature-v2"]',
  'req.headers["x-signature-simple"]',
  'headers.authorization',
  'headers["x-api-key"]',
  'body.portrait_image',
  'body.ip',
  'body.device_id',
  'portrait_image',
  'api_key',
  'apiKey',
  'token',
  'secret',
  'session_token',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'risk-engine' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
