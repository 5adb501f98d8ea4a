import Fastify, {
  LogController,
  type FastifyHttpOptions,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import { isUtf8 } from 'node:buffer';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import swagger from '@fastify/swagger';
import underPressure from '@fastify/under-pressure';
import { ERROR_STATUS, RiskError, type ErrorBody, type ErrorCode } from './errors.js';
import type { Metrics } from './metrics.js';
import type { RulesHolder } from './rules-io/rules-holder.js';
import type { Enricher } from './signals/enrich.js';
import type { Store } from './store/store.js';
import type { Pseudonymiser } from './store/pseudonymise.js';
import type { StepUpService } from './didit/step-up-types.js';
import type { EventSink } from './events/events.js';
import type { WebhookHandler } from './didit/webhook-handler.js';
import type { RuleSandbox } from './rules-io/rule-sandbox.js';
import { registerCallerAuth, type ApiToken } from './routes/auth.js';
import { clientErrorHandler, refuseConnect } from './routes/client-errors.js';
import { registerDecide } from './routes/decide.js';
import { registerHealth, type ReadinessCheck } from './routes/health.js';
import {
  callerLimitHook,
  registerRateLimits,
  webhookFailureLimit,
  type RateLimitSettings,
} from './routes/rate-limit.js';
import { registerDiditWebhook } from './routes/didit-webhook.js';
import { registerSessions } from './routes/sessions.js';
import { registerUsers } from './routes/users.js';
import { registerEvaluate } from './routes/evaluate.js';
import { registerFeedback } from './routes/feedback.js';
import type { Effectiveness } from './events/effectiveness.js';
import type { CallbackPolicy } from './lib/callback-url.js';
import { limitInFlight, type InFlight } from './lib/in-flight.js';
import { shedLateInTurn } from './lib/loop-turn.js';
import {
  addressMatcher,
  CONNECTION_LIMITS,
  guardConnections,
  httpServerOptions,
  type ConnectionLimits,
} from './lib/connection-limits.js';

export interface AppDeps {
  readonly logger: Logger;
  readonly rules: RulesHolder;
  readonly enrich: Enricher;
  readonly store: Store;
  readonly ids: Pseudonymiser;
  readonly metrics: Metrics;
  readonly apiTokens: readonly ApiToken[];
  readonly clock?: () => number;
  readonly stepUp?: StepUpService;
  /** Outgoing events (EVENTS_URL): device revokes and erasures (the users routes). */
  readonly events?: Pick<EventSink, 'deviceRevoked'>;
  /** Where each decision goes: its log line and record (the journal) and its outgoing events. */
  readonly decisions: Pick<EventSink, 'decided'>;
  /** Labels for POST /v1/feedback (rule effectiveness). */
  readonly effectiveness?: Pick<Effectiveness, 'feedback'>;
  /** Applies Didit's signed verdicts (POST /v1/webhooks/didit). */
  readonly handleWebhook: WebhookHandler;
  /** Where a supplied ruleset is compiled for POST /v1/evaluate (a worker with a deadline). */
  readonly sandbox: RuleSandbox;
  readonly readiness?: readonly ReadinessCheck[];
  readonly embedded?: readonly string[];
  readonly callbackPolicy?: CallbackPolicy;
  /** Stale data sets, shown as /readyz warnings. */
  readonly staleData?: () => readonly string[];
  readonly trustProxy?: readonly string[];
  readonly rateLimits?: RateLimitSettings;
  /**
   * Shed load with 503 + Retry-After when the event loop lags this much (0 disables), and decides read
   * this far into a loop turn while turns run long (lib/loop-turn.ts; 0 or unset disables).
   */
  readonly pressure?: { maxEventLoopDelayMs: number; sampleIntervalMs: number; maxQueueDelayMs?: number };
  /** Shed decides with 503 + Retry-After beyond this many in flight (0 disables; lib/in-flight.ts). */
  readonly maxDecidesInFlight?: number;
  /** Socket caps and header/body deadlines (lib/connection-limits.ts); defaults apply where unset. */
  readonly connections?: Partial<ConnectionLimits>;
}

/** fastify's own error codes → our stable codes; anything unexpected becomes a generic 500. */
function mapError(error: unknown): { status: number; body: ErrorBody } {
  if (error instanceof RiskError) {
    return {
      status: error.statusCode,
      body: { code: error.code, message: error.message, ...(error.field ? { field: error.field } : {}) },
    };
  }
  const e = error as { code?: string; statusCode?: number; message?: string };
  const known: Record<string, [ErrorCode, string]> = {
    FST_ERR_CTP_BODY_TOO_LARGE: ['RISK_ERR_BODY_TOO_LARGE', 'request body is too large'],
    FST_ERR_CTP_INVALID_MEDIA_TYPE: ['RISK_ERR_UNSUPPORTED_MEDIA_TYPE', 'send application/json'],
    FST_ERR_CTP_INVALID_CONTENT_LENGTH: ['RISK_ERR_MALFORMED_BODY', 'content-length does not match the body'],
    FST_ERR_CTP_EMPTY_JSON_BODY: ['RISK_ERR_MALFORMED_BODY', 'the JSON body is empty'],
    FST_ERR_CTP_INVALID_JSON_BODY: ['RISK_ERR_MALFORMED_BODY', 'the body is not valid JSON'],
    FST_ERR_RATE_LIMITED: ['RISK_ERR_RATE_LIMITED', 'rate limit exceeded'],
    // Raised before routing (fastify's frameworkErrors): the URL is never echoed back.
    FST_ERR_BAD_URL: ['RISK_ERR_BAD_REQUEST', 'the URL is not valid (bad percent-encoding)'],
    FST_ERR_MAX_PARAM_LENGTH: ['RISK_ERR_URI_TOO_LONG', 'a path segment is too long'],
    FST_ERR_ASYNC_CONSTRAINT: ['RISK_ERR_BAD_REQUEST', 'the request could not be routed'],
  };
  const hit = e.code ? known[e.code] : undefined;
  if (hit) return { status: ERROR_STATUS[hit[0]], body: { code: hit[0], message: hit[1] } };
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    // JSON syntax errors and prototype-poisoning rejections arrive as plain 400s from the parser.
    if (e.statusCode === 429)
      return { status: 429, body: { code: 'RISK_ERR_RATE_LIMITED', message: 'rate limit exceeded' } };
    if (e.statusCode === 413)
      return { status: 413, body: { code: 'RISK_ERR_BODY_TOO_LARGE', message: 'request body is too large' } };
    if (e.statusCode === 415)
      return { status: 415, body: { code: 'RISK_ERR_UNSUPPORTED_MEDIA_TYPE', message: 'send application/json' } };
    if (e.statusCode === 404) return { status: 404, body: { code: 'RISK_ERR_NOT_FOUND', message: 'not found' } };
    return { status: 400, body: { code: 'RISK_ERR_MALFORMED_BODY', message: 'the body could not be parsed' } };
  }
  return { status: 500, body: { code: 'RISK_ERR_INTERNAL', message: 'internal error' } };
}

