import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { evaluate } from '../engine/evaluate.js';
import { isStepUp } from '../engine/ladder.js';
import { RiskError } from '../errors.js';
import { UserRateLimited } from '../store/store.js';
import { children, secondsSince, stageTimer, type Metrics } from '../metrics.js';
import type { RulesHolder } from '../rules-io/rules-holder.js';
import type { Enriched, Enricher, SignInRequest } from '../signals/enrich.js';
import { isValidClientIp } from '../signals/ip.js';
import type { StepUpService, Verification } from '../didit/step-up-types.js';
import type { Decision } from '../engine/evaluate.js';
import { idText } from '../lib/id-text.js';
import { parseBody } from './validation.js';
import { callbackProblem, MAX_CALLBACK_LENGTH, type CallbackPolicy } from '../lib/callback-url.js';
import { decideReply, doc, errorResponses } from './schemas.js';
import type { Mutable } from '../lib/mutable.js';
import type { EventSink } from '../events/events.js';

/** 2 MB of image is 2,796,204 base64 characters; the route's body limit leaves room for the rest. */
export const MAX_PORTRAIT_BASE64 = 2_796_204;
export const DECIDE_BODY_LIMIT = 2_900_000;

const attributeKey = z
  .string()
  .regex(/^[a-z][a-z0-9_]{0,63}$/, 'attribute names are snake_case, at most 64 characters');

export const decideBodySchema = z.strictObject({
  user_id: idText(128),
  device_id: idText(256),
  ip: z
    .string()
    .max(45)
    .refine(isValidClientIp, 'not an IPv4 or IPv6 address')
    .meta({
      anyOf: [{ format: 'ipv4' }, { format: 'ipv6' }],
      description: 'The client IP (IPv4-mapped IPv6 is treated as IPv4; no zone ids)',
    }),
  user_agent: z.string().max(8192).optional(),
  purpose: z
    .string()
    .regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'purpose is a lowercase word such as login or change_password')
    .default('login'),
  portrait_image: z
    .string()
    .max(MAX_PORTRAIT_BASE64, 'portrait_image is larger than 2 MB')
    .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'portrait_image must be plain base64 (no data: prefix)')
    .optional(),
  callback: z.string().max(MAX_CALLBACK_LENGTH).optional().meta({
    description:
      'Where Didit sends the browser back: https only (http to loopback with the embedded simulator), and only CALLBACK_ALLOWED_ORIGINS when set',
  }),
  attributes: z
    .record(attributeKey, z.union([z.string().max(256), z.number().finite(), z.boolean()]))
    .refine((a) => Object.keys(a).length <= 32, 'at most 32 attributes')
    .optional(),
});

export type DecideBody = z.infer<typeof decideBodySchema>;

export interface DecideDeps {
  readonly rules: RulesHolder;
  readonly enrich: Enricher;
  readonly stepUp: StepUpService | undefined;
  readonly metrics: Metrics;
  readonly clock: () => number;
  /** The per-caller limiter (onRequest); the per-user limit is counted by the store in enrich. */
  readonly callerLimit?: unknown;
  /** What `callback` may be; without one, https to a public DNS name only. */
  readonly callbackPolicy?: CallbackPolicy;
  /** Each decision's log line, record and events: handed over, never awaited (not on the decide's critical path). */
  readonly decisions: Pick<EventSink, 'decided'>;
  /** Frees the decide's in-flight slot (lib/in-flight.ts) before the Didit call, which waits without CPU. */
  readonly leaveInFlight?: (request: FastifyRequest) => void;
}

const STRICT_CALLBACKS: CallbackPolicy = { allowLoopbackHttp: false };

/** What enrich reads from the body; built by assignment, as on every sign-in. */
function signInFrom(body: DecideBody): SignInRequest {
  const signIn: Mutable<SignInRequest> = {
    userId: body.user_id,
    deviceId: body.device_id,
    ip: body.ip,
    purpose: body.purpose,
  };
  if (body.user_agent !== undefined) signIn.userAgent = body.user_agent;
  if (body.attributes) signIn.attributes = body.attributes;
  return signIn;
}

/** The decision's counters: one per action, input degraded, rule fired and shadow disagreement. */
function countDecision(
  metrics: Metrics,
  decisions: (action: string) => { inc(): void },
  decision: Decision,
  seconds: number,
): void {
  decisions(decision.action).inc();
  metrics.decideDuration.observe(seconds);
  for (const input of decision.degraded) metrics.degraded.labels(input).inc();
  for (const r of decision.results) if (r.outcome === 'fired') metrics.ruleFired.labels(r.rule, r.mode).inc();
  for (const s of decision.shadow) metrics.shadow.labels(s.rule, decision.action, s.action).inc();
}

