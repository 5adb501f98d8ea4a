import type { FastifyInstance, FastifySchema } from 'fastify';
import type { WebhookHandler } from '../didit/webhook-handler.js';
import type { Metrics } from '../metrics.js';
import type { WebhookFailureLimit } from './rate-limit.js';
import { doc, errorResponses, webhookReply } from './schemas.js';

/**
 * Didit's deliveries for a liveness workflow are 2–5 KB (the simulator's Approved is about 1.5 KB);
 * 64 KiB leaves ten times that for reviewer notes and warnings, and caps what a junk sender makes us hash.
 */
export const WEBHOOK_BODY_LIMIT = 64 * 1024;

const header = (value: string | string[] | undefined): string | undefined => (Array.isArray(value) ? value[0] : value);

/** POST /v1/webhooks/didit: the raw-bytes parser is scoped to this plugin, so no other route sees Buffers. */
export function registerDiditWebhook(
  app: FastifyInstance,
  deps: { handle: WebhookHandler; metrics: Metrics; failures?: WebhookFailureLimit },
): void {
  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: WEBHOOK_BODY_LIMIT }, (_request, body, done) =>
      done(null, body),
    );
    const schema: FastifySchema = {
      summary: 'Didit webhook (HMAC-signed; no bearer token)',
      response: { 200: doc(webhookReply), ...errorResponses(400, 401, 413, 429, 503) },
    };
    scope.post(
      '/v1/webhooks/didit',
      { schema, bodyLimit: WEBHOOK_BODY_LIMIT, config: { public: true } },
      async (request, reply) => {
        const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
        const mayReparse = deps.failures?.mayReparse(request.ip) ?? true;
        const outcome = await deps.handle(
          raw,
          {
            'x-signature': header(request.headers['x-signature']),
            'x-signature-v2': header(request.headers['x-signature-v2']),
            'x-signature-simple': header(request.headers['x-signature-simple']),
            'x-timestamp': header(request.headers['x-timestamp']),
          },
          { allowReparse: mayReparse },
        );
        // Verified first, limited after: an authentic delivery is never refused for volume.
        const failed = outcome.httpStatus === 400 || outcome.httpStatus === 401;
        const retryAfterS = failed ? deps.failures?.failed(request.ip) : undefined;
        // A source that keeps failing waits for each answer: a sender that waits for them slows to a few a second.
        if (failed && !mayReparse && deps.failures?.tarpitMs)
          await new Promise((resolve) => setTimeout(resolve, deps.failures!.tarpitMs));
        deps.metrics.webhookEvents.labels(retryAfterS !== undefined ? 'rate_limited' : outcome.result).inc();
        request.log.info(
          {
            webhook: outcome.result,
            reason: outcome.reason,
            session_id: outcome.sessionId,
            didit_status: outcome.status,
            http: retryAfterS !== undefined ? 429 : outcome.httpStatus,
          },
          'didit webhook',
        );
        if (retryAfterS !== undefined) {
          return reply
            .status(429)
            .header('retry-after', String(retryAfterS))
            .send({ code: 'RISK_ERR_RATE_LIMITED', message: 'too many failed deliveries from this network' });
        }
        if (outcome.httpStatus === 401)
          return reply
            .status(401)
            .send({ code: 'RISK_ERR_BAD_SIGNATURE', message: 'signature or timestamp not accepted' });
        if (outcome.result === 'too_deep')
          return reply
            .status(400)
            .send({ code: 'RISK_ERR_BODY_TOO_DEEP', message: 'the body nests deeper than any Didit delivery' });
        if (outcome.httpStatus === 400)
          return reply.status(400).send({ code: 'RISK_ERR_MALFORMED_BODY', message: 'the body is not a JSON object' });
        if (outcome.httpStatus === 503)
          return reply
            .status(503)
            .header('retry-after', '30')
            .send({ code: 'RISK_ERR_UNAVAILABLE', message: 'temporarily unavailable; retry' });
        return reply.status(200).send({ received: true, result: outcome.result });
      },
    );
  });
}
