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

/**
 * Decision lines in this logger's own format (level, time, bindings, fields, msg), for the decision
 * journal, which writes a batch of them in one write and shares each decision's signals JSON with its
 * record. They bypass pino's serialisation and so its redaction: every field is a pseudonym, a rule id
 * or a signal (test/routes/decide.test.ts keeps raw ids out of them).
 */
export function decisionLines(logger: Logger) {
  const stream = (logger as unknown as Record<symbol, { write(chunk: string): void }>)[pino.symbols.streamSym]!;
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? '';
  const level = logger.levels.values.info;
  return {
    enabled: () => logger.isLevelEnabled('info'),
    line: (time: number, reqId: string, members: string) =>
      `{"level":${level},"time":"${new Date(time).toISOString()}"${bindings},"reqId":${JSON.stringify(reqId) ?? 'null'},${members}}\n`,
    write: (chunk: string) => stream.write(chunk),
  };
}