export function registerDecide(app: FastifyInstance, deps: DecideDeps): void {
  const stage = stageTimer(deps.metrics);
  const decisions = children((action) => deps.metrics.decisions.labels(action));
  const routeOptions = {
    bodyLimit: DECIDE_BODY_LIMIT,
    config: { scope: 'decide' as const },
    schema: {
      summary: 'Decide the step-up for one sign-in',
      body: doc(decideBodySchema),
      response: { 200: doc(decideReply), ...errorResponses(400, 401, 413, 415, 429, 503) },
    },
    ...(deps.callerLimit ? { onRequest: [deps.callerLimit as never] } : {}),
  };
  app.post('/v1/decide', routeOptions, async (request, reply) => {
    const started = process.hrtime.bigint();
    const body = parseBody(decideBodySchema, request.body);
    if (body.callback !== undefined) {
      const problem = callbackProblem(body.callback, deps.callbackPolicy ?? STRICT_CALLBACKS);
      if (problem) throw new RiskError('RISK_ERR_VALIDATION', problem, 'callback');
    }
    const ruleset = deps.rules.current();
    if (!ruleset) throw new RiskError('RISK_ERR_UNAVAILABLE', 'no ruleset is loaded');
    const now = deps.clock();
    const decisionId = randomUUID();

    let enriched: Enriched;
    try {
      enriched = await deps.enrich(signInFrom(body), now);
    } catch (error) {
      if (!(error instanceof UserRateLimited)) throw error;
      deps.metrics.rateLimited.labels('user').inc();
      void reply.header('retry-after', String(Math.max(1, Math.ceil(error.retryAfterMs / 1000))));
      throw new RiskError('RISK_ERR_RATE_LIMITED', 'rate limit exceeded for this user');
    }
    const evaluateStarted = process.hrtime.bigint();
    const decision = evaluate(ruleset, {
      signals: enriched.signals,
      degraded: enriched.degraded,
      now,
      bypass: enriched.bypass,
    });
    if (decision.bypass) deps.metrics.bypassUsed.labels(decision.bypass).inc();
    if (decision.purposeClass === 'undeclared') deps.metrics.undeclaredPurpose.inc();
    stage('evaluate', evaluateStarted);

    let verification: Verification = { status: 'not_needed' };
    if (isStepUp(decision.action) && deps.stepUp) {
      deps.leaveInFlight?.(request);
      const diditStarted = process.hrtime.bigint();
      verification = await deps.stepUp.open({
        decisionId,
        userId: body.user_id,
        method: decision.action,
        purpose: body.purpose,
        purposeClass: decision.purposeClass === 'normal' ? 'normal' : 'sensitive',
        ruleIds: decision.reasons.map((r) => r.rule),
        grant: enriched.grant,
        now,
        ...(body.callback ? { callback: body.callback } : {}),
        ...(body.portrait_image ? { portraitImage: body.portrait_image } : {}),
      });
      stage('didit', diditStarted);
    }

    const seconds = secondsSince(started);
    countDecision(deps.metrics, decisions, decision, seconds);
    const stepUp =
      verification.status === 'created' || verification.status === 'reused'
        ? { sessionId: verification.session_id, method: verification.method }
        : undefined;
    const signalsJson = JSON.stringify(enriched.signals);
    // Its log line and record (the journal, off the request path) and its events.
    deps.decisions.decided({
      decisionId,
      reqId: request.id,
      userId: body.user_id,
      purpose: body.purpose,
      enriched,
      decision,
      verification: verification.status,
      seconds,
      signalsJson,
      ...(stepUp ? { stepUp } : {}),
    });

    // Assembled around the signals' JSON, made once for this reply and the decision's line and record.
    const head = JSON.stringify({
      decision_id: decisionId,
      action: decision.action,
      score: decision.score,
      reasons: decision.reasons,
      shadow: decision.shadow,
      degraded: decision.degraded,
      ruleset: decision.ruleset,
    });
    const tail = JSON.stringify(
      verification.status === 'unavailable' ? { verification, fallback: 'backup_factor' } : { verification },
    );
    return reply
      .type('application/json; charset=utf-8')
      .send(`${head.slice(0, -1)},"signals":${signalsJson},${tail.slice(1)}`);
  });
}
