import { randomBytes, randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import type { StepUpRung } from '../engine/ladder.js';
import { asciiEscape, canonicalJson, hmacHex, simpleMessage } from './signature.js';
import { callbackProblem, type CallbackPolicy } from '../lib/callback-url.js';

/**
 * An offline Didit that speaks the contract of shared/reference/didit-api.md: session creation with
 * Didit's reuse rule, the decision endpoint, a hosted page with Approve / Decline / Abandon, and
 * `status.updated` webhooks signed with all three schemes. Tests script its faults.
 */
export interface SimulatorOptions {
  readonly apiKey: string;
  readonly webhookSecret: string;
  readonly workflows: Readonly<Record<StepUpRung, string>>;
  /** Where webhooks go (our /v1/webhooks/didit). */
  readonly webhookUrl?: string;
  /** Base of the hosted session URLs handed to users. */
  readonly publicBaseUrl: string;
  readonly clock?: () => number;
  /** Write non-ASCII as \uXXXX in webhook bodies, as Python's ensure_ascii does (Didit's default; false sends raw UTF-8). */
  readonly escapeNonAscii?: boolean;
  /** Delays between webhook delivery attempts (Didit: about 1 and 4 minutes). */
  readonly retryDelaysMs?: readonly number[];
  /** A workflow's session expiry (Didit's default: 7 days); an unfinished session is reused until then. */
  readonly sessionLifetimeMs?: number;
  /** Which callbacks it redirects to (default: https, or http to loopback); others get a page, not a redirect. */
  readonly callbackPolicy?: CallbackPolicy;
}

export interface SimulatorFaults {
  latencyMs?: number;
  status?: number;
  retryAfterS?: number;
  malformed?: boolean;
}

export interface SimSession {
  readonly sessionId: string;
  readonly sessionNumber: number;
  readonly token: string;
  readonly workflowId: string;
  readonly method: StepUpRung;
  vendorData: string | null;
  metadata: unknown;
  callback: string | null;
  status: string;
  readonly createdAt: number;
  readonly hasPortrait: boolean;
  /** The address the hosted flow was opened from: what Didit's IP analysis reports. */
  ip?: string;
}

export interface Simulator {
  readonly app: FastifyInstance;
  readonly sessions: Map<string, SimSession>;
  faults: SimulatorFaults;
  /** Where webhooks go; settable after start, once the receiver's port is known. */
  webhookUrl: string | undefined;
  /** Counts of create calls that reached the handler, for the cost tests. */
  readonly stats: { createCalls: number; created: number; reused: number; decisionCalls: number; deliveries: number };
  /** Opens the hosted link from an address (default 192.0.2.10): Not Started → In Progress, with its webhook (what Didit does). */
  start(sessionId: string, from?: FlowOrigin): Promise<number[]>;
  /** Moves a session to a status and delivers the webhook, as a user clicking would (from `from.ip`). */
  complete(
    sessionId: string,
    status: 'Approved' | 'Declined' | 'Abandoned' | 'In Review' | 'Expired',
    from?: FlowOrigin,
  ): Promise<number[]>;
  /** The exact bytes and headers a webhook for this session and status would carry. */
  webhookFor(sessionId: string, status: string, timestampS?: number): { body: string; headers: Record<string, string> };
}

/** Where the user runs the hosted flow; Didit's IP analysis reports the address. */
export interface FlowOrigin {
  readonly ip?: string;
}

/** The address a flow is run from when a test names none (TEST-NET-1: nobody's network). */
export const DEFAULT_FLOW_IP = '192.0.2.10';

const UNFINISHED = new Set(['Not Started', 'In Progress', 'Resubmitted', 'Awaiting User']);
const SEVEN_DAYS = 7 * 24 * 3600_000;
const UPDATABLE = new Set(['Approved', 'Declined', 'In Review', 'Kyc Expired', 'Abandoned', 'Resubmitted']);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAX_PORTRAIT_BYTES = 2 * 1024 * 1024;

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function createSimulator(options: SimulatorOptions): Simulator {
  const clock = options.clock ?? Date.now;
  const sessions = new Map<string, SimSession>();
  const byToken = new Map<string, string>();
  const methodOf = new Map<string, StepUpRung>(
    Object.entries(options.workflows).map(([m, id]) => [id, m as StepUpRung]),
  );
  let sessionNumber = 1000;
  const stats = { createCalls: 0, created: 0, reused: 0, decisionCalls: 0, deliveries: 0 };
  const app = Fastify({ logger: false, bodyLimit: 3 * 1024 * 1024, forceCloseConnections: true });
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_r, body, done) =>
    done(null, body),
  );

  const decisionOf = (s: SimSession) => {
    const finished = !UNFINISHED.has(s.status);
    const featureStatus =
      s.status === 'Approved' || s.status === 'Declined' || s.status === 'In Review' ? s.status : 'Not Finished';
    return {
      session_id: s.sessionId,
      session_number: s.sessionNumber,
      session_url: `${options.publicBaseUrl}/session/${s.token}`,
      status: s.status,
      workflow_id: s.workflowId,
      features: s.hasPortrait ? ['LIVENESS', 'FACE_MATCH', 'IP_ANALYSIS'] : ['LIVENESS', 'IP_ANALYSIS'],
      vendor_data: s.vendorData,
      metadata: s.metadata,
      callback: s.callback,
      // Floats Didit writes differently from JavaScript (1e-05, and 100.0 folded into 100), so the signing is exercised.
      liveness_checks: finished
        ? [
            {
              node_id: 'feature_liveness_1',
              method: s.method,
              status: featureStatus,
              score: s.status === 'Approved' ? 100.0 : 31.5,
              face_quality: 87.25,
              face_luminance: 0.00001,
              warnings: [],
            },
          ]
        : null,
      ip_analyses:
        finished && s.ip
          ? [
              {
                node_id: 'feature_ip_1',
                status: 'Approved',
                ip_address: s.ip,
                is_vpn_or_tor: false,
                is_data_center: false,
                warnings: [],
              },
            ]
          : null,
      face_matches:
        finished && s.hasPortrait
          ? [
              {
                node_id: 'feature_face_match_1',
                status: featureStatus,
                score: s.status === 'Approved' ? 91.37 : 42.18,
                warnings: [],
              },
            ]
          : null,
      created_at: new Date(s.createdAt).toISOString(),
    };
  };

  const webhookFor = (sessionId: string, status: string, timestampS = Math.floor(clock() / 1000)) => {
    const s = sessions.get(sessionId);
    if (!s) throw new Error(`no simulated session ${sessionId}`);
    const body: Record<string, unknown> = {
      event_id: randomUUID(),
      webhook_type: 'status.updated',
      timestamp: timestampS,
      created_at: timestampS,
      session_id: s.sessionId,
      status,
      workflow_id: s.workflowId,
      workflow_version: 1,
      environment: 'sandbox',
      ...(s.vendorData !== null ? { vendor_data: s.vendorData } : {}),
      ...(s.metadata !== undefined && s.metadata !== null ? { metadata: s.metadata } : {}),
      ...(['Approved', 'Declined', 'In Review', 'Abandoned'].includes(status)
        ? { decision: decisionOf({ ...s, status }) }
        : {}),
    };
    // Didit sends Python's ensure_ascii=True text and signs V2 over the unescaped form (its published fixtures).
    const canonical = canonicalJson(body);
    const raw = options.escapeNonAscii === false ? canonical : asciiEscape(canonical);
    return {
      body: raw,
      headers: {
        'content-type': 'application/json',
        'user-agent': 'DiditWebhook/2.0 +https://didit.me',
        'x-timestamp': String(timestampS),
        'x-signature': hmacHex(options.webhookSecret, Buffer.from(raw, 'utf8')),
        'x-signature-v2': hmacHex(options.webhookSecret, canonical),
        'x-signature-simple': hmacHex(options.webhookSecret, simpleMessage(body)),
      },
    };
  };

  const deliver = async (sessionId: string, status: string): Promise<number> => {
    const url = simulator.webhookUrl;
    if (!url) return 0;
    const delays = options.retryDelaysMs ?? [60_000, 240_000];
    let last = 0;
    for (let attempt = 0; attempt <= delays.length; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, delays[attempt - 1]));
      // Each attempt is re-signed with a fresh timestamp, as Didit's retries appear to be.
      const { body, headers } = webhookFor(sessionId, status);
      stats.deliveries += 1;
      try {
        const response = await fetch(url, {
          method: 'POST',
          headers,
          body,
          signal: AbortSignal.timeout(5000),
          redirect: 'manual',
        });
        last = response.status;
        await response.body?.cancel().catch(() => undefined);
        if (response.status < 500 && response.status !== 404) return last;
      } catch {
        last = 0;
      }
    }
    return last;
  };

  /**
   * Didit's session expiry, on the simulator's clock: past the workflow's lifetime an unopened
   * session is Expired and one left In Progress is Abandoned (both finished, so never reused again).
   */
  const expireStale = () => {
    const lifetime = options.sessionLifetimeMs ?? SEVEN_DAYS;
    for (const s of sessions.values()) {
      if (!UNFINISHED.has(s.status) || clock() - s.createdAt < lifetime) continue;
      s.status = s.status === 'Not Started' ? 'Expired' : 'Abandoned';
      void deliver(s.sessionId, s.status);
    }
  };

  /** The user opens the hosted link: Didit moves the session to In Progress and says so. */
  const start = async (sessionId: string, from: FlowOrigin = {}): Promise<number[]> => {
    const s = sessions.get(sessionId);
    if (!s) throw new Error(`no simulated session ${sessionId}`);
    // Didit's IP analysis reports where the flow was run; the latest visit is the one that finishes it.
    s.ip = from.ip ?? s.ip ?? DEFAULT_FLOW_IP;
    if (s.status !== 'Not Started') return [];
    s.status = 'In Progress';
    return [await deliver(sessionId, 'In Progress')];
  };

  const complete = async (
    sessionId: string,
    status: 'Approved' | 'Declined' | 'Abandoned' | 'In Review' | 'Expired',
    from: FlowOrigin = {},
  ) => {
    const s = sessions.get(sessionId);
    if (!s) throw new Error(`no simulated session ${sessionId}`);
    const codes = await start(sessionId, from);
    s.status = status;
    codes.push(await deliver(sessionId, status));
    return codes;
  };

  const simulator: Simulator = {
    app,
    sessions,
    faults: {},
    webhookUrl: options.webhookUrl,
    stats,
    complete,
    start,
    webhookFor,
  };

  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/v3/')) return;
    const faults = simulator.faults;
    if (faults.latencyMs) await new Promise((r) => setTimeout(r, faults.latencyMs));
    if (request.headers['x-api-key'] !== options.apiKey)
      return reply.status(403).send({ detail: 'You do not have permission to perform this action.' });
    if (faults.status === 429) {
      return reply
        .status(429)
        .headers({
          'retry-after': String(faults.retryAfterS ?? 30),
          'x-ratelimit-limit': '600',
          'x-ratelimit-remaining': '0',
          'x-ratelimit-reset': String(Math.floor(clock() / 1000) + (faults.retryAfterS ?? 30)),
        })
        .send({ detail: 'Session creation rate limit exceeded. You can make up to 600 requests per minute.' });
    }
    if (faults.status && faults.status >= 500)
      return reply
        .status(faults.status)
        .type('text/html')
        .send('<html><body>upstream error: internal trace id 42</body></html>');
    return undefined;
  });

  app.post('/v3/session/', async (request, reply) => {
    stats.createCalls += 1;
    if (simulator.faults.malformed) return reply.status(201).send({ session_id: 'not-a-uuid' });
    const body = (request.body ?? {}) as Record<string, unknown>;
    const workflowId = body.workflow_id;
    if (typeof workflowId !== 'string' || !UUID.test(workflowId) || !methodOf.has(workflowId))
      return reply.status(400).send({ workflow_id: 'Invalid workflow_id.' });
    const portrait = body.portrait_image;
    if (
      portrait !== undefined &&
      (typeof portrait !== 'string' || Buffer.from(portrait, 'base64').length > MAX_PORTRAIT_BYTES)
    ) {
      return reply.status(400).send({ portrait_image: ['Image size exceeds 2MB.'] });
    }
    const vendorData = typeof body.vendor_data === 'string' ? body.vendor_data : null;
    const callback = typeof body.callback === 'string' ? body.callback : null;
    // Didit's reuse rule: same workflow + vendor_data with an unfinished session → that session, 201,
    // for as long as the session lives (the workflow's expiry, 7 days by default).
    expireStale();
    const reusable =
      vendorData === null
        ? undefined
        : [...sessions.values()].find(
            (s) => s.workflowId === workflowId && s.vendorData === vendorData && UNFINISHED.has(s.status),
          );
    let session: SimSession;
    if (reusable) {
      reusable.metadata = body.metadata ?? null;
      reusable.callback = callback;
      session = reusable;
      stats.reused += 1;
    } else {
      session = {
        sessionId: randomUUID(),
        sessionNumber: ++sessionNumber,
        token: randomBytes(9).toString('base64url'),
        workflowId,
        method: methodOf.get(workflowId)!,
        vendorData,
        metadata: body.metadata ?? null,
        callback,
        status: 'Not Started',
        createdAt: clock(),
        hasPortrait: typeof portrait === 'string',
      };
      sessions.set(session.sessionId, session);
      byToken.set(session.token, session.sessionId);
      stats.created += 1;
    }
    return reply.status(201).send({
      session_id: session.sessionId,
      session_number: session.sessionNumber,
      session_token: session.token,
      url: `${options.publicBaseUrl}/session/${session.token}`,
      vendor_data: session.vendorData,
      metadata: session.metadata,
      status: session.status,
      workflow_id: session.workflowId,
      workflow_version: 1,
      callback: session.callback,
    });
  });

  app.get('/v3/session/:id/decision/', async (request, reply) => {
    stats.decisionCalls += 1;
    const { id } = request.params as { id: string };
    if (!UUID.test(id)) return reply.status(404).type('text/html').send('<h1>Not Found</h1>');
    expireStale();
    const session = sessions.get(id);
    if (!session) return reply.status(404).send({ detail: 'Not found.' });
    return decisionOf(session);
  });

  // Didit's update-status: only a finished (or resubmitted) session can be moved, so it cannot cancel
  // a step-up nobody finished; setting the status a session already has changes nothing.
  app.patch('/v3/session/:id/update-status/', async (request, reply) => {
    const { id } = request.params as { id: string };
    if (!UUID.test(id)) return reply.status(404).type('text/html').send('<h1>Not Found</h1>');
    const session = sessions.get(id);
    if (!session) return reply.status(404).send({ detail: 'Not found.' });
    const next = ((request.body ?? {}) as { new_status?: unknown }).new_status;
    if (next !== 'Approved' && next !== 'Declined' && next !== 'Resubmitted')
      return reply.status(400).send({ new_status: ['Invalid status.'] });
    if (!UPDATABLE.has(session.status))
      return reply.status(400).send({ detail: `Cannot change the status of a session in status ${session.status}.` });
    if (next === session.status) {
      if (next === 'Resubmitted')
        return reply.status(400).send({ detail: 'The new status is the same as the current status.' });
      return { session_id: session.sessionId };
    }
    session.status = next;
    await deliver(session.sessionId, next);
    return { session_id: session.sessionId };
  });

  app.get('/session/:token', async (request, reply) => {
    const id = byToken.get((request.params as { token: string }).token);
    const session = id ? sessions.get(id) : undefined;
    if (!session) return reply.status(404).type('text/html').send('<h1>Unknown session</h1>');
    expireStale();
    await start(session.sessionId, { ip: request.ip });
    const button = (action: string, label: string) =>
      `<form method="post" action="/session/${escapeHtml(session.token)}/${action}"><button type="submit">${label}</button></form>`;
    return reply
      .type('text/html')
      .send(`<!doctype html><html><head><meta charset="utf-8"><title>Didit simulator</title></head><body>
<h1>Didit simulator: ${escapeHtml(session.method)} liveness</h1>
<p>Session <code>${escapeHtml(session.sessionId)}</code>, status <strong>${escapeHtml(session.status)}</strong>.</p>
<p>Pretend you took the selfie, then choose the verdict Didit would send:</p>
${button('approve', 'Approve')}${button('decline', 'Decline')}${button('abandon', 'Abandon')}
</body></html>`);
  });

  app.post('/session/:token/:action', async (request, reply) => {
    const { token, action } = request.params as { token: string; action: string };
    const id = byToken.get(token);
    const verdict = ({ approve: 'Approved', decline: 'Declined', abandon: 'Abandoned' } as const)[action as 'approve'];
    if (!id || !verdict) return reply.status(404).type('text/html').send('<h1>Unknown session or action</h1>');
    const codes = await complete(id, verdict, { ip: request.ip });
    const session = sessions.get(id)!;
    // A second guard after the decide route's: whatever reached the session API directly (Didit's
    // API is reachable by anyone with the key), the browser is never sent to a refused callback.
    if (session.callback && !callbackProblem(session.callback, options.callbackPolicy ?? { allowLoopbackHttp: true })) {
      const target = new URL(session.callback);
      target.searchParams.set('verificationSessionId', id);
      target.searchParams.set('status', verdict);
      return reply.redirect(target.toString(), 303);
    }
    return reply
      .type('text/html')
      .send(
        `<!doctype html><html><body><h1>${verdict}</h1><p>Webhook delivered (HTTP ${codes.join(', ')}). Sign in again: the same device and network now skip the selfie.</p></body></html>`,
      );
  });

  return simulator;
}

/** Fresh credentials for an embedded simulator run. */
export function simulatorCredentials(): {
  apiKey: string;
  webhookSecret: string;
  workflows: Record<StepUpRung, string>;
} {
  return {
    apiKey: randomBytes(24).toString('base64url'),
    webhookSecret: randomBytes(32).toString('base64url'),
    workflows: { PASSIVE: randomUUID(), FLASHING: randomUUID(), ACTIVE_3D: randomUUID() },
  };
}