export const MAX_PARAM_LENGTH = 256;

/** Every route of the service, registered here from the one dependency object. */
export function buildApp(deps: AppDeps): FastifyInstance {
  const clock = deps.clock ?? Date.now;
  const connections: ConnectionLimits = { ...CONNECTION_LIMITS, ...deps.connections };
  const options: FastifyHttpOptions<Server> = {
    loggerInstance: deps.logger,
    // Per-request lines would carry socket addresses; the decision line is the one record per request.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 64 * 1024,
    requestTimeout: connections.requestTimeoutMs,
    connectionTimeout: 10_000,
    keepAliveTimeout: connections.keepAliveTimeoutMs,
    return503OnClosing: true,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    trustProxy: deps.trustProxy && deps.trustProxy.length > 0 ? [...deps.trustProxy] : false,
    genReqId: () => crypto.randomUUID(),
    // The router measures parameters decoded: 256 is decide's longest id (device_id), so any device
    // a decide has seen can be revoked by its raw id.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors: (error, _request, reply) => {
      const { status, body } = mapError(error);
      void (reply as FastifyReply).status(status).send(body);
    },
    clientErrorHandler,
    // Header deadline, and deadlines enforced each second rather than Node's default 30 s. Node would
    // answer a Host-less HTTP/1.1 request itself with an empty 400; the auth module refuses it in our shape.
    http: { ...httpServerOptions(connections), requireHostHeader: false },
  };
  const app = Fastify(options) as unknown as FastifyInstance;
  refuseConnect(app.server);
  // Every client of a trusted proxy shares its address: the per-source cap is not for them.
  guardConnections(app.server, connections, { exempt: addressMatcher(deps.trustProxy ?? []) });

  app.setErrorHandler((error, request, reply) => {
    const { status, body } = mapError(error);
    if (status >= 500)
      request.log.error(
        { err: { type: (error as Error)?.name, message: (error as Error)?.message } },
        'request failed',
      );
    return reply.status(status).send(body);
  });
  // JSON only: fastify's built-in text/plain parser would hand a string to routes documented as 415 for it.
  app.removeContentTypeParser('text/plain');
  // UTF-8 only: read as a string, every invalid byte would become U+FFFD first, and ids that differ
  // only there would share a pseudonym (a lone surrogate in a JSON escape is idText's to refuse).
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    if (!isUtf8(body as Buffer)) {
      done(new RiskError('RISK_ERR_MALFORMED_BODY', 'the body is not valid UTF-8'), undefined);
      return;
    }
    parseJson(request, (body as Buffer).toString('utf8'), done);
  });
  app.setNotFoundHandler((_request, reply) =>
    reply.status(404).send({ code: 'RISK_ERR_NOT_FOUND', message: 'not found' }),
  );

  // Route schemas document the API (OpenAPI at /docs/json); zod does the validating, so fastify's
  // own validation and serialisation are pass-through.
  app.setValidatorCompiler(() => (value: unknown) => ({ value }));
  app.setSerializerCompiler(() => (data: unknown) => JSON.stringify(data));
  void app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Step-up risk engine',
        version: '0.1.0',
        description: 'Decides SKIP / PASSIVE / FLASHING / ACTIVE_3D / DENY for a sign-in and drives Didit step-ups.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  // Callers treat 503 (or a timeout) as PASSIVE: shedding is a safe answer, a 5 s queue is not.
  const overloaded = (reply: FastifyReply) =>
    reply.status(503).send({ code: 'RISK_ERR_UNAVAILABLE', message: 'overloaded; retry or treat as PASSIVE' });
  const isDecide = (request: FastifyRequest) =>
    (request.routeOptions.config as { scope?: string } | undefined)?.scope === 'decide';
  if (deps.pressure?.maxQueueDelayMs && deps.pressure.maxQueueDelayMs > 0) {
    // The first onRequest hook: a decide shed here costs routing and a 503, not auth or the body.
    shedLateInTurn(app, {
      budgetMs: deps.pressure.maxQueueDelayMs,
      applies: isDecide,
      retryAfterS: 1,
      shed: (reply) => {
        deps.metrics.shed.labels('queue_delay').inc();
        return overloaded(reply);
      },
    });
  }
  // Auth first among the rest: its onRoute hook must see every route, this one included.
  registerCallerAuth(app, deps.apiTokens);
  app.get('/docs/json', { schema: { hide: true }, config: { public: true } }, async () => app.swagger());
  let inFlight: InFlight | undefined;
  if (deps.maxDecidesInFlight && deps.maxDecidesInFlight > 0) {
    // Registered before the routes' own onRequest hooks (auth, caller limit): a shed decide costs no work.
    inFlight = limitInFlight(app, {
      max: deps.maxDecidesInFlight,
      applies: isDecide,
      retryAfterS: 1,
      shed: (reply) => {
        deps.metrics.shed.labels('in_flight').inc();
        return overloaded(reply);
      },
    });
  }
  if (deps.pressure && deps.pressure.maxEventLoopDelayMs > 0) {
    void app.register(underPressure, {
      maxEventLoopDelay: deps.pressure.maxEventLoopDelayMs,
      sampleInterval: deps.pressure.sampleIntervalMs,
      retryAfter: 5,
      pressureHandler: (_request, reply) => {
        deps.metrics.shed.labels('event_loop').inc();
        void overloaded(reply.header('retry-after', '5'));
      },
    });
  }
  // Routes go in a child plugin registered after the limiter, so the limiter's onRoute hook sees them.
  const limits = deps.rateLimits;
  void app.register(async (scope) => {
    if (limits) await registerRateLimits(scope, limits);
    registerHealth(scope, {
      rules: deps.rules,
      store: deps.store,
      checks: deps.readiness ?? [],
      embedded: deps.embedded ?? [],
      ...(deps.staleData ? { staleData: deps.staleData } : {}),
    });
    registerDecide(scope, {
      rules: deps.rules,
      enrich: deps.enrich,
      stepUp: deps.stepUp,
      metrics: deps.metrics,
      clock,
      ...(deps.callbackPolicy ? { callbackPolicy: deps.callbackPolicy } : {}),
      decisions: deps.decisions,
      ...(inFlight ? { leaveInFlight: inFlight.release } : {}),
      ...(limits
        ? {
            callerLimit: callerLimitHook(limits.callerPerMinute, () => deps.metrics.rateLimited.labels('caller').inc()),
          }
        : {}),
    });
    registerDiditWebhook(scope, {
      handle: deps.handleWebhook,
      metrics: deps.metrics,
      ...(limits ? { failures: webhookFailureLimit(limits, clock) } : {}),
    });
    registerSessions(scope, { store: deps.store, ids: deps.ids, clock });
    registerUsers(scope, { store: deps.store, ids: deps.ids, clock, ...(deps.events ? { events: deps.events } : {}) });
    registerEvaluate(scope, { rules: deps.rules, clock, sandbox: deps.sandbox });
    if (deps.effectiveness)
      registerFeedback(scope, { effectiveness: deps.effectiveness, sealNote: (note) => deps.ids.seal(note) });
  });
  return app;
}
